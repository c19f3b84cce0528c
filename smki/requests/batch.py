"""Batch intake: a ZIP (or a directory) of up to 50,000 `.csr` files.

What the ZIP's central directory says is the batch's: its faults refuse the whole batch before
anything is issued: not a ZIP, too many entries, an empty batch, nested or `..` paths, entries
that are not `.csr`, duplicate names, encrypted entries, a compression method other than stored
or deflated, declared sizes or ratios of a decompression bomb, and entries lying outside the file.
What an entry's own bytes hold is its request's: a bad CRC, a truncated or undecodable deflate
stream, a missing local header, or contents of another size than declared (reading stops at
the limit whatever the directory claimed) answer that request `FM:0001`, and the rest go on.
Entries are then streamed one at a time: a batch is never held in memory whole.
"""

from __future__ import annotations

import binascii
import contextlib
import csv
import hashlib
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from smki.errors import BadInputError
from smki.files import MAX_CSR_BYTES, new_file, refuse_existing, require_regular_file
from smki.requests.outcomes import Outcome, RequestRejected, describe_exception

MAX_ENTRY_SIZE = MAX_CSR_BYTES  # one CSR in Base64 is about 700 bytes; the limit of every CSR smki reads
MAX_COMPRESSION_RATIO = 100  # Base64 text compresses about 1.3:1; 100:1 is a bomb
# Deflate never needs much more than the entry's own size; more than this for a 16 KiB entry is a lying directory.
MAX_COMPRESSED_SIZE = 4 * MAX_ENTRY_SIZE
ACCEPTED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
SUFFIX = ".csr"


def response_name(request_name: str) -> str:
    """NAME.csr is answered by NAME.crt."""
    return request_name[: -len(SUFFIX)] + ".crt"


class BatchRefused(BadInputError):
    """A fault of the batch as a whole: nothing in it is issued."""


class BatchTooLarge(BatchRefused):
    """A batch of more entries than the limit (`count` of them)."""

    def __init__(self, message: str, count: int) -> None:
        self.count = count
        super().__init__(message)


@dataclass(frozen=True)
class BatchEntry:
    name: str  # the file name, from which the response's `.crt` name is made
    data: bytes
    fault: str | None = None  # why the entry's bytes cannot be read (a bad CRC, say); data is then empty

    @property
    def response_name(self) -> str:
        return response_name(self.name)

    def request_data(self) -> bytes:
        """The entry's bytes, or its fault as this request's refusal."""
        if self.fault is not None:
            raise RequestRejected(Outcome.NOT_DECODABLE, self.fault, self.name)
        return self.data


class _CorruptEntry(Exception):
    """An entry whose bytes are not what the central directory says: that request's fault."""


@dataclass(frozen=True)
class Batch:
    """A checked batch: its entry names, its identity, and a way to stream its entries."""

    source: Path
    names: tuple[str, ...]
    batch_id: str  # SHA-256 of the batch file (or of the directory's names and contents)

    def entries(self) -> Iterator[BatchEntry]:
        return read_entries(self.source, self.names, self.batch_id)


# Worker processes read the entries they check straight from the batch (the main process only
# hands out names): one open archive per process, source and digest, kept for the process's life.
_open_archives: dict[tuple[Path, str | None], "_ArchiveReader"] = {}
_LOCAL_HEADER = struct.Struct("<4s22xHH")


class _ArchiveReader:
    """Reads members by their recorded offsets with one `pread` each: `zipfile.open` costs more per
    member than checking the request in it. `open_batch` let through only stored and deflated
    members of bounded declared sizes; everything zipfile would check on reading (the local header,
    the sizes, the end of the deflate stream, the CRC) is checked here, and a member that fails is
    that request's fault. With `expected_sha256` the file is first proved to be the one that was
    checked, and everything is read from that same open file, so a batch replaced after its check
    is never read in its place."""

    def __init__(self, source: Path, expected_sha256: str | None) -> None:
        self.source = source
        self.descriptor = _open_regular(source)
        try:
            if expected_sha256 is not None and _descriptor_sha256(self.descriptor) != expected_sha256:
                raise BatchRefused(f"{source}: the file changed after the batch was checked (its SHA-256 is no longer the batch's); nothing more is read")
            self.archive = zipfile.ZipFile(os.fdopen(os.dup(self.descriptor), "rb"))
        except BaseException:
            os.close(self.descriptor)
            raise

    def entry(self, name: str) -> BatchEntry:
        try:
            return BatchEntry(name, self._read(name))
        except _CorruptEntry as fault:
            return BatchEntry(name, b"", f"ZIP entry {fault}")

    def _read(self, name: str) -> bytes:
        info = self.archive.getinfo(name)
        header = os.pread(self.descriptor, _LOCAL_HEADER.size, info.header_offset)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise _CorruptEntry("has no local header where the directory says")
        _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        raw = os.pread(self.descriptor, info.compress_size, info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
        if len(raw) != info.compress_size:
            raise _CorruptEntry(f"is truncated ({len(raw)} of its {info.compress_size} bytes are in the file)")
        data = _inflate(raw) if info.compress_type == zipfile.ZIP_DEFLATED else raw
        if len(data) != info.file_size:
            raise _CorruptEntry(f"holds {len(data)}{'+' if len(data) > MAX_ENTRY_SIZE else ''} bytes, not the {info.file_size} its directory entry declares")
        if zlib.crc32(data) != info.CRC:
            raise _CorruptEntry("is corrupt (CRC mismatch)")
        return data


def _inflate(raw: bytes) -> bytes:
    """A member's deflate stream, inflated no further than one byte past the entry limit."""
    inflater = zlib.decompressobj(-15)
    try:
        data = inflater.decompress(raw, MAX_ENTRY_SIZE + 1)
    except zlib.error as exc:
        raise _CorruptEntry(f"is not valid deflate data ({exc})") from None
    if len(data) <= MAX_ENTRY_SIZE and not inflater.eof:
        raise _CorruptEntry("is truncated (its deflate stream does not end)")
    return data


def read_entries(source: Path, names: Iterable[str], batch_id: str | None = None) -> Iterator[BatchEntry]:
    """The named entries of a checked batch, each read with the size limit. With the batch's
    digest, a ZIP must still be the file that was checked (a directory is read as it is)."""
    source = Path(source)
    if source.is_dir():
        for name in names:
            yield BatchEntry(name, _read_limited_file(source / name))
        return
    reader = _open_archives.get((source, batch_id))
    if reader is None:
        reader = _open_archives[(source, batch_id)] = _ArchiveReader(source, batch_id)
    for name in names:
        yield reader.entry(name)


def _check_name(source: Path, name: str) -> None:
    # A plain file name: no separator of either kind (so no absolute path and no `..` step), not `.` or `..`.
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise BatchRefused(f"{source}: entry {name!r} has a path; a batch holds plain .csr file names only")
    if not name.endswith(SUFFIX) or name == SUFFIX:
        raise BatchRefused(f"{source}: entry {name!r} is not a .csr file")
    # Printable: a name becomes its request's ID in the answers (an XML attribute: "\x01" or U+FFFE there is no XML at
    # all), the status file and the portal's pages.
    if not name.isprintable():
        raise BatchRefused(f"{source}: entry {name!r} has a character a file name may not have (a control or unassigned one)")


def _check_count(source: Path, count: int, limit: int) -> None:
    if count == 0:
        raise BatchRefused(f"{source}: the batch is empty")
    if count > limit:
        raise BatchTooLarge(f"{source}: {count} entries, more than the batch limit of {limit}", count)


def _open_regular(path: Path) -> int:
    """A descriptor of a batch file or entry, which must be a regular file (checked on the descriptor):
    a device such as /dev/zero never ends, a FIFO can block forever. Refused as the whole batch's fault."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; it has no effect on regular files.
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BatchRefused(f"{path}: no such file") from None
    except OSError as exc:
        raise BatchRefused(f"{path}: cannot be opened ({exc.strerror})") from None
    try:
        require_regular_file(descriptor, path)
    except BadInputError as exc:
        os.close(descriptor)
        raise BatchRefused(str(exc)) from None
    return descriptor


def _read_limited_file(path: Path) -> bytes:
    with os.fdopen(_open_regular(path), "rb") as stream:
        data = stream.read(MAX_ENTRY_SIZE + 1)
    if len(data) > MAX_ENTRY_SIZE:
        raise BatchRefused(f"{path}: larger than {MAX_ENTRY_SIZE} bytes; not a CSR")
    return data


def _descriptor_sha256(descriptor: int) -> str:
    digest, offset = hashlib.sha256(), 0
    while block := os.pread(descriptor, 1 << 20, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def open_batch(source: Path, limit: int) -> Batch:
    """Check a batch ZIP or directory; refuse it whole on any batch-level fault."""
    source = Path(source)
    if source.is_dir():
        names = sorted(entry.name for entry in source.iterdir())
        _check_count(source, len(names), limit)
        digest = hashlib.sha256()
        for name in names:
            _check_name(source, name)
            digest.update(name.encode() + b"\0" + hashlib.sha256(_read_limited_file(source / name)).digest())
        return Batch(source, tuple(names), digest.hexdigest())
    # One open file for the directory and the digest: the names checked come from the very file the digest covers.
    descriptor = _open_regular(source)
    try:
        with zipfile.ZipFile(os.fdopen(os.dup(descriptor), "rb")) as archive:
            infos = archive.infolist()
        size = os.fstat(descriptor).st_size
        batch_id = _descriptor_sha256(descriptor)  # after the directory: a file that is no ZIP is refused before it is hashed
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, NotImplementedError) as exc:
        # zipfile reports a broken central directory in all of these (ValueError: a negative offset, a name that is not UTF-8).
        raise BatchRefused(f"{source}: not a ZIP file ({describe_exception(exc)})") from None
    finally:
        os.close(descriptor)
    _check_count(source, len(infos), limit)
    seen = set()
    for info in infos:
        _check_name(source, info.filename)
        if info.filename in seen:
            raise BatchRefused(f"{source}: entry {info.filename!r} appears twice")
        seen.add(info.filename)
        _check_directory_entry(source, info, size)
    return Batch(source, tuple(info.filename for info in infos), batch_id)


def _check_directory_entry(source: Path, info: zipfile.ZipInfo, size: int) -> None:
    """What the central directory says of one entry: how it is stored, how large it claims to be, where it lies."""
    if info.flag_bits & 0x1:
        raise BatchRefused(f"{source}: entry {info.filename} is encrypted")
    if info.compress_type not in ACCEPTED_COMPRESSION:
        raise BatchRefused(f"{source}: entry {info.filename} uses compression method {info.compress_type}; only "
                           f"{' and '.join(ACCEPTED_COMPRESSION.values())} are accepted")
    if info.file_size > MAX_ENTRY_SIZE:
        raise BatchRefused(f"{source}: entry {info.filename} declares {info.file_size} bytes, over {MAX_ENTRY_SIZE}")
    if info.file_size > MAX_COMPRESSION_RATIO * info.compress_size:
        raise BatchRefused(f"{source}: entry {info.filename} declares {info.file_size} bytes from {info.compress_size} (a zip bomb?)")
    if info.compress_size > MAX_COMPRESSED_SIZE:
        raise BatchRefused(f"{source}: entry {info.filename} declares {info.compress_size} compressed bytes for {info.file_size}, over {MAX_COMPRESSED_SIZE}")
    if info.header_offset < 0 or info.header_offset + _LOCAL_HEADER.size + info.compress_size > size:
        raise BatchRefused(f"{source}: entry {info.filename} lies outside the file (a truncated ZIP, or a wrong directory)")


STATUS_FIELDS = ("identifier", "file", "status", "code", "detail", "serial")


def _pem_certificate(der: bytes) -> bytes:
    # 48 octets are one 64-character Base64 line (RFC 7468), newline included by b2a_base64.
    return b"".join([b"-----BEGIN CERTIFICATE-----\n", *[binascii.b2a_base64(der[i:i + 48]) for i in range(0, len(der), 48)],
                     b"-----END CERTIFICATE-----\n"])


class StoredZipWriter:
    """A ZIP of stored (uncompressed) members written straight to a stream: the response of a
    50,000-certificate batch in a fraction of what `zipfile.writestr` costs per member. Plain
    ZIP (no ZIP64): refuses more than 65,535 members or 4 GiB, far beyond a batch's response."""

    _LOCAL = struct.Struct("<4sHHHHHIIIHH")
    _CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
    _END = struct.Struct("<4sHHHHIIH")
    # 2026-01-01 00:00 in MS-DOS form: members carry a fixed time, so the bytes depend only on the contents.
    _DOS_TIME, _DOS_DATE = 0, ((2026 - 1980) << 9) | (1 << 5) | 1

    def __init__(self, stream) -> None:
        self._stream, self._offset, self._central = stream, 0, []

    def add(self, name: str, data: bytes) -> None:
        encoded = name.encode("utf-8")
        crc = zlib.crc32(data)
        if len(self._central) >= 0xFFFF or self._offset + len(data) > 0xFFFFFFFF:
            raise BadInputError("the response would need ZIP64; a batch response never should")
        header = self._LOCAL.pack(b"PK\x03\x04", 20, 0x0800, 0, self._DOS_TIME, self._DOS_DATE, crc, len(data), len(data), len(encoded), 0)
        self._central.append(self._CENTRAL.pack(b"PK\x01\x02", 20, 20, 0x0800, 0, self._DOS_TIME, self._DOS_DATE, crc, len(data),
                                                len(data), len(encoded), 0, 0, 0, 0, 0o644 << 16, self._offset) + encoded)
        self._stream.write(header + encoded + data)
        self._offset += len(header) + len(encoded) + len(data)

    def close(self) -> None:
        directory = b"".join(self._central)
        self._stream.write(directory + self._END.pack(b"PK\x05\x06", 0, 0, len(self._central), len(self._central),
                                                       len(directory), self._offset, 0))


class BatchResponse:
    """The batch response, written while the batch runs: a ZIP of PEM `.crt` files named like the
    requests, and the per-request status records as CSV (identifier, file, status, code, detail,
    serial). Both are built in temporary files and appear whole, and only when the `with` block
    ends without error (after the caller has made every answer durable); otherwise neither does."""

    def __init__(self, response_zip: Path, status_csv: Path) -> None:
        refuse_existing(response_zip)
        refuse_existing(status_csv)
        self.paths = (response_zip, status_csv)
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BatchResponse":
        self._files = contextlib.ExitStack()
        zip_stream = self._files.enter_context(new_file(self.paths[0]))
        status_stream = self._files.enter_context(new_file(self.paths[1]))
        self._text = io.TextIOWrapper(status_stream, encoding="utf-8", newline="")
        self._status = csv.writer(self._text, lineterminator="\r\n")
        self._status.writerow(STATUS_FIELDS)
        # Stored, not deflated: PEM certificates shrink by a quarter at most, and compressing 50,000 costs seconds.
        self._archive = StoredZipWriter(zip_stream)
        return self

    def add(self, identifier: str | None, name: str, status: str, code: str, detail: str | None, serial: str | None,
            der: bytes | None) -> None:
        self._status.writerow((identifier or "", name, status, code, detail or "", serial or ""))
        self.counts[status] = self.counts.get(status, 0) + 1
        if der is not None:
            self._archive.add(response_name(name), _pem_certificate(der))

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self._archive.close()
            self._text.flush()
            self._text.detach()
        self._files.__exit__(kind, error, traceback)
