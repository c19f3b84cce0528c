"""A private SoftHSM token for tests: a store (configuration and token directory) and a token in it.

SoftHSM reads `$SOFTHSM2_CONF` once, when the PKCS#11 library is first loaded in a process; from
then on the process sees that store only. So which store a test PKI uses is decided here, the same
way whatever was imported first:

- the store the loaded library was loaded under, if it has been loaded (recorded by
  `smki.hsm.session`, not guessed from the environment, which may have changed since);
- else the store `$SOFTHSM2_CONF` names (a test harness set it up before anything loaded);
- else a new store for the rest of the process (in a temporary directory removed at exit, because the
  library cannot leave it before then), which `$SOFTHSM2_CONF` then names.

Asking for another store once the library is loaded is refused with an `HsmError` that says so:
never a token created in one store and looked for in another. Likewise SoftHSM sees only the
tokens that existed when its library was loaded, so a new token is refused once it is loaded;
`shared_token` gives every test PKI of a process the one token made before that.
"""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from smki.errors import HsmError
from smki.hsm.config import KeyRef, default_module_path
from smki.hsm.keys import generate_p256_key_pair, public_key_of
from smki.hsm.session import SOFTHSM_CONF_ENV, loaded_configurations, open_session
from smki.hsm.signer import Pkcs11Signer, signer_for
from smki.hsm.softhsm import init_token, write_softhsm_conf

CONF_NAME = "softhsm2.conf"  # what write_softhsm_conf names it
_token_numbers = itertools.count(1)
_shared_tokens: dict[Path, "TestToken"] = {}  # per store: the token every test PKI of this process uses


def _same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


@dataclass(frozen=True)
class SoftHsmStore:
    """A SoftHSM configuration file and the token directory it names."""

    __test__ = False  # not a pytest test class, wherever it is imported

    conf: Path
    module: str = field(default_factory=default_module_path)

    @classmethod
    def create(cls, directory: Path) -> "SoftHsmStore":
        """A new store in `directory` (its `tokens/` and `softhsm2.conf`); not yet the process's (see `activate`)."""
        return cls(write_softhsm_conf(Path(directory)))

    @classmethod
    def loaded(cls, module: str | None = None) -> "SoftHsmStore | None":
        """The store the PKCS#11 library was loaded under in this process, or None if it is not loaded."""
        module = module or default_module_path()
        configurations = loaded_configurations()
        if module not in configurations:
            return None
        conf = configurations[module]
        if conf is None:
            raise HsmError(f"the PKCS#11 library {module} was loaded in this process without ${SOFTHSM_CONF_ENV} "
                           "(the system's SoftHSM store): a test token is never made there; load it under a test store "
                           "(create the test PKI before anything opens the HSM, or run the tests in a fresh process)")
        return cls(Path(conf), module)

    @classmethod
    def for_process(cls, module: str | None = None) -> "SoftHsmStore":
        """The store this process uses (see the module's docstring); a new one if none is set."""
        module = module or default_module_path()
        store = cls.loaded(module)
        if store is None and os.environ.get(SOFTHSM_CONF_ENV):
            store = cls(Path(os.environ[SOFTHSM_CONF_ENV]), module)
        if store is None:
            directory = tempfile.mkdtemp(prefix="smki-softhsm-")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            store = cls.create(Path(directory))
        if not store.conf.is_file():
            if cls.loaded(module) is None:  # named by $SOFTHSM2_CONF, never loaded: a wrong name, not a lost store
                raise HsmError(f"${SOFTHSM_CONF_ENV} names {store.conf}, which is no file: set it to a SoftHSM "
                               "configuration, or unset it for a private store made for this process")
            raise HsmError(f"the SoftHSM configuration {store.conf} of this process is gone (was its directory removed?); "
                           "the PKCS#11 library cannot move to another store until the process ends")
        store.activate()
        return store

    def activate(self) -> None:
        """Make this the process's store ($SOFTHSM2_CONF, inherited by subprocesses such as the CLI).

        Refused when the library is already loaded under another store: SoftHSM would go on
        using that one, and a token made here would not be found."""
        loaded = loaded_configurations().get(self.module, False)
        if loaded is not False and (loaded is None or not _same_file(loaded, self.conf)):
            raise HsmError(f"the PKCS#11 library {self.module} is already loaded in this process with "
                           f"{SOFTHSM_CONF_ENV}={loaded or '(unset)'}; it cannot switch to {self.conf}. "
                           "Use that store (SoftHsmStore.for_process), or set up this one before the HSM is first opened")
        os.environ[SOFTHSM_CONF_ENV] = str(self.conf)

    def new_token(self, label: str | None = None, *, pin: str | None = None, so_pin: str | None = None) -> "TestToken":
        """A freshly initialised token in this store, with random PINs unless given.

        Refused once this process has loaded the PKCS#11 library: SoftHSM lists the tokens of its
        store when it is loaded, and would never find one made after (use `shared_token`)."""
        self.activate()  # the token must be made where the library will look for it
        if self.module in loaded_configurations():
            raise HsmError("SoftHSM was already loaded in this process and would not see a token made now: make the "
                           "token before the HSM is first opened, or use the process's token (SoftHsmStore.shared_token())")
        label = label or f"smki-test-{os.getpid()}-{next(_token_numbers)}"
        pin, so_pin = pin or secrets.token_hex(8), so_pin or secrets.token_hex(8)
        init_token(label, so_pin, pin)
        return TestToken(label, pin, self.module, so_pin=so_pin, store=self)

    def shared_token(self, label: str | None = None, *, pin: str | None = None, so_pin: str | None = None) -> "TestToken":
        """This process's token in this store: made (as `new_token`) by the first call, the same one after."""
        key = self.conf.resolve()
        if key not in _shared_tokens:
            _shared_tokens[key] = self.new_token(label, pin=pin, so_pin=so_pin)
        return _shared_tokens[key]


@dataclass(frozen=True)
class TestToken:
    """A SoftHSM token for tests, logged in with `pin` (a test secret: never use one for real keys)."""

    __test__ = False

    label: str
    pin: str
    module: str
    so_pin: str | None = field(default=None, repr=False)
    store: SoftHsmStore | None = None
    _key_numbers: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False, compare=False)

    def __repr__(self) -> str:  # never the PINs
        return f"TestToken(label={self.label!r}, module={self.module!r})"

    def key_ref(self, label: str, key_id: bytes) -> KeyRef:
        return KeyRef(self.label, label, key_id, self.module)

    def next_key_ref(self, label: str | None = None) -> KeyRef:
        """A reference for a key not yet on the token: its label (default key-N) and a CKA_ID no other key here has."""
        number = next(self._key_numbers)
        return self.key_ref(label or f"key-{number}", number.to_bytes(2, "big"))

    def new_key(self, label: str | None = None) -> tuple[KeyRef, ec.EllipticCurvePublicKey]:
        """Generate a P-256 key pair on the token (sign-only, not extractable); return its reference and public key.
        (An authority's key is made with smki.operations.keys.generate_key instead, audited in its state.)"""
        key = self.next_key_ref(label)
        session = open_session(self.module, self.label, self.pin, rw=True)
        public_object, _ = generate_p256_key_pair(session, key.key_label, key.key_id)
        return key, public_key_of(public_object)

    def new_signer(self, label: str | None = None) -> tuple[KeyRef, Pkcs11Signer]:
        """A new key pair on the token, with a signer for it."""
        key, _ = self.new_key(label)
        return key, self.signer(key)

    def signer(self, key: KeyRef) -> Pkcs11Signer:
        return signer_for(key, self.pin)
