"""The Certificate Librarian as one object: lodging, publishing, bulk files, search and the repository web service's answers.

Every front end (the `smki librarian` commands, the test kit, a user's own code) drives this one
object, so each check runs wherever the Librarian is used: a value is converted and refused where
it enters, each lodging and publication is one audited operation (smki.operations.audited), and a
refusal leaves the repository as it was.

    with Librarian("repository.db") as librarian:
        librarian.lodge(root_pem, trust_root=True)
        librarian.lodge_crl(Path("issuing.crl"))
        librarian.publish(Path("published"))
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.audit.trail import AuditTrail
from smki.errors import BadInputError, SmkiError
from smki.files import MAX_CERTIFICATE_BYTES, MAX_CRL_BYTES, output_directory, read_input
from smki.hsm.config import KeyRef
from smki.hsm.pins import PinSource
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.librarian import bulk
from smki.librarian.bulk import BulkFile
from smki.librarian.crl_lodging import CrlLodgement, crl_der_from_file, lodge_crl
from smki.librarian.lodging import AlreadyLodged, Lodgement, lodge_certificate
from smki.librarian.publishing import Publication, publish_repository
from smki.librarian.repository_service import RepositoryService
from smki.times import moment
from smki.operations.values import parsed, repository_status, serial_text
from smki.operations.audited import AuditedDatabase, one_checkpoint
from smki.profiles.files import load_certificate, read_certificate
from smki.profiles.pem import PemLabel, single_object
from smki.store.certificates import CertificateRecord, RepositoryStatus, find_certificate, list_certificates
from smki.store.database import open_database
from smki.store.lodged_crls import LodgedCrl, current_lodged_crls

log = logging.getLogger(__name__)

MAX_FIND_LIMIT = 100_000
API_KEY_PURPOSE = "repository API key"

CertificateInput = x509.Certificate | bytes | Path | str
CrlInput = x509.CertificateRevocationList | bytes | Path | str
_Outcome = TypeVar("_Outcome", Lodgement, CrlLodgement)


class Librarian(AuditedDatabase):
    """The Certificate Librarian over one repository database (an SQLite file or a postgresql:// URL).

    Opening does nothing: the database is opened by the first method that needs it (created only
    by `lodge`, as `smki librarian lodge` creates it), and the audit key's token by the first
    audited method. With `audit_key`, each lodging and publication ends with a signed checkpoint,
    and the token's head anchor is checked before the first one.

    One object per thread; any number of objects may share a state (see `smki.operations`).
    """

    def __init__(self, database: Path | str, *, actor: str = "librarian", audit_key: KeyRef | None = None,
                 audit_pin: PinSource | str | None = None) -> None:
        super().__init__(database, actor=actor, audit_key=audit_key, audit_pin=audit_pin)


    # -- lodging ------------------------------------------------------------------------------------

    def lodge(self, certificate: CertificateInput, *, trust_root: bool = False) -> Lodgement:
        """Check and lodge one certificate (PEM or DER bytes, a file, or a parsed certificate).

        It must chain by AKI -> SKI to a lodged certificate (a root only with `trust_root`) whose key
        verifies its signature: RefusedError otherwise; ConflictError for another certificate with a
        lodged issuer and serial. These very bytes lodged before are no refusal: the Lodgement says
        `already_lodged` (and the audit trail records the repetition as refused).
        """
        audit = self._audit(create=True)
        parsed, file = _certificate(certificate)
        try:
            serial = lodge_certificate(audit.connection, parsed, trust_root=trust_root, audit=audit, actor=self.actor)
        except AlreadyLodged as repeated:
            log.info("certificate %s%s: already lodged", repeated.summary["serial"], f" ({file})" if file else "")
            return Lodgement(repeated.summary["serial"], already_lodged=True, file=file)
        log.info("lodged certificate %s%s", serial, f" ({file})" if file else "")
        return Lodgement(serial, file=file)

    def lodge_many(self, items: Iterable[CertificateInput], *, trust_root: bool = False,
                   publish_to: Path | None = None) -> tuple[list[Lodgement], Publication | None]:
        """Lodge certificates in order (issuers first), stopping at the first refusal; what was lodged
        before it stays. With `publish_to`, then publish the repository whatever happened (see `_lodge_each`)."""
        return self._lodge_each(items, lambda item: self.lodge(item, trust_root=trust_root), publish_to, "lodge",
                                self._audit(create=True))

    def lodge_crl(self, crl: CrlInput) -> CrlLodgement:
        """Check and lodge one CRL or ARL (PEM or DER bytes, a file, or a parsed list).

        The issuer is the lodged CA certificate whose SKI is its AKI, and its key must verify it; it
        must lint clean, its cRLNumber exceed the last lodged from that issuer, its nextUpdate be in
        the future (RefusedError otherwise; BadInputError for bytes that are no CRL). These very bytes
        lodged before come back `already_lodged`. Lodged certificates it names get status R.
        """
        audit = self._audit()
        crl_der, file = _crl_der(crl)
        try:
            lodgement = lodge_crl(audit.connection, crl_der, audit=audit, actor=self.actor)
        except AlreadyLodged as repeated:
            lodgement = repeated.lodged
        lodged = lodgement.crl
        log.info("%s %s number %d of issuer %s%s: %d certificate(s) newly revoked", lodged.kind.upper(),
                 "already lodged" if lodgement.already_lodged else "lodged", lodged.number, lodged.issuer_key_id,
                 f" ({file})" if file else "", len(lodgement.newly_revoked))
        return dataclasses.replace(lodgement, file=file)

    def lodge_crls(self, items: Iterable[CrlInput], *,
                   publish_to: Path | None = None) -> tuple[list[CrlLodgement], Publication | None]:
        """`lodge_crl` for each list in order, stopping at the first refusal, as `lodge_many` does."""
        return self._lodge_each(items, self.lodge_crl, publish_to, "CRL lodge", self._audit())

    def _lodge_each(self, items: Iterable, lodge_one: Callable[..., _Outcome], publish_to: Path | None,
                    what: str, audit: AuditTrail) -> tuple[list[_Outcome], Publication | None]:
        """Lodge each item, stopping at the first refusal; with `publish_to`, then publish whatever was
        lodged, so the published directory matches the repository after every run.

        A refusal from a file names the file. After a refusal the repository is still published (so
        repeating a run that died before publishing publishes what it lodged), and the refusal is
        raised, saying so. Repeating a run that stopped part-way completes it: what it lodged before
        comes back `already_lodged`.
        """
        items, lodged, refusal = list(items), [], None
        with one_checkpoint(audit, f"{what} of {len(items)} file(s)"):  # the run's one signature, publication included
            try:
                for item in items:
                    lodged.append(_naming_the_file(item, lodge_one))
            except SmkiError as exc:
                refusal = exc
            published = self.publish(publish_to) if publish_to is not None else None
            if refusal is not None:  # raised inside: a refused run signs its checkpoint but leaves the anchor behind
                if published is not None:
                    refusal.args = (f"{refusal}; the repository was published to {published.directory} all the same",)
                raise refusal
        return lodged, published

    # -- publishing and bulk files ------------------------------------------------------------------

    def publish(self, directory: Path | str) -> Publication:
        """Publish every lodged certificate and each issuer's current CRL/ARL into `directory`, atomically file by file, the index last."""
        audit = self._audit()
        publication = publish_repository(audit.connection, Path(directory), audit=audit, actor=self.actor)
        log.info("published %d certificate(s) and %d CRL/ARL(s) to %s (%d file(s) written)", publication.certificates,
                 len(publication.crls), publication.directory, publication.files_written)
        return publication

    def write_bulk_files(self, directory: Path | str, *, since: datetime | str | None = None,
                         now: datetime | None = None) -> list[BulkFile]:
        """The full file and the delta file (since `since`: a datetime, or ISO 8601 text, UTC unless it
        has an offset; default a day before now). ConflictError if either file exists already."""
        start = None if since is None else moment(since, "--since")
        directory = output_directory(directory, "the bulk file directory")
        return bulk.write_bulk_files(self._open(), directory, since=start, now=now)

    # -- search -------------------------------------------------------------------------------------

    def find(self, *, eui64: EUI64 | str | None = None, serial: int | str | None = None, ski: bytes | str | None = None,
             role: RemotePartyRole | str | int | None = None, usage: KeyUsage | str | None = None,
             status: RepositoryStatus | str | None = None, limit: int = 1000) -> list[CertificateRecord]:
        """Certificates matching every filter given, oldest first; by `serial`, the other filters are not used.
        A malformed value is refused (BadInputError) before the repository is read."""
        if serial is not None:
            return find_certificate(self._open(), serial_text(serial))
        filters = dict(entity_id=_optional(eui64, lambda v: parsed(EUI64, v).hex), subject_key_id=_hex(ski, "--ski"), role=_role(role),
                       key_usage=_optional(usage, lambda v: parsed(KeyUsage, v).value),
                       status=_optional(status, lambda v: repository_status(v).value))
        return list_certificates(self._open(), **filters, limit=_limit(limit))

    def current_crls(self) -> list[LodgedCrl]:
        """Every issuer's current CRL or ARL as lodged (the highest cRLNumber), in issuer order: what relying
        parties fetch (the SMKI Portal lists them with their numbers, dates and entry counts)."""
        return current_lodged_crls(self._open())

    def status_of(self, serial: int | str, *, issuer_key_id: str | None = None) -> RepositoryStatus:
        """The repository status parties see now for the certificate with this serial (and issuer, when
        several issuers used the serial). BadInputError when there is none, or more than one."""
        wanted = serial_text(serial)
        records = find_certificate(self._open(), wanted)
        if issuer_key_id is not None:
            issuer = _hex(issuer_key_id, "issuer key identifier")
            records = [r for r in records if r.issuer_key_id == issuer]
        if not records:
            raise BadInputError(f"no certificate with serial {wanted} in the repository")
        if len(records) > 1:
            raise BadInputError(f"serial {wanted} is lodged from {len(records)} issuers: name the issuer's key identifier")
        return RepositoryStatus(records[0].status)

    # -- the repository web service -----------------------------------------------------------------

    def web_application(self, *, api_key: str | PinSource | None, published: Path | str | None = None) -> RepositoryService:
        """The SMKI Repository web service's logic over this repository, with its own connection per thread
        (smki.web serves it: `smki serve`, `smki librarian serve`).

        The database is opened first (a clear error now rather than on the first request); then the API
        key is read (a PinSource: env:, fd: or prompt). No key is refused (BadInputError).
        """
        self._open()
        key = api_key.read(API_KEY_PURPOSE) if isinstance(api_key, PinSource) else api_key
        database = self.database
        return RepositoryService(lambda: open_database(database), set() if key is None else {key},
                                 None if published is None else Path(published))


# -- values converted where they enter: the same refusals whichever front end passes them ----------

def _naming_the_file(item, lodge_one: Callable[..., _Outcome]) -> _Outcome:
    try:
        return lodge_one(item)
    except SmkiError as exc:
        if isinstance(item, (Path, str)) and not str(exc).startswith(f"{item}:"):  # read errors already name the file
            exc.args = (f"{item}: {exc}",)
        raise


def _certificate(certificate: CertificateInput) -> tuple[x509.Certificate, Path | None]:
    """The certificate and the file it came from (a str is a file name)."""
    if isinstance(certificate, x509.Certificate):
        return certificate, None
    if isinstance(certificate, (bytes, bytearray, memoryview)):
        data = bytes(certificate)[:MAX_CERTIFICATE_BYTES + 1]
        if len(data) > MAX_CERTIFICATE_BYTES:
            raise BadInputError(f"certificate: larger than {MAX_CERTIFICATE_BYTES} bytes")
        return load_certificate(single_object(data, (PemLabel.CERTIFICATE,), "certificate"), "certificate"), None
    path = Path(certificate)
    return read_certificate(path), path


def _crl_der(crl: CrlInput) -> tuple[bytes, Path | None]:
    """The list's DER exactly as signed, and the file it came from (a str is a file name)."""
    if isinstance(crl, x509.CertificateRevocationList):
        return crl.public_bytes(Encoding.DER), None
    if isinstance(crl, (bytes, bytearray, memoryview)):
        return crl_der_from_file(bytes(crl)), None
    path = Path(crl)
    return crl_der_from_file(read_input(path, MAX_CRL_BYTES)), path


def _optional(value, convert: Callable[[Any], str]) -> str | None:
    """A search filter in its stored form; None (no filter) stays None."""
    return None if value is None else convert(value)


def _hex(text: bytes | str | None, option: str) -> str | None:
    """A key identifier as stored (uppercase hex, no colons); bytes are taken as the identifier itself."""
    if text is None:
        return None
    if isinstance(text, bytes):
        return text.hex().upper()
    cleaned = text.replace(":", "").upper()
    try:
        bytes.fromhex(cleaned)
    except ValueError:
        raise BadInputError(f"{option}: {text!r} is not hexadecimal") from None
    return cleaned


def _role(role: RemotePartyRole | str | int | None) -> str | None:
    if role is None or isinstance(role, RemotePartyRole):
        return None if role is None else role.ou
    if isinstance(role, int) and not isinstance(role, bool):  # a code, as the enum's value
        try:
            return RemotePartyRole(role).ou
        except ValueError:
            raise BadInputError(f"unknown RemotePartyRole {role!r}") from None
    return RemotePartyRole.parse(role).ou


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_FIND_LIMIT:
        raise BadInputError(f"limit: give a whole number from 1 to {MAX_FIND_LIMIT}")
    return limit
