"""A second PKCS#11 implementation for the tests: NSS softokn, reached through p11-kit-proxy.

softokn cannot be loaded directly (python-pkcs11 always calls C_Initialize(NULL), and softokn needs
its database directory in the initialisation arguments), so p11-kit-proxy loads it from a module
file whose `x-init-reserved` names a private NSS database. The module file goes under
$HOME/.config/pkcs11/modules of a throwaway HOME, never /etc; that file also turns off, for the proxy,
the modules Debian's packages register system-wide (SoftHSM, OpenSC), so the proxy offers softokn's
two tokens only. p11-kit reads no user configuration in a process running as root ("skipping user
config in program running as root"): as root, the commands run in a user namespace where they are
uid 1000 (`unshare --user --map-user=1000`), which is still root's uid outside, so files stay root's.

Debian packages: libnss3 (softokn), libnss3-tools (certutil), p11-kit and p11-kit-modules
(p11-kit-proxy.so); scripts/bootstrap.sh installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
TOKEN = "NSS Certificate DB"  # softokn's fixed label for the token that keeps keys (the other is "NSS Generic Crypto Services")
SYSTEM_MODULES_OFF = ("softhsm2", "opensc-pkcs11", "p11-kit-trust")


def _library(name: str) -> str | None:
    return next((str(Path(d) / name) for d in LIBRARY_DIRS if (Path(d) / name).exists()), None)


PROXY = _library("p11-kit-proxy.so")
SOFTOKN = _library("libsoftokn3.so") or _library("nss/libsoftokn3.so")


def missing() -> str | None:
    """Why the suite cannot run here (None when it can)."""
    absent = [what for what, present in (("libsoftokn3.so (libnss3)", SOFTOKN), ("certutil (libnss3-tools)", shutil.which("certutil")),
                                          ("p11-kit-proxy.so (p11-kit-modules)", PROXY)) if not present]
    return f"NSS softokn suite needs Debian packages: {', '.join(absent)} missing (scripts/bootstrap.sh installs them)" if absent else None


@dataclass(frozen=True)
class NssToken:
    """One private NSS database behind p11-kit-proxy, with the password ("the vendor's PIN") it was made with."""

    directory: Path
    pin: str

    @property
    def home(self) -> Path:
        return self.directory / "home"

    @property
    def module(self) -> str:
        return PROXY

    @classmethod
    def create(cls, directory: Path, pin: str) -> "NssToken":
        database = directory / "nssdb"
        database.mkdir(parents=True)
        password = directory / "password.txt"
        password.write_text(pin + "\n")
        password.chmod(0o600)
        made = subprocess.run(["certutil", "-N", "-d", f"sql:{database}", "-f", str(password)], capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        modules = directory / "home" / ".config" / "pkcs11" / "modules"
        modules.mkdir(parents=True)
        (modules / "nss-softokn.module").write_text(
            f"module: {SOFTOKN}\n"
            f"x-init-reserved: configdir='sql:{database}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=optimizeSpace\n")
        for name in SYSTEM_MODULES_OFF:
            (modules / f"{name}.module").write_text("disable-in: p11-kit-proxy\n")
        return cls(directory, pin)

    def environment(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "SMKI_PKCS11_MODULE": PROXY, "NSS_VENDOR_PIN": self.pin,
                "PYTHONDONTWRITEBYTECODE": "1"}

    def run(self, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run argv with this database behind the proxy (as non-root when this process is root)."""
        prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *argv], capture_output=True, text=True, env={**self.environment(), **(env or {})}, timeout=900)
        assert not (prefix and result.stderr.startswith("unshare:")), (
            "as root, p11-kit reads no user module files, and this machine refused the user namespace that avoids it "
            f"(run the suite as a non-root user, or allow unprivileged user namespaces): {result.stderr.strip()}")
        return result

    def smki(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        result = self.run(sys.executable, "-m", "smki.cli.main", *args, env=env)
        if check:
            assert result.returncode == 0, f"smki {' '.join(args)} exited {result.returncode}: {result.stderr}"
        return result
