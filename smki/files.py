"""Writing outputs: atomically, and never over an existing file.

A ceremony or issuance output that already exists is a sign of a repeated or confused
run; it is refused rather than replaced. Readers never see a half-written file.

An output is written to `.NAME.PID-XXXXXXXX.tmp` beside it, and its writer holds an exclusive
`flock` on that file until it is linked into place or removed. A writer killed outright
(`kill -9`) leaves the file behind but not the lock (the kernel drops it with the process), so
the next writer of NAME removes every such temporary that nobody holds: never one a live run is
still writing.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from smki.errors import BadInputError, ConflictError


def read_input(path: Path) -> bytes:
    """An input file's bytes, or a one-line BadInputError naming the file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None


def refuse_existing(path: Path) -> None:
    if Path(path).exists():
        raise ConflictError(f"{path} already exists; not overwriting it")


_TEMPORARY_SUFFIX = ".tmp"


def _temporary_pattern(path: Path) -> re.Pattern:
    # mkstemp's random part: eight of [a-z0-9_].
    return re.compile(rf"\.{re.escape(path.name)}\.[0-9]+-[a-z0-9_]{{8}}{re.escape(_TEMPORARY_SUFFIX)}")


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(descriptor: int, name: Path) -> bool:
    try:
        return os.stat(name, follow_symlinks=False).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of `path` left by writers that died; return them. One a live writer holds is kept."""
    pattern, removed = _temporary_pattern(path), []
    try:
        candidates = [entry for entry in os.scandir(path.parent) if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return removed
    for entry in candidates:
        try:
            descriptor = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile, or not ours to open
        try:
            if _try_lock(descriptor) and _same_file(descriptor, Path(entry.path)):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        finally:
            os.close(descriptor)
    return removed


def _locked_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path`, open and locked. A cleaner may remove it in the moment
    between its creation and the lock; then the name no longer leads to it, and another is made."""
    while True:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=_TEMPORARY_SUFFIX)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if _same_file(descriptor, Path(temporary)):
            return descriptor, temporary
        os.close(descriptor)


@contextmanager
def new_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A stream to a temporary file beside `path`, linked into place on success if `path` is still free.

    On any error the temporary file is removed and `path` is untouched: no half-written output.
    Temporaries of `path` left by writers that died are removed first.
    """
    path = Path(path)
    refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    descriptor, temporary = _locked_temporary(path)
    lock = os.dup(descriptor)  # the lock lives as long as this descriptor: past the stream's close, until the unlink
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.link(temporary, path)  # atomic, and fails if `path` appeared meanwhile
    except FileExistsError:
        raise ConflictError(f"{path} already exists; not overwriting it") from None
    finally:
        os.unlink(temporary)
        os.close(lock)


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically, never over an existing file."""
    with new_file(path, mode) as stream:
        stream.write(data)
