"""Test harness: one real SoftHSM2 store per test run, in a temporary directory.

SOFTHSM2_CONF must be set before the PKCS#11 library is first loaded in a process, so it
is set in pytest_configure, before any test module imports smki.hsm. Subprocesses (the
`smki` CLI, spawned signing workers) inherit it through the environment.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

# CI and developers keep shared/ beside the checkout; SMKI_FIXTURES overrides.
FIXTURES = Path(os.environ.get("SMKI_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dcc-test-pki"))
PIN_ENV = "SMKI_TEST_PIN"
SO_PIN_ENV = "SMKI_TEST_SO_PIN"
_store_dir: str | None = None

# smki.testing's fixtures (smki_pki, smki_token): from the installed `smki` pytest11 entry point, or
# registered here when this checkout is not the one installed (registering both would be refused).
pytest_plugins = [] if any(ep.value == "smki.testing.plugin" for ep in entry_points(group="pytest11")) else ["smki.testing.plugin"]


def pytest_configure(config: pytest.Config) -> None:
    global _store_dir
    _store_dir = tempfile.mkdtemp(prefix="smki-softhsm-")
    from smki.hsm.softhsm import write_softhsm_conf

    os.environ["SOFTHSM2_CONF"] = str(write_softhsm_conf(Path(_store_dir)))
    os.environ[PIN_ENV] = secrets.token_hex(8)
    os.environ[SO_PIN_ENV] = secrets.token_hex(8)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _store_dir:
        shutil.rmtree(_store_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def hsm_token():
    """A fresh SoftHSM token for this test run (smki.testing.TestToken); its user PIN is in $SMKI_TEST_PIN."""
    from smki.testing import SoftHsmStore

    return SoftHsmStore.for_process().shared_token(f"smki-test-{os.getpid()}", pin=os.environ[PIN_ENV], so_pin=os.environ[SO_PIN_ENV])


@pytest.fixture(scope="session")
def smki_token(hsm_token):
    """The kit's fixtures (smki_pki) use the suite's token: SoftHSM sees only the tokens made before it was loaded."""
    return hsm_token


@pytest.fixture(scope="session")
def smki_pki_2026(smki_token, tmp_path_factory):
    """A second test PKI (smki.testing), its CA certificates from 2026-01-01: for tests that sign certificates by hand
    from that fixed date (a leaf must lie inside its issuer's validity), and only read its states."""
    from datetime import datetime, timezone

    from smki.testing import TestPKI

    with TestPKI.create(tmp_path_factory.mktemp("smki-pki-2026"), token=smki_token,
                        not_before=datetime(2026, 1, 1, tzinfo=timezone.utc)) as pki:
        yield pki


@pytest.fixture(scope="session")
def new_hsm_key(hsm_token):
    """Factory: generate a fresh P-256 key pair in the test token, return (KeyRef, Pkcs11Signer)."""
    return hsm_token.new_signer


@pytest.fixture
def run_smki():
    """Run the real `smki` CLI in a subprocess; returns CompletedProcess (text)."""

    def run(*args: str, env: dict | None = None, input: str | None = None, cwd: Path | None = None, pass_fds=()):
        return subprocess.run(
            [sys.executable, "-m", "smki.cli.main", *args],
            capture_output=True, text=True, env={**os.environ, **(env or {})}, input=input, cwd=cwd,
            pass_fds=pass_fds, timeout=300,
        )

    return run


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"test fixtures not found at {FIXTURES}"
    return FIXTURES


def smki(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `smki` CLI in a subprocess (text); with check, it must exit 0."""
    result = subprocess.run([sys.executable, "-m", "smki.cli.main", *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert result.returncode == 0, (args, result.stderr)
    return result


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, input=input, timeout=60)
