"""Reading inputs (bounded by kind) and writing outputs (atomically: never over an existing file, or replacing it whole).

Every file smki reads goes through `read_input`, with the limit for its kind: the size is
checked before anything is read, a device, FIFO or directory is refused (a share file that is
a symlink to /dev/zero would otherwise be read forever), and at most limit+1 bytes are read
(a file that grows after the check is still refused). YAML goes through `read_yaml`, the one
YAML loader: duplicate keys, keys that are lists or mappings and NUL characters refused, alias
expansion and nesting bounded.

A ceremony or issuance output that already exists is a sign of a repeated or confused
run; it is refused rather than replaced (WriteMode.NEW). A published file is replaced by a
rename (WriteMode.REPLACE). Either way readers never see a half-written file: `atomic_file` is
the one place that writes a temporary file, flushes it to disk and moves it into place.

An output is written to `.NAME.PID-XXXXXXXX.tmp` beside it, and its writer holds an exclusive
`flock` on that file until it is linked into place or removed. A writer killed outright
(`kill -9`) leaves the file behind but not the lock (the kernel drops it with the process), so
the next writer of NAME removes every such temporary that nobody holds: never one a live run is
still writing.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import re
import signal
import stat
import tempfile
import threading
import collections.abc
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from smki.errors import BadInputError, ConflictError

log = logging.getLogger(__name__)

KIB, MIB = 1024, 1024 * 1024
# Largest file accepted, by kind. Each is far above any genuine file of its kind and far
# below what would hurt a CA host.
MAX_CSR_BYTES = 16 * KIB  # an SMKI CSR is under 1 KiB
MAX_PUBLIC_KEY_BYTES = 16 * KIB  # a P-256 SubjectPublicKeyInfo is 91 bytes
MAX_CERTIFICATE_BYTES = 64 * KIB  # an SMKI certificate is under 1 KiB
MAX_CRL_BYTES = 64 * MIB  # a 1M-entry CRL is ~40 MB DER, ~54 MB PEM (benchmarks/bench_crl.py)
MAX_LINT_BYTES = MAX_CRL_BYTES  # `smki lint` and `verify` read CRLs and bundles of certificates alike
MAX_YAML_BYTES = 1 * MIB  # policy, ceremony and configuration files are a few KiB
MAX_SHARE_FILE_BYTES = 64 * KIB  # a custodian share file is under 1 KiB
MAX_AUDIT_EXPORT_BYTES = 1024 * MIB  # one JSON export of a whole trail
# Expanded nodes of one YAML document (aliases counted every time they are used): a policy
# file has a few hundred; an alias bomb has billions.
MAX_YAML_NODES = 100_000


def open_regular_file(path: Path) -> int:
    """A read-only descriptor of `path`, a regular file (or a symlink to one), or a one-line
    BadInputError naming it. The check is on the descriptor opened (not on whatever the path
    names later): a device such as /dev/zero has no end, and a FIFO can block forever.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it has no effect on regular files.
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
    try:
        require_regular_file(descriptor, path)
    except BadInputError:
        os.close(descriptor)
        raise
    return descriptor


def require_regular_file(descriptor: int, path: Path) -> None:
    """Refuse (one line naming `path`) an open descriptor that is not of a regular file."""
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        raise BadInputError(f"{path}: not a regular file ({_file_type(mode)})")


def read_input(path: Path, limit: int) -> bytes:
    """An input file's bytes, at most `limit` of them, or a one-line BadInputError naming the file.

    Only regular files (or symlinks to them) are read: the size of anything else is unknown.
    """
    path = Path(path)
    descriptor = open_regular_file(path)
    with os.fdopen(descriptor, "rb") as stream:
        info = os.fstat(descriptor)
        if info.st_size > limit:
            raise BadInputError(f"{path}: {info.st_size} bytes, over the {limit}-byte limit for this kind of file")
        try:
            data = stream.read(limit + 1)
        except OSError as exc:
            raise BadInputError(f"{path}: {exc.strerror}") from None
    if len(data) > limit:
        raise BadInputError(f"{path}: over the {limit}-byte limit for this kind of file (it grew while being read)")
    return data


def read_text_input(path: Path, limit: int) -> str:
    """An input file's text: UTF-8 (a binary or otherwise encoded file is one line naming the first bad byte)."""
    return _utf8(read_input(path, limit), path)


def _utf8(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})") from None


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


class YamlError(BadInputError):
    """A YAML file that cannot be read: `file:line: (file|yaml): what is wrong` (line 0: the file as a whole)."""

    def __init__(self, path: Path, line: int, part: str, problem: str) -> None:
        self.path, self.line, self.part, self.problem = path, line, part, problem
        super().__init__(f"{path}:{line}: {part}: {problem}")


@dataclass(frozen=True)
class YamlDocument:
    raw: bytes  # the file's bytes (for its digest)
    node: Any  # the composed node graph, for line numbers; None for an empty document
    data: Any


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: settings that appear nowhere in the file as written
                raise yaml.constructor.ConstructorError(None, None, "a merge key (<<) is not taken: write each setting out", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, collections.abc.Hashable):  # `? [a, b]`: a key no file of smki's has, and Python cannot hold
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice (first on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_scalar(self, node):
        value = super().construct_scalar(node)
        if isinstance(value, str) and "\x00" in value:  # written as "\0" or "\x00": no smki file holds one, and a path with one crashes the system call
            raise yaml.constructor.ConstructorError(None, None, "a value holds a NUL character", node.start_mark)
        return value


def read_yaml(path: Path, what: str = "YAML", limit: int = MAX_YAML_BYTES) -> YamlDocument:
    """The one YAML loader: a bounded, UTF-8, single-document file; duplicate keys refused; alias
    expansion bounded (an alias bomb is a few hundred bytes that expand to gigabytes)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise YamlError(path, 0, "(file)", f"{what} file not found")
    try:
        raw = read_input(path, limit)
    except BadInputError as exc:
        raise YamlError(path, 0, "(file)", str(exc).removeprefix(f"{path}: ")) from None
    return parse_yaml(raw, path)


def parse_yaml(raw: bytes, path: Path | str) -> YamlDocument:
    """`read_yaml`'s checks on bytes already read (a file shipped in the package); `path` names them in errors."""
    try:
        text = _utf8(raw, path)
    except BadInputError as exc:
        raise YamlError(path, 0, "(file)", str(exc).removeprefix(f"{path}: ")) from None
    loader = None
    try:
        loader = _StrictLoader(text)  # checks the characters first: a NUL or other control is refused here
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.composer.ComposerError as exc:
        if exc.problem_mark is not None and "single document" in str(exc.context):  # where the second one begins, not the first
            raise YamlError(path, exc.problem_mark.line + 1, "(yaml)", "a second YAML document begins here: the file holds one") from None
        raise _marked_error(path, exc) from None
    except yaml.MarkedYAMLError as exc:
        raise _marked_error(path, exc) from None
    except yaml.YAMLError as exc:
        raise YamlError(path, 0, "(yaml)", str(exc).splitlines()[0]) from None
    except RecursionError:
        raise YamlError(path, 0, "(yaml)", "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(raw, node, data)


def _marked_error(path: Path | str, exc: yaml.MarkedYAMLError) -> YamlError:
    mark = exc.context_mark or exc.problem_mark  # where the broken construct starts reads best
    return YamlError(path, mark.line + 1 if mark else 0, "(yaml)", str(exc.problem or exc.context))


def _check_expansion(root) -> None:
    """Refuse a node graph whose aliases expand past MAX_YAML_NODES, or that contains itself.

    Sizes are memoised per node, so the check costs one visit per distinct node however
    many times aliases repeat it."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it (recursive structure)", node.start_mark)
        in_progress.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else []
        total = 1 + sum(size(child) for child in children)
        in_progress.discard(key)
        if total > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"aliases expand to more than {MAX_YAML_NODES} nodes", node.start_mark)
        sizes[key] = total
        return total

    size(root)


def output_directory(path: Path | str, what: str) -> Path:
    """A directory that outputs go into: refused (exit 3) when something else already has its name (or the
    name is empty, or holds a NUL, which no file system takes)."""
    if not str(path).strip() or "\x00" in str(path):
        raise BadInputError(f"{what}: give a directory name (not empty, no NUL character)")
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise BadInputError(f"{what} {path} is not a directory")
    return path


def refuse_same_file(paths: dict[str, Path]) -> None:
    """Refused (exit 3) before anything is opened or issued when two of `paths` name one file:
    outputs written over each other (or over the input) would lose one of them after the work is done."""
    seen: dict[tuple, str] = {}
    for what, path in paths.items():
        identity = _file_identity(Path(path))
        if identity in seen:
            raise BadInputError(f"{seen[identity]} and {what} name the same file; give each its own")
        seen[identity] = what


def _file_identity(path: Path) -> tuple:
    """(device, inode) of an existing file (so links and hard links are the same), else its resolved path."""
    try:
        info = path.stat()
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def refuse_existing(path: Path) -> None:
    """Refused (exit 5) before anything is signed when `path` names anything at all: a file, a directory, or a
    symbolic link, dangling ones included (the final write never follows or replaces one, so a link found only
    then would come after the state was committed)."""
    if os.path.lexists(path):
        raise ConflictError(f"{path} already exists; not overwriting it")


_TEMPORARY_SUFFIX = ".tmp"


def _temporary_pattern(path: Path, suffix: str) -> re.Pattern:
    # mkstemp's random part: eight of [a-z0-9_].
    return re.compile(rf"\.{re.escape(path.name)}\.[0-9]+-[a-z0-9_]{{8}}{re.escape(suffix)}")


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


def remove_stale_temporaries(path: Path, suffix: str = _TEMPORARY_SUFFIX) -> list[Path]:
    """Remove the temporaries of `path` left by writers that died; return them. One a live writer holds is kept."""
    pattern, removed = _temporary_pattern(path, suffix), []
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


def _locked_temporary(path: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file beside `path`, open and locked. A cleaner may remove it in the moment
    between its creation and the lock; then the name no longer leads to it, and another is made."""
    while True:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=suffix)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if _same_file(descriptor, Path(temporary)):
            return descriptor, temporary
        os.close(descriptor)


class WriteMode(enum.Enum):
    """How an output reaches its name once it is complete on disk."""

    NEW = "new"  # linked into place: refused if the name exists (a repeated or confused run)
    REPLACE = "replace"  # renamed over whatever the name held: readers see the old file or the new, never a mix


@contextmanager
def atomic_file(path: Path, write_mode: WriteMode = WriteMode.NEW, *, mode: int = 0o644,
                temporary_suffix: str = _TEMPORARY_SUFFIX, remove_stale: bool = True) -> Iterator[BinaryIO]:
    """The one atomic writer: a stream to a locked temporary file beside `path`, flushed to disk
    and then linked (NEW) or renamed (REPLACE) into place when the block ends without error.

    On any error the temporary file is removed and `path` is untouched: no half-written output.
    Temporaries of `path` left by writers that died are removed first, unless the caller clears
    them itself (`remove_stale=False`: a publisher writing thousands of files into one directory
    sweeps it once per run, rather than scanning it once per file).
    """
    path = Path(path)
    if write_mode is WriteMode.NEW:
        refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if remove_stale:
        remove_stale_temporaries(path, temporary_suffix)
    descriptor, temporary = _locked_temporary(path, temporary_suffix)
    lock = os.dup(descriptor)  # the lock lives as long as this descriptor: past the stream's close, until the unlink
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        _move_into_place(temporary, path, write_mode)
    finally:
        with suppress(FileNotFoundError):  # a rename (REPLACE) took the name away already
            os.unlink(temporary)
        os.close(lock)


def _move_into_place(temporary: str, path: Path, write_mode: WriteMode) -> None:
    if write_mode is WriteMode.REPLACE:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # atomic, and fails if `path` appeared meanwhile
    except FileExistsError:
        raise ConflictError(f"{path} already exists; not overwriting it") from None


def new_file(path: Path, mode: int = 0o644):
    """A stream to a temporary file beside `path`, linked into place on success if `path` is still free."""
    return atomic_file(path, WriteMode.NEW, mode=mode)


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically, never over an existing file."""
    with atomic_file(path, WriteMode.NEW, mode=mode) as stream:
        stream.write(data)


@contextmanager
def interrupts_held(what: str) -> Iterator[None]:
    """Ctrl-C (SIGINT) held back while the block runs: for the step from committing a result to writing
    its outputs, which must not stop half-way (a root ceremony recorded as done whose custodian shares,
    the only way back to its token's PIN, were never all written). A Ctrl-C that comes meanwhile is
    reported as a warning once the block is done; the command then ends as it would have (its exit code
    says whether it succeeded). Outside the main thread, where signals cannot be handled, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)  # None: one not set from Python
        if caught:
            log.warning("Ctrl-C came while %s: held back until that was done", what)


def replace_file(path: Path, data: bytes, mode: int = 0o644, *, temporary_suffix: str = _TEMPORARY_SUFFIX,
                 remove_stale: bool = True) -> None:
    """Write `data` to `path` atomically, replacing what it held."""
    with atomic_file(path, WriteMode.REPLACE, mode=mode, temporary_suffix=temporary_suffix, remove_stale=remove_stale) as stream:
        stream.write(data)


def fsync_directory(directory: Path) -> None:
    """Flush a directory: a link or rename into it is durable only once its directory is flushed."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
