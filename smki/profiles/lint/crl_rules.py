"""CRL and ARL rules (RFC 5280 / 5759 as smki-profiles.md sets them out)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from asn1crypto import crl as asn1_crl

from smki.profiles.crl import REASON_CODES
from smki.profiles.lint.findings import Finding, Rule, Severity
from smki.profiles.unique_extensions import repeated_crl_extension

ERROR = Severity.ERROR
_REASON_NAMES = {"unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
                 "cessation_of_operation", "certificate_hold", "privilege_withdrawn", "aa_compromise"}
assert len(_REASON_NAMES) == len(REASON_CODES)  # the two spellings of one list


# How far ahead of this host's clock a CRL's thisUpdate may be: clocks differ a little, but a
# CRL dated later than that was made by a wrong clock (or to be used later), not just now.
CLOCK_SKEW = timedelta(minutes=5)


class CrlView:
    def __init__(self, der: bytes, issuer_subject_der: bytes | None = None, now: datetime | None = None) -> None:
        self.der = der
        self.crl = asn1_crl.CertificateList.load(der, strict=True)
        self.tbs = self.crl["tbs_cert_list"]
        self.tbs.native  # parse now: malformed structures fail here
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
    for entry in v.tbs["revoked_certificates"]:
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
             skip: frozenset[str] = frozenset()) -> tuple[str, list[Finding]]:
    """(crl or arl, findings); `now` (default: the clock) is what thisUpdate is compared with; rules
    whose ids are in `skip` are not run (a caller that has already made the same check)."""
    from smki.errors import BadInputError

    try:
        view = CrlView(der, issuer_subject_der, now)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadInputError(f"not a DER CRL ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return ("arl" if view.is_arl else "crl"), [finding for rule in CRL_RULES if rule.rule_id not in skip and (finding := rule.run(view))]
