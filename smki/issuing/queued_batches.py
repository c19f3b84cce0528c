"""Batches submitted online: the upload made a checked ZIP, the processing of a claimed batch, and the answers.

`IssuingAuthority.submit_batch`, `process_batches` and `batch_result` call these; the life cycle and the
claim live in smki/store/batch_queue.py. A batch is processed through the same machinery as
`smki ca issue-batch` (`IssuingAuthority.issue_batch`): workers, one transaction per few tasks, and
resumability: the file processed is made from the stored upload the same way every time (the upload,
its ZIP comment naming the queued batch, so that two queued batches never share a digest), so a
processor that takes over a batch whose processor died resumes the same run and answers only what is left.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from smki.errors import BadInputError, ConflictError
from smki.policy.model import CertificatePolicy
from smki.requests.batch import SUFFIX, BatchRefused, BatchTooLarge, StoredZipWriter, open_batch
from smki.requests.outcomes import Outcome
from smki.store.batch_queue import QueuedBatch
from smki.store.batches import batch_outcomes

MAX_CLIENT_ID = 256  # SubmitCSRBatch's ID: 1-256 characters
MAX_REASON = 200


class UnknownBatch(BadInputError):
    """A BatchId this subscriber has no batch under (never made, another subscriber's, or purged): FM:AA3."""


class LeaseLost(ConflictError):
    """Another processor took the batch over (this one's lease ran out): stop working on it."""


def checked_text(value: str, what: str, longest: int) -> str:
    """A one-line, printable, non-empty value of at most `longest` characters (an ID, a reason)."""
    if not isinstance(value, str) or not 0 < len(value) <= longest or not value.isprintable():
        raise BadInputError(f"{what} is 1-{longest} printable characters on one line")
    return value


def upload_of(batch: bytes | Iterable[tuple[str, bytes]]) -> bytes:
    """The batch as the queue keeps it: a ZIP upload as given, or (ID, CSR DER) pairs as a ZIP of Base64 `ID.csr` entries."""
    if isinstance(batch, (bytes, bytearray, memoryview)):
        return bytes(batch)
    stream = io.BytesIO()
    writer = StoredZipWriter(stream)
    for csr_id, der in batch:
        writer.add(checked_text(csr_id, "a DeviceCSR ID", 100) + SUFFIX, base64.b64encode(der))
    writer.close()
    return stream.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def count_entries(upload: bytes, policy: CertificatePolicy) -> int:
    """Check the upload as a batch (every batch-level fault refused, as `smki ca issue-batch` refuses it) and
    count its entries; more than the policy's batch limit is the policy's refusal (4.2 batch_limit: FM:AA2)."""
    with _batch_file(upload) as path:
        try:
            return len(open_batch(path, policy.batch_limit).names)
        except BatchTooLarge as refusal:
            policy.check_batch_size(refusal.count)
            raise _without_path(refusal, path)
        except BatchRefused as refusal:
            raise _without_path(refusal, path) from None


UPLOAD_NAME = "the uploaded batch"


def _without_path(refusal: BatchRefused, path: Path) -> BatchRefused:
    """The refusal naming the upload, not the temporary file it was checked in: its text goes back to the submitter
    (ErrorText, the portal's page), who has no business knowing the service's file system."""
    refusal.args = tuple(str(arg).replace(str(path), UPLOAD_NAME) if isinstance(arg, str) else arg for arg in refusal.args)
    return refusal


@contextmanager
def _batch_file(data: bytes) -> Iterator[Path]:
    """`data` in a private temporary file, removed after the block."""
    directory = tempfile.mkdtemp(prefix="smki-queued-batch-")
    try:
        path = Path(directory) / "batch.zip"
        with open(path, "xb") as stream:
            stream.write(data)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


_END_OF_DIRECTORY = b"PK\x05\x06"
_END_LENGTH = 22  # the end-of-central-directory record, its comment length last


def processed_file_bytes(upload: bytes, number: int) -> bytes:
    """The file a queued batch is processed from: the upload, its ZIP comment naming the batch (the same bytes every
    time, and never another queued batch's). An upload without a comment (every ZIP made from a SubmitCSRBatch, and
    most others) gets it appended in place; one with a comment of its own is rewritten by zipfile."""
    comment = f"smki queued batch {number}".encode()
    end = upload[-_END_LENGTH:]
    if len(upload) >= _END_LENGTH and end[:4] == _END_OF_DIRECTORY and end[20:] == b"\x00\x00":
        return upload[:-2] + len(comment).to_bytes(2, "little") + comment
    stream = io.BytesIO(upload)
    try:
        with zipfile.ZipFile(stream, "a") as archive:
            archive.comment = comment
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BadInputError(f"queued batch {number}: its upload is no longer a ZIP ({type(exc).__name__})") from None
    return stream.getvalue()


@contextmanager
def processing_directory(upload: bytes, number: int) -> Iterator[tuple[Path, Path, str]]:
    """The batch's processed file in a private directory (with room for the response files), and its SHA-256 (the
    batch's identity, as `issue_batch` computes it from the file)."""
    directory = Path(tempfile.mkdtemp(prefix=f"smki-batch-{number}-"))
    try:
        data = processed_file_bytes(upload, number)
        path = directory / f"queued-batch-{number}.zip"
        with open(path, "xb") as stream:
            stream.write(data)
        yield directory, path, sha256_hex(data)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class CsrAnswer:
    """One request of a completed batch: its ID (the DeviceCSR ID, or the file name without .csr), status
    (success, error, anomaly, ineligible), outcome (None on success), code, detail and certificate DER."""

    csr_id: str
    status: str
    outcome: Outcome | None
    code: str
    detail: str | None
    certificate_der: bytes | None


@dataclass(frozen=True)
class BatchAnswer:
    """A batch as its subscriber sees it: the queued batch, and for a COMPLETED one its answers (streamed from the store)."""

    batch: QueuedBatch
    answers: tuple[CsrAnswer, ...] | None = None


def answers_of(connection, batch: QueuedBatch) -> tuple[CsrAnswer, ...]:
    """Every request's answer of a processed batch, in name order."""
    return tuple(CsrAnswer(outcome.name[:-len(SUFFIX)], outcome.status, Outcome.of_code(outcome.code), outcome.code, outcome.detail, der)
                 for outcome, der in batch_outcomes(connection, batch.batch_id))


def read_file(path: Path) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def worker_name() -> str:
    """This process, as a lease names its holder: host and process id."""
    return f"{os.uname().nodename}:{os.getpid()}"
