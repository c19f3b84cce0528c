"""A pool of signing processes, each with its own PKCS#11 library and session.

python-pkcs11 is not thread-safe against SoftHSM, and a forked child inherits a
half-usable library state, so workers are started with `spawn` and each logs in once.
The PIN reaches workers over the pool's pipe, never through argv or the environment, and the
workers get only the allowed environment (`child_env`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from smki.hsm.child_env import spawn_pool
from smki.hsm.config import KeyRef
from smki.hsm.signer import signer_for

_worker_signer = None
_worker_error: str | None = None


def _start_worker(key: KeyRef, pin: str) -> None:
    # An initializer that raises makes multiprocessing start a new worker, forever: keep the
    # error instead, and let the first chunk report it.
    global _worker_signer, _worker_error
    try:
        _worker_signer = signer_for(key, pin)
    except Exception as exc:  # noqa: BLE001 - reported by every chunk of this worker
        _worker_error = f"{type(exc).__name__}: {exc}"


def _sign_chunk(digests: list[bytes]) -> list[bytes]:
    if _worker_error is not None:
        from smki.errors import HsmError
        raise HsmError(f"a signing worker could not start: {_worker_error}")
    return [_worker_signer.sign_digest(digest) for digest in digests]


class SigningPool:
    """`with SigningPool(key, pin, workers=2) as pool: pool.sign_digests(digests)`."""

    def __init__(self, key: KeyRef, pin: str, workers: int, chunk_size: int = 256) -> None:
        self._key, self._pin, self.workers, self.chunk_size = key, pin, workers, chunk_size
        self._pool = None

    def __enter__(self) -> "SigningPool":
        self._pool = spawn_pool(self.workers, _start_worker, (self._key, self._pin))
        self._pin = ""  # the workers have it; this object no longer needs it
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.terminate() if exc_info[0] else self._pool.close()
        self._pool.join()

    def sign_digests(self, digests: Iterable[bytes]) -> Iterator[bytes]:
        """Signatures (verified DER) in the order of the digests."""
        chunks = _chunked(digests, self.chunk_size)
        for signed in self._pool.imap(_sign_chunk, chunks):
            yield from signed

    def start_method(self) -> str:
        return self._pool._ctx.get_start_method()


def _chunked(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
