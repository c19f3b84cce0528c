"""Test harness: one real SoftHSM2 store per test run, in a temporary directory.

SOFTHSM2_CONF must be set before the PKCS#11 library is first loaded in a process, so it
is set in pytest_configure, before any test module imports smki.hsm. Subprocesses (the
`smki` CLI, spawned signing workers) inherit it through the environment.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# CI and developers keep shared/ beside the checkout; SMKI_FIXTURES overrides.
FIXTURES = Path(os.environ.get("SMKI_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dcc-test-pki"))
PIN_ENV = "SMKI_TEST_PIN"
SO_PIN_ENV = "SMKI_TEST_SO_PIN"
_store_dir: str | None = None


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


@dataclass(frozen=True)
class TestToken:
    label: str
    pin: str
    module: str

    def key_ref(self, label: str, key_id: bytes):
        from smki.hsm.config import KeyRef

        return KeyRef(self.label, label, key_id, self.module)


_token_numbers = itertools.count(1)
_key_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def hsm_token() -> TestToken:
    """A fresh SoftHSM token for this test run; its user PIN is in $SMKI_TEST_PIN."""
    from smki.hsm.config import default_module_path
    from smki.hsm.softhsm import init_token

    label = f"smki-test-{next(_token_numbers)}"
    init_token(label, os.environ[SO_PIN_ENV], os.environ[PIN_ENV])
    return TestToken(label, os.environ[PIN_ENV], default_module_path())


@pytest.fixture(scope="session")
def new_hsm_key(hsm_token):
    """Factory: generate a fresh P-256 key pair in the test token, return (KeyRef, Pkcs11Signer)."""
    from smki.hsm.keys import generate_p256_key_pair, public_key_of
    from smki.hsm.session import open_session
    from smki.hsm.signer import Pkcs11Signer

    def make(label: str | None = None):
        number = next(_key_numbers)
        label = label or f"key-{number}"
        key_id = number.to_bytes(2, "big")
        session = open_session(hsm_token.module, hsm_token.label, hsm_token.pin, rw=True)
        public_object, private_object = generate_p256_key_pair(session, label, key_id)
        return hsm_token.key_ref(label, key_id), Pkcs11Signer(private_object, public_key_of(public_object))

    return make


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
