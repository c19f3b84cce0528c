"""Every certificate rule of shared/docs/smki-profiles.md, one small function each."""

from __future__ import annotations

from asn1crypto import core, x509 as asn1_x509

from smki.errors import BadInputError
from smki.identifiers import CertificateType, RemotePartyRole
from smki.profiles import der
from smki.profiles.lint.certificate_view import (AKI, BC, CONTINGENCY, CP, ECDSA_WITH_SHA256, KU, SAN, SKI,
                                                 CertificateView)
from smki.profiles.lint.findings import Rule, Severity
from smki.profiles.names import string_value
from smki.profiles.unique_extensions import repeated_certificate_extension

ERROR, WARNING = Severity.ERROR, Severity.WARNING
EXPECTED_ORDER = {
    CertificateType.ROOT: [KU, BC, CP, SKI, CONTINGENCY],
    CertificateType.ISSUING_CA: [KU, BC, CP, SKI, AKI],
    CertificateType.CROSS_CERTIFICATE: [KU, BC, CP, SKI, AKI],  # a root re-key: the old root certifies the new root's key
    CertificateType.ORGANISATION: [KU, SKI, CP, AKI],
    CertificateType.DEVICE: [KU, SKI, SAN, CP, AKI],
}
KEY_USAGE_NAMES = {"DS": {"digital_signature"}, "KA": {"key_agreement"}}


def _version(v: CertificateView):
    return None if v.tbs["version"].native == "v3" else f"version is {v.tbs['version'].native}, not v3"


def _signature_algorithm(v: CertificateView):
    for where, algorithm in (("tbsCertificate.signature", v.tbs["signature"]), ("signatureAlgorithm", v.certificate["signature_algorithm"])):
        if algorithm["algorithm"].dotted != ECDSA_WITH_SHA256:
            return f"{where} is {algorithm['algorithm'].dotted}, not ecdsa-with-SHA256"


def _signature_parameters_absent(v: CertificateView):
    for where, algorithm in (("tbsCertificate.signature", v.tbs["signature"]), ("signatureAlgorithm", v.certificate["signature_algorithm"])):
        if algorithm.dump() != der.ECDSA_WITH_SHA256_ALGORITHM:
            return f"{where} carries parameters (NULL or other); they must be absent"


def _p256(v: CertificateView):
    spki = v.tbs["subject_public_key_info"]["algorithm"]
    if spki["algorithm"].dotted != "1.2.840.10045.2.1":
        return f"public key algorithm {spki['algorithm'].dotted} is not id-ecPublicKey"
    parameters = spki["parameters"]
    curve = parameters.chosen.dotted if parameters.name == "named" else parameters.name
    return None if curve == "1.2.840.10045.3.1.7" else f"curve {curve} is not P-256"


def _uncompressed(v: CertificateView):
    return None if len(v.point) == 65 and v.point[0] == 4 else "the EC point is not uncompressed (04||X||Y, 65 bytes)"


def _key_usage_critical(v: CertificateView):
    extension = v.extension(KU)
    if extension is None:
        return "keyUsage is missing"
    return None if extension.critical else "keyUsage is not critical"


def _key_usage_bits(v: CertificateView):
    extension = v.extension(KU)
    if extension is None:
        return None
    bits = set(asn1_x509.KeyUsage.load(extension.value).native)
    if v.is_end_entity:
        if bits not in ({"digital_signature"}, {"key_agreement"}):
            return f"keyUsage must be exactly digitalSignature or keyAgreement, got {', '.join(sorted(bits)) or 'none'}"
    elif bits != {"key_cert_sign", "crl_sign"}:
        return f"a CA's keyUsage must be keyCertSign and cRLSign, got {', '.join(sorted(bits))}"


def _policies(v: CertificateView) -> list[str] | None:
    extension = v.extension(CP)
    return None if extension is None else [p["policy_identifier"].dotted for p in asn1_x509.CertificatePolicies.load(extension.value)]


def _certificate_policies_critical(v: CertificateView):
    extension = v.extension(CP)
    if extension is None:
        return "certificatePolicies is missing"
    if not extension.critical:
        return "certificatePolicies is not critical"
    if not _policies(v):
        return "certificatePolicies holds no policy OID"


def _single_policy(v: CertificateView):
    policies = _policies(v)
    if policies is not None and v.is_end_entity and len(policies) != 1:
        return f"an end-entity certificate carries exactly one policy OID, got {len(policies)}"


def _expected_policy(v: CertificateView):
    policies = _policies(v)
    if v.expected_policy_oids and policies is not None and not set(policies) & set(v.expected_policy_oids):
        return f"policy OID(s) {', '.join(policies)} are not the expected {', '.join(v.expected_policy_oids)}"


def _ski(v: CertificateView):
    extension = v.extension(SKI)
    if extension is None:
        return "subjectKeyIdentifier is missing"
    if extension.critical:
        return "subjectKeyIdentifier is critical"
    key_id = core.OctetString.load(extension.value).native
    if len(key_id) != 8:
        return f"subjectKeyIdentifier is {len(key_id)} octets, not 8"
    if key_id != v.method_2_key_identifier():
        return "subjectKeyIdentifier is not RFC 5280 method (2) of the public key"


def _aki(v: CertificateView):
    extension = v.extension(AKI)
    if extension is None:
        return None if v.certificate_type == CertificateType.ROOT else "authorityKeyIdentifier is missing"
    value = asn1_x509.AuthorityKeyIdentifier.load(extension.value).native
    if extension.critical:
        return "authorityKeyIdentifier is critical"
    if value["authority_cert_issuer"] is not None or value["authority_cert_serial_number"] is not None:
        return "authorityKeyIdentifier holds issuer and serial; only [0] keyIdentifier is allowed"
    if value["key_identifier"] is None or len(value["key_identifier"]) != 8:
        return "authorityKeyIdentifier keyIdentifier is not 8 octets"


def _serial(v: CertificateView):
    encoded = v.tbs["serial_number"].dump()
    if encoded[1] != 16 or encoded[2] >= 0x80:
        return f"serial number is {encoded[1]} octets{' and negative' if encoded[2] >= 0x80 else ''}; SMKI uses 16 octets, positive"


def _extension_order(v: CertificateView):
    actual = [e.oid for e in v.extensions]
    expected = [oid for oid in EXPECTED_ORDER[v.certificate_type] if oid in actual]
    return None if actual == expected or set(actual) - set(EXPECTED_ORDER[v.certificate_type]) else \
        f"extension order {actual} differs from the test PKI's {expected}"


def _unexpected_extensions(v: CertificateView):
    allowed = set(EXPECTED_ORDER[v.certificate_type]) | ({BC} if _end_entity_ca_false(v) else set())  # a warning of its own
    extra = sorted({e.oid for e in v.extensions} - allowed)
    return f"unexpected extension(s) for a {v.certificate_type} certificate: {', '.join(extra)}" if extra else None


def _repeated_extension(v: CertificateView):
    return repeated_certificate_extension(v.der)  # the one check the strict certificate reader applies too


def _issuer_matches(v: CertificateView):
    if v.issuer_subject_der is not None and v.tbs["issuer"].dump() != v.issuer_subject_der:
        return "issuer is not byte-identical to the issuing CA's subject"


def _basic_constraints(v: CertificateView):
    extension = v.extension(BC)
    if v.is_end_entity:  # cA FALSE is only a warning (_end_entity_basic_constraints)
        return "an end-entity certificate asserts basicConstraints cA TRUE" if v.basic_constraints_ca else None
    if extension is None or not extension.critical:
        return "a CA certificate needs critical basicConstraints cA=TRUE"
    path_length = asn1_x509.BasicConstraints.load(extension.value).native["path_len_constraint"]
    if v.certificate_type == CertificateType.ISSUING_CA and path_length != 0:
        return "an Issuing CA's pathLenConstraint must be 0"
    if v.certificate_type == CertificateType.CROSS_CERTIFICATE and path_length == 0:
        return "a cross-certificate's pathLenConstraint must leave room for the Issuing CAs below the new root"


def _end_entity_ca_false(v: CertificateView) -> bool:
    return v.is_end_entity and v.extension(BC) is not None and not v.basic_constraints_ca


def _end_entity_basic_constraints(v: CertificateView):
    # DCC Boxed's "other user" Organisation Certificates carry a critical, empty basicConstraints
    # (cA FALSE) and work: outside the test PKI's profile, but not broken.
    if _end_entity_ca_false(v):
        return "an end-entity certificate carries basicConstraints cA FALSE (the test PKI's carry none)"


def _name_characters(v: CertificateView):
    for which, attributes in (("subject", v.subject_attributes), ("issuer", v.issuer_attributes)):
        for oid, tag, contents in attributes:
            try:
                string_value(oid, tag, contents)
            except BadInputError as exc:
                return f"{which} {exc}"


def _role_in_policy(v: CertificateView):
    if v.certificate_type != CertificateType.ORGANISATION or v.policy_roles is None:
        return None
    ou = next((value for oid, _, value in v.subject_attributes if oid == "2.5.4.11"), None)
    if ou is None:
        return None  # smki.organisation.subject reports it
    text = ou.decode("latin-1")
    try:
        role = RemotePartyRole.from_ou(text).camel_name
    except BadInputError:
        return f"role OU {text!r} names no RemotePartyRole"
    return None if text in v.policy_roles else f"role {text} ({role}) is named by no policy"


def _root_subject(v: CertificateView):
    if v.certificate_type in (CertificateType.ROOT, CertificateType.CROSS_CERTIFICATE) and not (
            v.self_issued and any(oid == "2.5.4.11" and value == b"00" for oid, _, value in v.subject_attributes)):
        return f"a {v.certificate_type} is self-issued with subject OU 00"


def _device_subject(v: CertificateView):
    if v.certificate_type == CertificateType.DEVICE and v.tbs["subject"].dump() != b"\x30\x00":
        return "a Device Certificate's subject must be empty"


def _device_not_after(v: CertificateView):
    if v.certificate_type == CertificateType.DEVICE and v.tbs["validity"]["not_after"].dump() != b"\x18\x0f99991231235959Z":
        return "a Device Certificate's notAfter must be GeneralizedTime 99991231235959Z"


def _device_san(v: CertificateView):
    if v.certificate_type != CertificateType.DEVICE:
        return None
    extension = v.extension(SAN)
    if extension is None:
        return "a Device Certificate needs subjectAltName with HardwareModuleName"
    if not extension.critical:
        return "a Device Certificate's subjectAltName must be critical"
    names = asn1_x509.GeneralNames.load(extension.value)
    if len(names) != 1 or names[0].name != "other_name" or names[0].chosen["type_id"].dotted != "1.3.6.1.5.5.7.8.4":
        return "subjectAltName must be exactly one otherName id-on-hardwareModuleName"
    value = names[0].chosen["value"]
    hmn = core.Sequence.load(b"\x30" + bytes([len(value.contents)]) + value.contents) if len(value.contents) < 128 else None
    if hmn is None or len(hmn) != 2 or len(core.OctetString.load(hmn[1].dump()).native) != 8:
        return "HardwareModuleName hwSerialNum must be the 8-octet EUI-64"


def _organisation_subject(v: CertificateView):
    if v.certificate_type != CertificateType.ORGANISATION:
        return None
    layout = [(oid, tag) for oid, tag, _ in v.subject_attributes]
    allowed = ([("2.5.4.3", 0x0C)] if layout and layout[0][0] == "2.5.4.3" else []) + [("2.5.4.11", 0x0C), ("2.5.4.45", 0x03)]
    if layout != allowed:
        return "subject must be CN (UTF8String, optional), OU (UTF8String), uniqueIdentifier (BIT STRING), in that order"
    unique = v.subject_attributes[-1][2]
    if len(unique) != 9 or unique[0] != 0:
        return "uniqueIdentifier must be a BIT STRING of the 8-octet EUI-64 with 0 unused bits"


CERTIFICATE_RULES = [
    Rule("smki.cert.version_v3", ERROR, "X.509 v3", _version),
    Rule("smki.cert.signature_algorithm", ERROR, "ecdsa-with-SHA256", _signature_algorithm),
    Rule("smki.cert.signature_parameters_absent", ERROR, "signature AlgorithmIdentifier parameters absent (not NULL)", _signature_parameters_absent),
    Rule("smki.cert.public_key_p256", ERROR, "id-ecPublicKey on P-256", _p256),
    Rule("smki.cert.public_key_uncompressed", ERROR, "uncompressed 65-byte point", _uncompressed),
    Rule("smki.cert.key_usage_critical", ERROR, "keyUsage present and critical", _key_usage_critical),
    Rule("smki.cert.key_usage_bits", ERROR, "one of DS/KA for end entities; keyCertSign+cRLSign for CAs", _key_usage_bits),
    Rule("smki.cert.certificate_policies_critical", ERROR, "certificatePolicies present, critical, non-empty", _certificate_policies_critical),
    Rule("smki.cert.single_policy_oid", ERROR, "exactly one policy OID on end-entity certificates", _single_policy),
    Rule("smki.cert.expected_policy_oid", ERROR, "the environment's policy OID", _expected_policy),
    Rule("smki.cert.subject_key_identifier", ERROR, "SKI present, non-critical, 8 octets, method (2)", _ski),
    Rule("smki.cert.authority_key_identifier", ERROR, "AKI [0] keyIdentifier only, 8 octets, non-critical (absent on roots)", _aki),
    Rule("smki.cert.serial_16_octets", ERROR, "16-octet positive serial", _serial),
    Rule("smki.cert.extension_order", WARNING, "extension order of the test PKI", _extension_order),
    Rule("smki.cert.unexpected_extension", ERROR, "no extensions beyond the profile's", _unexpected_extensions),
    Rule("smki.cert.duplicate_extension", ERROR, "each extension at most once", _repeated_extension),
    Rule("smki.cert.issuer_byte_identical", ERROR, "issuer byte-identical to the CA subject (when the CA is given)", _issuer_matches),
    Rule("smki.cert.basic_constraints", ERROR, "critical cA=TRUE on CAs (pathLen 0 on Issuing CAs); no cA TRUE on end entities", _basic_constraints),
    Rule("smki.cert.basic_constraints_end_entity", WARNING, "no basicConstraints cA FALSE on end entities (DCC Boxed has it)",
         _end_entity_basic_constraints),
    Rule("smki.name.safe_characters", ERROR, "subject and issuer strings decode and hold no control, bidi, invisible, private-use, unassigned or non-characters",
         _name_characters),
    Rule("smki.root.subject", ERROR, "a root is self-issued with subject OU 00", _root_subject),
    Rule("smki.device.subject_empty", ERROR, "empty Device Certificate subject", _device_subject),
    Rule("smki.device.not_after", ERROR, "device notAfter GeneralizedTime 99991231235959Z", _device_not_after),
    Rule("smki.device.hardware_module_name", ERROR, "critical SAN with exactly one HardwareModuleName, 8-octet hwSerialNum", _device_san),
    Rule("smki.organisation.subject", ERROR, "CN?/OU/uniqueIdentifier with their string types; EUI-64 BIT STRING", _organisation_subject),
    Rule("smki.organisation.role_in_policy", WARNING, "a role some policy names (when the policies are known)", _role_in_policy),
]
