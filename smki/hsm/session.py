"""Opening PKCS#11 modules and tokens, one login per process.

python-pkcs11 loads one module per process and is not thread-safe against SoftHSM, and a
second C_Login on a token raises UserAlreadyLoggedIn. So each process keeps one library
and one logged-in session per token here; parallel work uses processes (see `pool`).

Every PIN given is checked, even once the token is logged in. Login state is per process
and token, so a second C_Login answers USER_ALREADY_LOGGED_IN without looking at the PIN:
the token checks only the first. The first PIN the token accepted is therefore kept here as a
salted digest (HMAC-SHA256 under a random per-login salt; never the PIN itself), and each
later PIN for that token must match it (constant-time comparison) or is refused exactly as
the token refuses a wrong PIN. A token has one user PIN, so matching the PIN it accepted is
being correct. (Asking the token again, from a fresh process, would also count the wrong
attempt against its retry limit, but costs a process and a library load per PIN; here a
mismatch is refused without reaching the token, and so does not count.)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from dataclasses import dataclass

import pkcs11
import pkcs11.exceptions as p11x

from smki.errors import HsmError
from smki.hsm.config import pkcs11_text, token_label_text, token_serial_text
from smki.hsm.store_lock import ModuleKind, is_softhsm_manufacturer, module_kind, remember_module, token_store_lock

log = logging.getLogger(__name__)

SOFTHSM_CONF_ENV = "SOFTHSM2_CONF"

_libraries: dict[str, pkcs11.lib] = {}
# SoftHSM reads $SOFTHSM2_CONF once, when its library is initialised: what it was then is the store
# this process uses for good, whatever the environment says later (see `loaded_configurations`).
_configurations: dict[str, str | None] = {}
# Sessions and logins are kept per token: (module, token label, the token's own serial number), whether
# the caller named the serial or not, so one token reached with and without --token-serial is one login.
_sessions: dict[tuple[str, str, str], "_OpenSession"] = {}
_logins: dict[tuple[str, str, str], "_PinDigest"] = {}  # the PIN each logged-in token accepted, as a digest
# (module, label, serial as given, maybe "") -> the token found for it, looked up once per process (until close_all)
_tokens: dict[tuple[str, str, str], pkcs11.Token] = {}
_opened: list[pkcs11.Session] = []  # every session opened, for close_all (a replaced one may hold the login)
_lock = threading.Lock()  # guards the caches only; a session is used from one thread


@dataclass
class _OpenSession:
    session: pkcs11.Session
    logged_in: bool
    rw: bool


@dataclass(frozen=True)
class _PinDigest:
    """A salted digest of a PIN the token accepted: enough to recognise it again, useless to recover it."""

    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, pin: str) -> "_PinDigest":
        salt = secrets.token_bytes(32)
        return cls(salt, _pin_digest(salt, pin))

    def matches(self, pin: str) -> bool:
        return hmac.compare_digest(self.digest, _pin_digest(self.salt, pin))


def _pin_digest(salt: bytes, pin: str) -> bytes:
    return hmac.new(salt, pin.encode(), hashlib.sha256).digest()


def load_module(module_path: str) -> pkcs11.lib:
    """Load (once per process) the PKCS#11 module at `module_path`."""
    pkcs11_text(module_path, "the PKCS#11 module path")
    with token_store_lock(module_path), _lock:  # C_Initialize reads every token of the store (the flock first, always)
        if module_path not in _libraries:
            try:
                library = pkcs11.lib(module_path)
                kind = _kind_of(library)
            except (p11x.PKCS11Error, OSError, RuntimeError) as exc:
                reason = str(exc).strip().splitlines()[-1].split(": ")[-1] if str(exc).strip() else type(exc).__name__
                raise HsmError(f"cannot load PKCS#11 module {module_path}: {reason} (is it a PKCS#11 library?)") from None
            _libraries[module_path] = library
            _configurations[module_path] = os.environ.get(SOFTHSM_CONF_ENV)
            remember_module(module_path, kind)  # from now on the store lock follows what the module is
            log.debug("loaded PKCS#11 module %s (%s)", module_path, kind.value)
        return _libraries[module_path]


def _kind_of(library: pkcs11.lib) -> ModuleKind:
    """SoftHSM when the library, or any slot it offers (a proxy such as p11-kit-proxy fronts several
    modules), says SoftHSM made it. Asked once, under the store lock (see store_lock's docstring)."""
    if is_softhsm_manufacturer(library.manufacturer_id):
        return ModuleKind.SOFTHSM
    if any(is_softhsm_manufacturer(slot.manufacturer_id) for slot in library.get_slots()):
        return ModuleKind.SOFTHSM
    return ModuleKind.OTHER


def module_is_softhsm(module_path: str) -> bool:
    """Whether the module is SoftHSM, or fronts it (loads the module to ask it)."""
    load_module(module_path)
    return module_kind(module_path) is ModuleKind.SOFTHSM


def loaded_configurations() -> dict[str, str | None]:
    """The PKCS#11 modules this process has loaded, each with the $SOFTHSM2_CONF it was loaded under
    (None when unset): a module keeps that store until the process ends."""
    with _lock:
        return dict(_configurations)


def token_labels(module_path: str) -> list[str]:
    """Labels of the initialised tokens the module offers."""
    library = load_module(module_path)
    with token_store_lock(module_path):
        return [token.label for token in library.get_tokens() if token.label]


def get_token(module_path: str, token_label: str, serial: str = "") -> pkcs11.Token:
    """The one token labelled `token_label` (and with serial number `serial`, when given)."""
    token_label_text(token_label)  # before the module sees it, and before a message repeats it
    token_serial_text(serial)
    library = load_module(module_path)
    try:
        with token_store_lock(module_path):
            matches = [token for token in library.get_tokens(token_label=token_label)
                       if not serial or token_serial_of(token) == serial]
    except p11x.PKCS11Error as exc:
        raise HsmError(f"cannot read token {token_label!r}: {type(exc).__name__}") from None
    which = f"token {token_label!r}" + (f" with serial {serial}" if serial else "")
    if not matches:
        known = ", ".join(token_labels(module_path)) or "none"
        raise HsmError(f"{which} not found in {module_path} (tokens: {known})") from None
    if len(matches) > 1:
        serials = ", ".join(sorted(token_serial_of(token) or "(none)" for token in matches))
        raise HsmError(f"{len(matches)} tokens match {which} (serials: {serials}); name one with --token-serial "
                       "or serial= in the key URI") from None
    return matches[0]


def token_serial_of(token: pkcs11.Token) -> str:
    """The token's serial number as text (CK_TOKEN_INFO.serialNumber, blank-padded)."""
    serial = token.serial
    return (serial.decode("ascii", errors="replace") if isinstance(serial, bytes) else str(serial)).strip()


def open_session(module_path: str, token_label: str, pin: str | None, *, rw: bool = False, serial: str = "") -> pkcs11.Session:
    """A logged-in session on the token, shared by every caller in this process.

    `pin=None` opens a public session (only public objects are visible). A PIN is checked
    by the token at the first login of the process, and against that login's digest after it
    (see the module's docstring); the PIN itself is never kept here.
    """
    token_label_text(token_label)
    token = _known_token(module_path, token_label, serial)
    key = (module_path, token_label, token_serial_of(token))
    with _lock:
        cached = _sessions.get(key)
        login = _logins.get(key)
    if pin is not None and login is not None and not login.matches(pin):
        raise HsmError(f"PIN incorrect for token {token_label!r}")
    if cached is not None and (pin is None or cached.logged_in) and (cached.rw or not rw):
        return cached.session
    with token_store_lock(module_path):  # C_Login rewrites the token's flags in SoftHSM's store
        session = _open_logged_in(token, token_label, pin, rw, pin_checked=login is not None)
    log.debug("opened a %s session on token %r%s", "read-write" if rw else "read-only", token_label, " (logged in)" if pin is not None else "")
    with _lock:
        _opened.append(session)
        _sessions[key] = _OpenSession(session, logged_in=pin is not None or bool(cached and cached.logged_in), rw=rw)
        if pin is not None and login is None:
            _logins[key] = _PinDigest.of(pin)  # the token has just accepted it
    return session


def _known_token(module_path: str, token_label: str, serial: str) -> pkcs11.Token:
    """The token the caller names, found once per process: its own serial keys the sessions and logins."""
    given = (module_path, token_label, serial)
    with _lock:
        token = _tokens.get(given)
    if token is None:
        token = get_token(module_path, token_label, serial)
        with _lock:
            _tokens[given] = token
    return token


def is_logged_in(module_path: str, token_label: str, serial: str = "") -> bool:
    """Whether this process has logged in to the token with a PIN (objects it keeps private are then visible)."""
    with _lock:
        token = _tokens.get((module_path, token_label, serial))
        return token is not None and (module_path, token_label, token_serial_of(token)) in _logins


def _open_logged_in(token: pkcs11.Token, token_label: str, pin: str | None, rw: bool, pin_checked: bool) -> pkcs11.Session:
    try:
        return token.open(user_pin=pin, rw=rw)
    except p11x.PinIncorrect:
        raise HsmError(f"PIN incorrect for token {token_label!r}") from None
    except p11x.PinLocked:
        raise HsmError(f"PIN locked on token {token_label!r}") from None
    except p11x.PinLenRange:
        raise HsmError(f"PIN has the wrong length for token {token_label!r}") from None
    except p11x.UserAlreadyLoggedIn:
        # Logged in by another session of this process: PKCS#11 login state is per
        # application and token, so a plain session already has the user's rights; but the
        # token did not look at this PIN, so it must already have matched the login's digest.
        if not pin_checked:
            raise HsmError(f"token {token_label!r} is already logged in by this process with a PIN not checked here; "
                           "refusing a PIN that cannot be checked") from None
        return token.open(rw=rw)
    except p11x.PKCS11Error as exc:
        raise HsmError(f"cannot open token {token_label!r}: {type(exc).__name__}") from None


def close_all() -> None:
    """Close every session this process opened (used by tests and long-lived workers)."""
    with _lock:
        sessions = list(_opened)  # the cached ones, and any a cache entry replaced
        _opened.clear()
        _sessions.clear()
        _tokens.clear()  # a token may be deleted and another made under its label (a failed root ceremony)
        _logins.clear()  # closing a logged-in session logs the process out: the next PIN goes to the token
    for session in sessions:
        try:
            session.close()
        except p11x.PKCS11Error:
            pass


def reload_module(module_path: str) -> None:
    """Finalize and initialise the module again (C_Finalize, C_Initialize), closing this process's sessions:
    SoftHSM reads its tokens at C_Initialize, so a token softhsm2-util created since is seen only after this."""
    close_all()
    with token_store_lock(module_path), _lock:
        library = _libraries.get(module_path)
        if library is None:
            return
        try:
            library.reinitialize()
        except p11x.PKCS11Error as exc:
            raise HsmError(f"cannot initialise PKCS#11 module {module_path} again: {type(exc).__name__}") from None
