"""Publishing the repository as static files any web server can serve.

    <dir>/certificates/<ISSUER-SKI>/<SERIAL>.cer   every lodged certificate (DER)
    <dir>/crl/<ISSUER-SKI>.crl                     each issuer's current CRL or ARL (DER): its highest lodged cRLNumber
    <dir>/index.json                               what is published (format smki-repository/1)

Publishing is atomic file by file: each file is written to a temporary file in its own
directory, flushed to disk and renamed over the old one (`os.replace`), so a reader opens
either the old complete file or the new complete file, never a part. The index is written
last, after the files it describes are durable. Only what was lodged is published, so a
refused CRL leaves the previously published one in place. Two publishers of one directory
take turns (an exclusive lock on the directory), and temporary files a crashed run left
behind are removed by the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from smki.audit.trail import AuditTrail
from smki.errors import BadInputError
from smki.files import fsync_directory, output_directory, read_input, replace_file
from smki.operations.audited import AuditedOperation
from smki.operations.names import Operation
from smki.store.database import transaction
from smki.store.lodged_crls import LodgedCrl, current_lodged_crls
from smki.store.repository import published_certificates

INDEX_NAME = "index.json"
INDEX_FORMAT = "smki-repository/1"
CERTIFICATES_DIR, CRL_DIR = "certificates", "crl"
TEMP_SUFFIX = ".publishing"  # temporary files: hidden (leading dot) and named so a later run can remove leftovers


@dataclass(frozen=True)
class Publication:
    directory: Path
    certificates: int
    crls: list[dict]
    files_written: int  # files whose bytes changed in this run (unchanged ones are left alone)
    index: dict = field(repr=False)

    def summary(self) -> dict:
        return {"directory": str(self.directory), "certificates": self.certificates, "crls": self.crls,
                "files_written": self.files_written}


def certificate_path(issuer_key_id: str, serial_hex: str) -> str:
    return f"{CERTIFICATES_DIR}/{issuer_key_id}/{serial_hex}.cer"


def crl_path(issuer_key_id: str) -> str:
    return f"{CRL_DIR}/{issuer_key_id}.crl"


def _replace(path: Path, data: bytes) -> None:
    # Leftovers are swept once per run under the publishing lock (_remove_leftovers), not once per file.
    replace_file(path, data, temporary_suffix=TEMP_SUFFIX, remove_stale=False)


def _publish_file(path: Path, data: bytes, touched: set[Path]) -> int:
    """Replace `path` unless it already holds exactly `data`; return 1 if written.

    Certificates never change once lodged, so most files are skipped; comparing bytes (not
    just existence) also repairs a file someone altered in the published directory.
    """
    try:
        if read_input(path, len(data)) == data:  # bounded: a longer file (or a link to a device) differs
            return 0
    except BadInputError:
        pass
    _replace(path, data)
    touched.add(path.parent)
    return 1


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One publisher at a time per directory (flock on the directory itself: no lock file to serve or leave behind)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _remove_leftovers(directory: Path) -> None:
    # Under the lock no other publisher is writing, so every temporary file here is a crashed run's.
    for leftover in directory.rglob(f".*{TEMP_SUFFIX}"):
        with suppress(FileNotFoundError):
            leftover.unlink()


def _publish_certificates(connection: sqlite3.Connection, directory: Path, touched: set[Path]) -> tuple[dict[str, int], int]:
    per_issuer: dict[str, int] = {}
    written = 0
    # Streamed from the cursor: the repository may hold millions of device certificates.
    for certificate in published_certificates(connection):
        written += _publish_file(directory / certificate_path(certificate.issuer_key_id, certificate.serial_hex), certificate.der, touched)
        per_issuer[certificate.issuer_key_id] = per_issuer.get(certificate.issuer_key_id, 0) + 1
    return per_issuer, written


def _crl_entry(crl: LodgedCrl) -> dict:
    return {"issuer_key_id": crl.issuer_key_id, "kind": crl.kind, "crl_number": crl.number, "this_update": crl.this_update,
            "next_update": crl.next_update, "sha256": crl.sha256, "size": len(crl.der), "path": crl_path(crl.issuer_key_id)}


def _publish_crls(connection: sqlite3.Connection, directory: Path, touched: set[Path]) -> tuple[list[dict], int]:
    entries, written = [], 0
    for crl in current_lodged_crls(connection):
        written += _publish_file(directory / crl_path(crl.issuer_key_id), bytes(crl.der), touched)
        entries.append(_crl_entry(crl))
    return entries, written


def _index(per_issuer: dict[str, int], crls: list[dict], now: datetime) -> dict:
    return {
        "format": INDEX_FORMAT,
        "published_at": now.isoformat(timespec="seconds"),
        "certificates": {"count": sum(per_issuer.values()), "by_issuer": per_issuer,
                         "path": certificate_path("<ISSUER-SKI>", "<SERIAL>")},
        "crls": crls,
    }


def publish_repository(connection: sqlite3.Connection, directory: Path, *, audit: AuditTrail | None = None,
                       actor: str = "librarian", now: datetime | None = None) -> Publication:
    """Publish every lodged certificate and each issuer's current CRL/ARL into `directory`, index last.

    With `audit`, the publication is one audited operation: recorded after the files are in place
    (publishing changes files, not the database, so there is no transaction to share), a failure
    recorded as refused.
    """
    if audit is None:
        return _publish(connection, Path(directory), now)
    with AuditedOperation(audit, actor, Operation.PUBLISH, {"directory": str(directory)}) as operation:
        publication = _publish(connection, Path(directory), now)
        with transaction(connection):
            audit.append(operation.success_entry(_audit_details(publication)))
    return publication


def _audit_details(publication: Publication) -> dict:
    return {"certificates": publication.certificates, "files_written": publication.files_written,
            "crls": [{k: c[k] for k in ("issuer_key_id", "kind", "crl_number", "sha256")} for c in publication.crls]}


def _publish(connection: sqlite3.Connection, directory: Path, now: datetime | None) -> Publication:
    output_directory(directory, "the publication directory").mkdir(parents=True, exist_ok=True)
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    touched: set[Path] = set()
    with _exclusive(directory):
        _remove_leftovers(directory)
        per_issuer, certificates_written = _publish_certificates(connection, directory, touched)
        crls, crls_written = _publish_crls(connection, directory, touched)
        for parent in sorted(touched):
            fsync_directory(parent)
        index = _index(per_issuer, crls, now)
        _replace(directory / INDEX_NAME, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
        fsync_directory(directory)
    return Publication(directory, index["certificates"]["count"], crls, certificates_written + crls_written + 1, index)
