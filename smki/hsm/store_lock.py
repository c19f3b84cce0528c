"""One process at a time in SoftHSM's file object store while it is read or rewritten.

SoftHSM 2.6's file store is not safe between processes: every C_Login rewrites the token's
object file (its PIN-count flags), and a process reading that file at the same moment
(C_Initialize, C_GetTokenInfo, C_Login) gets CKR_GENERAL_ERROR or
CKR_USER_PIN_NOT_INITIALIZED. Measured here: 19 of 160 workers failed to start when four
logged in at once (upstream SoftHSMv2 #757 reports the same). So smki's processes take an
exclusive `flock` on the SoftHSM configuration file, the one thing every process of a store
shares, around loading the module, logging in, finding keys and changing the token's
objects. Signing itself does not touch the store and takes no lock.

Other PKCS#11 modules (a real HSM) are made for concurrent clients: no lock is taken for them.
Which is which is told by what the module says it is, not by its file name: SoftHSM reached
through p11-kit-proxy is still SoftHSM. `session.load_module` asks once per process and module
path, under the lock, and records the answer here (`remember_module`): SoftHSM when the library's
manufacturer or any of its slots' manufacturer is SoftHSM's. Why this is safe:

- until a module path is identified, the lock is taken (when $SOFTHSM2_CONF, or SoftHSM's default
  configuration, names a file: without one SoftHSM cannot start, so there is no store to guard).
  C_Initialize, the one call made before the answer is known, therefore always runs under it;
- the answer cannot change within a process: a module's slots are fixed when it is initialised,
  and smki initialises each module once per process (`session.load_module`); so a module found to
  be SoftHSM, or to front SoftHSM, keeps the lock for good, and one found not to never needs it;
- a wrong "not SoftHSM" would need a SoftHSM slot that does not report SoftHSM as its
  manufacturer, which SoftHSM 2 always does ("SoftHSM project").
"""

from __future__ import annotations

import enum
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SOFTHSM_CONF_ENV = "SOFTHSM2_CONF"
SOFTHSM_DEFAULT_CONF = "/etc/softhsm/softhsm2.conf"
SOFTHSM = "libsofthsm2.so"  # stands for SoftHSM itself wherever it is installed (softhsm2-util runs)
SOFTHSM_MANUFACTURERS = ("SoftHSM",)  # the library says "SoftHSM", its slots and tokens "SoftHSM project"


class ModuleKind(enum.Enum):
    """What a loaded PKCS#11 module is, as far as the store lock cares."""

    SOFTHSM = "SoftHSM, directly or behind a proxy"
    OTHER = "no SoftHSM slot"


_held = threading.local()  # depth of this thread's hold, so nested uses do not deadlock on flock
_kinds: dict[str, ModuleKind] = {SOFTHSM: ModuleKind.SOFTHSM}  # module path -> what it said it is (this process)
_softhsm_in_use = False  # set once this process has loaded a module that is (or fronts) SoftHSM


def is_softhsm_manufacturer(manufacturer: str) -> bool:
    return manufacturer.strip().startswith(SOFTHSM_MANUFACTURERS)


def remember_module(module_path: str, kind: ModuleKind) -> None:
    """Record what the module at `module_path` said it is (by `session.load_module`, under the lock)."""
    global _softhsm_in_use
    _kinds[module_path] = kind
    if kind is ModuleKind.SOFTHSM:
        _softhsm_in_use = True


def module_kind(module_path: str) -> ModuleKind | None:
    """What the module said it is, or None before this process has loaded it."""
    return _kinds.get(module_path)


def is_softhsm(module_path: str) -> bool:
    """Whether the module, as loaded by this process, is or fronts SoftHSM (False before it is loaded)."""
    return _kinds.get(module_path) is ModuleKind.SOFTHSM


def _lock_wanted(module_path: str | None) -> bool:
    if module_path is None:  # code that holds only a session: the lock if this process uses SoftHSM
        return _softhsm_in_use
    return _kinds.get(module_path, ModuleKind.SOFTHSM) is ModuleKind.SOFTHSM  # unknown yet: as if SoftHSM


def softhsm_conf_path() -> Path:
    return Path(os.environ.get(SOFTHSM_CONF_ENV) or SOFTHSM_DEFAULT_CONF)


@contextmanager
def token_store_lock(module_path: str | None = None) -> Iterator[None]:
    """Hold the store's lock for the block (re-entrant in one thread; a no-op for modules known not to be SoftHSM).

    Without `module_path` (code that holds only a session) the lock is taken if this process
    has loaded SoftHSM.
    """
    wanted = _lock_wanted(module_path)
    depth = getattr(_held, "depth", 0)
    if depth:  # this thread holds the lock already
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth = depth
        return
    conf = softhsm_conf_path()
    if not wanted or not conf.is_file():
        yield
        return
    descriptor = os.open(conf, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
    finally:
        os.close(descriptor)  # closing the descriptor releases the flock
