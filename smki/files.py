"""Writing outputs: atomically, and never over an existing file.

A ceremony or issuance output that already exists is a sign of a repeated or confused
run; it is refused rather than replaced. Readers never see a half-written file.
"""

from __future__ import annotations

import os
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


@contextmanager
def new_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A stream to a temporary file beside `path`, linked into place on success if `path` is still free.

    On any error the temporary file is removed and `path` is untouched: no half-written output.
    """
    path = Path(path)
    refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically, never over an existing file."""
    with new_file(path, mode) as stream:
        stream.write(data)
