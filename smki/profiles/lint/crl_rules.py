"""CRL and ARL rules (RFC 5280 / 5759 as smki-profiles.md sets them out)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import re

from asn1crypto import crl as asn1_crl
from cryptography import x509

from smki.identifiers import ListType
from smki.profiles import der as der_encoding
from smki.profiles.crl import REASON_CODES
from smki.profiles.lint.findings import Finding, Rule, Severity
from smki.profiles.unique_extensions import repeated_crl_extension

ERROR = Severity.ERROR
_REASON_NAMES = {"unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
                 "cessation_of_operation", "certificate_hold", "privilege_withdrawn", "aa_compromise"}
assert len(_REASON_NAMES) == len(REASON_CODES)  # the two spellings of one list


_REASON_CODE_OID = bytes.fromhex("0603551d15")
# The reasonCode extension, not critical, holding one of the RFC 5280 values (8, removeFromCRL, and 7 excluded).
_ALLOWED_REASON_CODE = re.compile(re.escape(_REASON_CODE_OID + bytes.fromhex("04030a01"))
                                  + b"[" + b"".join(re.escape(bytes((code,))) for code in REASON_CODES.values()) + b"]")


def _split_revoked(der: bytes) -> tuple[bytes, bytes]:
    """(the CRL without its revokedCertificates, the revokedCertificates TLV or b""): the tbs's
    third SEQUENCE (after signature and issuer; the version is an INTEGER) is the list."""
    _, outer, outer_end = _tlv(der, 0, len(der))
    tbs_tag, tbs_start, tbs_end = _tlv(der, outer, outer_end)
    if tbs_tag != 0x30 or der[outer] != 0x30:
        raise ValueError("a CertificateList and its tbsCertList are SEQUENCEs")
    kept, revoked, sequences, position = [], b"", 0, tbs_start
    while position < tbs_end:
        tag, _, end = _tlv(der, position, tbs_end)
        sequences += tag == 0x30
        if tag == 0x30 and sequences == 3:
            revoked = der[position:end]
        else:
            kept.append(der[position:end])
        position = end
    return der_encoding.sequence(der_encoding.sequence(*kept), der[tbs_end:outer_end]), revoked


def _tlv(der: bytes, position: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end) of the definite-length TLV at `position`, within `end`."""
    tag, first = der[position], der[position + 1]
    start, length = position + 2, first
    if first >= 0x80:
        size = first & 0x7F
        if not 0 < size <= 4:
            raise ValueError("a DER length of 1 to 4 octets")
        start, length = position + 2 + size, int.from_bytes(der[position + 2:position + 2 + size], "big")
    if start + length > end:
        raise ValueError("a TLV runs past its container")
    return tag, start, start + length


# How far ahead of this host's clock a CRL's thisUpdate may be: clocks differ a little, but a
# CRL dated later than that was made by a wrong clock (or to be used later), not just now.
CLOCK_SKEW = timedelta(minutes=5)


class CrlView:
    """A CRL for the rules: its header parsed with asn1crypto, its revoked entries kept as DER.

    A million-entry list parsed into asn1crypto objects costs about a minute; the entries are
    instead checked whole by cryptography's parser (the structure of every entry, its serial and
    its time, in C: 0.2 s for a million) and their reason codes found in the DER (`_reasons`).
    """

    def __init__(self, der: bytes, issuer_subject_der: bytes | None = None, now: datetime | None = None) -> None:
        self.der = der
        header, self.revoked_der = _split_revoked(der)
        self.crl = asn1_crl.CertificateList.load(header, strict=True)
        self.tbs = self.crl["tbs_cert_list"]
        self.tbs.native  # parse now: malformed structures fail here
        x509.load_der_x509_crl(der)  # and every entry's structure, which the header leaves out
        self.issuer_subject_der = issuer_subject_der
        self.now = now or datetime.now(timezone.utc)
        self.extensions = {e["extn_id"].dotted: e for e in self.tbs["crl_extensions"]}
        self.is_arl = any(a["type"].dotted == "2.5.4.11" and a["value"].native == "00" for rdn in self.tbs["issuer"].chosen for a in rdn)


def _version(v: CrlView):
    return None if v.tbs["version"].native == "v2" else "a CRL must be v2"


def _signature(v: CrlView):
    expected = bytes.fromhex("300a06082a8648ce3d040302")
    if v.tbs["signature"].dump() != expected or v.crl["signature_algorithm"].dump() != expected:
        return "signature algorithm must be ecdsa-with-SHA256 with parameters absent"


def _aki(v: CrlView):
    extension = v.extensions.get("2.5.29.35")
    if extension is None:
        return "authorityKeyIdentifier is missing"
    value = extension["extn_value"].parsed.native
    if value["authority_cert_issuer"] is not None or value["authority_cert_serial_number"] is not None or len(value["key_identifier"] or b"") != 8:
        return "authorityKeyIdentifier must be an 8-octet keyIdentifier only"


def _crl_number(v: CrlView):
    return None if "2.5.29.20" in v.extensions else "cRLNumber is missing"


def _next_update(v: CrlView):
    return None if v.tbs["next_update"].native is not None else "nextUpdate is missing"


def _next_after_this(v: CrlView):
    this_update, next_update = v.tbs["this_update"].native, v.tbs["next_update"].native
    if next_update is not None and next_update <= this_update:
        return f"nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ} is not after thisUpdate {this_update:%Y-%m-%dT%H:%M:%SZ}"


def _this_update(v: CrlView):
    this_update = v.tbs["this_update"].native
    if this_update > v.now + CLOCK_SKEW:
        return f"thisUpdate {this_update:%Y-%m-%dT%H:%M:%SZ} is more than {CLOCK_SKEW} ahead of the clock ({v.now:%Y-%m-%dT%H:%M:%SZ})"


def _reasons(v: CrlView):
    # Nearly every list holds only reasonCode extensions as smki encodes them: when every
    # reasonCode OID in the DER begins such an extension with an allowed value, none is wrong.
    # Otherwise (another encoding, a critical flag, a bad value, or those five octets inside a
    # serial) the entries are parsed and judged one by one.
    if not v.revoked_der or v.der.count(_REASON_CODE_OID) == len(_ALLOWED_REASON_CODE.findall(v.der)):
        return None
    for entry in asn1_crl.RevokedCertificates.load(v.revoked_der, strict=True):
        for extension in entry["crl_entry_extensions"]:
            if extension["extn_id"].native == "crl_reason" and extension["extn_value"].parsed.native not in _REASON_NAMES:
                return f"entry {entry['user_certificate'].native:X} has reasonCode {extension['extn_value'].parsed.native}"


def _repeated_extension(v: CrlView):
    return repeated_crl_extension(v.der)  # the one check the strict CRL reader applies too


def _issuer(v: CrlView):
    if v.issuer_subject_der is not None and v.tbs["issuer"].dump() != v.issuer_subject_der:
        return "issuer is not byte-identical to the CA's subject"


DUPLICATE_EXTENSION = "smki.crl.duplicate_extension"  # also checked by every CRL reader (smki.profiles.files.load_crl)
CRL_RULES = [
    Rule("smki.crl.version_v2", ERROR, "v2", _version),
    Rule("smki.crl.signature_algorithm", ERROR, "ecdsa-with-SHA256, parameters absent", _signature),
    Rule("smki.crl.authority_key_identifier", ERROR, "AKI: 8-octet keyIdentifier only", _aki),
    Rule("smki.crl.crl_number", ERROR, "cRLNumber present", _crl_number),
    Rule("smki.crl.next_update", ERROR, "nextUpdate present", _next_update),
    Rule("smki.crl.next_update_after_this_update", ERROR, "nextUpdate later than thisUpdate", _next_after_this),
    Rule("smki.crl.this_update_not_future", ERROR, "thisUpdate not ahead of the clock by more than a small skew", _this_update),
    Rule("smki.crl.reason_codes", ERROR, "reasonCode values of RFC 5280", _reasons),
    Rule(DUPLICATE_EXTENSION, ERROR, "each extension at most once, in crlExtensions and in each entry", _repeated_extension),
    Rule("smki.crl.issuer_byte_identical", ERROR, "issuer byte-identical to the CA subject (when the CA is given)", _issuer),
]


def lint_crl(der: bytes, issuer_subject_der: bytes | None = None, now: datetime | None = None,
             skip: frozenset[str] = frozenset()) -> tuple[ListType, list[Finding]]:
    """(crl or arl, findings); `now` (default: the clock) is what thisUpdate is compared with; rules
    whose ids are in `skip` are not run (a caller that has already made the same check)."""
    from smki.errors import BadInputError

    try:
        view = CrlView(der, issuer_subject_der, now)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise BadInputError(f"not a DER CRL ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return (ListType.ARL if view.is_arl else ListType.CRL), [finding for rule in CRL_RULES if rule.rule_id not in skip and (finding := rule.run(view))]
