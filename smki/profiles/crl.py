"""The Organisation CRL and the ARLs: v2, issuer byte-identical to the CA subject, AKI
(8 octets), a monotonic cRLNumber, reasonCode per entry where known.

The TBSCertList is encoded here directly (see `der`): the revoked-certificate list is the
bulk of a CRL and cryptography's builder costs ~6 us an entry; precomputed pieces cost a
fraction of that. The result is parsed back and its signature verified before release.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509

from smki.errors import BadInputError, HsmError
from smki.hsm.signer import Signer, require_key_of
from smki.profiles import der

ECDSA_WITH_SHA256 = der.sequence(bytes.fromhex("06082a8648ce3d040302"))  # parameters absent
_AKI_OID = bytes.fromhex("0603551d23")
_CRL_NUMBER_OID = bytes.fromhex("0603551d14")
_REASON_CODE_OID = bytes.fromhex("0603551d15")

# RFC 5280 CRLReason values that may appear in a reasonCode entry extension (8 is unused).
REASON_CODES = {
    "unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3, "superseded": 4,
    "cessationOfOperation": 5, "certificateHold": 6, "privilegeWithdrawn": 9, "aACompromise": 10,
}  # removeFromCRL (8) only has meaning in delta CRLs, which SMKI does not issue
_REASON_EXTENSIONS = {
    code: der.sequence(der.sequence(_REASON_CODE_OID, der.tlv(0x04, der.tlv(0x0A, bytes((code,))))))
    for code in REASON_CODES.values()
}


@dataclass(frozen=True)
class RevokedEntry:
    serial_number: int
    revocation_date_utc: datetime
    reason: str | None = None  # a key of REASON_CODES; None leaves reasonCode out

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASON_CODES:
            raise BadInputError(f"reason {self.reason!r} is not an RFC 5280 CRL reason ({', '.join(REASON_CODES)})")
        moment = self.revocation_date_utc
        if moment.tzinfo is not timezone.utc:  # held in UTC, so encoding needs no conversion
            if moment.tzinfo is None:
                raise BadInputError(f"revocation date {moment.isoformat()} has no time zone")
            object.__setattr__(self, "revocation_date_utc", moment.astimezone(timezone.utc))


def _revoked_certificates(entries: Iterable[RevokedEntry]) -> tuple[bytes, int]:
    """revokedCertificates encoded in one pass (the hot loop of a million-entry CRL), and their number.

    Each entry is a SEQUENCE of serial, time and optional reasonCode whose lengths depend only
    on the lengths of those three parts: the headers are made once per such shape, each
    revocation instant is encoded once, and each entry is then a single concatenation.
    """
    times: dict[float, bytes] = {}
    reasons = {None: b"", **{name: _REASON_EXTENSIONS[code] for name, code in REASON_CODES.items()}}
    headers: dict[int, bytes] = {}
    encoded = []
    append = encoded.append
    for entry in entries:
        serial = entry.serial_number
        octets = serial.to_bytes((serial.bit_length() >> 3) + 1, "big")
        moment = entry.revocation_date_utc
        instant = moment.timestamp()  # a float key: aware datetimes compare slowly on every dict hit
        when = times.get(instant)
        if when is None:
            when = times[instant] = der.time(moment)
        reason = reasons[entry.reason]
        shape = len(octets) << 16 | len(when) << 8 | len(reason)
        header = headers.get(shape)
        if header is None:
            header = headers[shape] = _entry_header(len(octets), len(when), len(reason))
        append(header + octets + when + reason)
    return (der.tlv(0x30, b"".join(encoded)) if encoded else b""), len(encoded)


def _entry_header(serial_length: int, time_length: int, reason_length: int) -> bytes:
    """SEQUENCE header, then the INTEGER header of the serial, for an entry of these part lengths."""
    body_length = 2 + serial_length + time_length + reason_length if serial_length < 0x80 else None
    if body_length is None:
        raise BadInputError("a CRL entry's serial number is longer than 127 octets")
    return bytes((0x30,)) + der.length(body_length) + b"\x02" + der.length(serial_length)


def _ca_key_identifier(issuer: x509.Certificate) -> bytes:
    try:
        return issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        raise BadInputError("the CRL issuer's certificate has no subjectKeyIdentifier") from None


def build_crl(issuer: x509.Certificate, signer: Signer, *, crl_number: int, this_update_utc: datetime,
              next_update_utc: datetime, entries: Iterable[RevokedEntry]) -> x509.CertificateRevocationList:
    """A signed, verified CRL (or ARL, when the issuer is a root)."""
    return build_crl_der(issuer, signer, crl_number=crl_number, this_update_utc=this_update_utc,
                         next_update_utc=next_update_utc, entries=entries)[0]


def build_crl_der(issuer: x509.Certificate, signer: Signer, *, crl_number: int, this_update_utc: datetime,
                  next_update_utc: datetime, entries: Iterable[RevokedEntry]) -> tuple[x509.CertificateRevocationList, bytes]:
    """`build_crl`, with the DER it encoded: re-encoding a parsed million-entry list costs seconds."""
    if next_update_utc <= this_update_utc:
        raise BadInputError("nextUpdate must be after thisUpdate")
    if crl_number < 0 or crl_number.bit_length() > 159:
        raise BadInputError("cRLNumber must be a non-negative integer of at most 20 octets")
    require_key_of(signer, issuer, "the signing key")
    issuer_name = issuer.subject.public_bytes()  # byte-identical to the CA's encoded subject
    extensions = der.tlv(0xA0, der.sequence(
        der.sequence(_AKI_OID, der.tlv(0x04, der.sequence(der.tlv(0x80, _ca_key_identifier(issuer))))),
        der.sequence(_CRL_NUMBER_OID, der.tlv(0x04, der.integer(crl_number))),
    ))
    revoked, count = _revoked_certificates(entries)
    tbs = der.sequence(der.integer(1), ECDSA_WITH_SHA256, issuer_name, der.time(this_update_utc),
                       der.time(next_update_utc), revoked, extensions)
    signature = signer.sign(tbs)  # the Signer verifies it against the CA key before returning
    encoded = der.sequence(tbs, ECDSA_WITH_SHA256, der.tlv(0x03, b"\x00" + signature))
    crl = x509.load_der_x509_crl(encoded)
    # Parsing back proves the hand-built DER is one well-formed CRL holding what was meant. (Not
    # by comparing `tbs_certlist_bytes`: cryptography re-encodes the whole list for that, over a
    # second for a million entries; the encoder's output is checked byte for byte in the tests.)
    if crl.issuer.public_bytes() != issuer_name or crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number != crl_number \
            or len(crl) != count:
        raise HsmError("the encoded CRL does not parse back to what was signed; not released")
    return crl, encoded
