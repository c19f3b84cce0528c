"""One process at a time in SoftHSM's file object store while it is read or rewritten.

SoftHSM 2.6's file store is not safe between processes: every C_Login rewrites the token's
object file (its PIN-count flags), and a process reading that file at the same moment
(C_Initialize, C_GetTokenInfo, C_Login) gets CKR_GENERAL_ERROR or
CKR_USER_PIN_NOT_INITIALIZED. Measured here: 19 of 160 workers failed to start when four
logged in at once (upstream SoftHSMv2 #757 reports the same). So smki's processes take an
exclusive `flock` on the SoftHSM configuration file, the one thing every process of a store
shares, around loading the module, logging in, finding keys and changing the token's
objects. Signing itself does not touch the store and takes no lock.

Other PKCS#11 modules (a real HSM) are made for concurrent clients: no lock is taken.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SOFTHSM_CONF_ENV = "SOFTHSM2_CONF"
SOFTHSM_DEFAULT_CONF = "/etc/softhsm/softhsm2.conf"
SOFTHSM = "libsofthsm2.so"  # stands for SoftHSM's module wherever it is installed (softhsm2-util runs)

_held = threading.local()  # depth of this thread's hold, so nested uses do not deadlock on flock
_softhsm_in_use = False  # set once this process has opened SoftHSM through open_session


def is_softhsm(module_path: str) -> bool:
    return "softhsm" in Path(module_path).name.lower()


def softhsm_conf_path() -> Path:
    return Path(os.environ.get(SOFTHSM_CONF_ENV) or SOFTHSM_DEFAULT_CONF)


@contextmanager
def token_store_lock(module_path: str | None = None) -> Iterator[None]:
    """Hold the store's lock for the block (re-entrant in one thread; a no-op for other modules).

    Without `module_path` (code that holds only a session) the lock is taken if this process
    has opened SoftHSM.
    """
    global _softhsm_in_use
    if module_path is not None and is_softhsm(module_path):
        _softhsm_in_use = True
    wanted = is_softhsm(module_path) if module_path is not None else _softhsm_in_use
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
