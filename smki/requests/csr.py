"""PKCS#10 requests for Organisation and Device Certificates (SMKI IDS Appendix F).

`parse_organisation_request` and `parse_device_request` take a CSR in any accepted encoding
and return a typed request, or raise `RequestRejected` with the outcome code of the first
rule it breaks: version 0, ecdsa-with-SHA256, P-256 uncompressed key, a valid signature
(proof of possession), exactly one key usage (digitalSignature or keyAgreement), and the
subject or subjectAltName of its kind. The criticality a CSR requests is not checked: the
certificate's follows the profile.

Whatever else the parsing libraries raise on a malformed request (cryptography's
DuplicateExtension for two keyUsage requests, an IndexError deep in asn1crypto) is turned into
the request's own `FM:0002` refusal at this boundary: a caller sees `RequestRejected` or a request.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from smki.errors import BadInputError
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles.der import ECDSA_WITH_SHA256_OID as ECDSA_WITH_SHA256
from smki.profiles.extensions import ID_ON_HARDWARE_MODULE_NAME, parse_hardware_module_name
from smki.profiles.names import raw_attributes, string_value
from smki.profiles.public_keys import check_subject_public_key_info
from smki.requests.canonical import canonical_fields
from smki.requests.encodings import decode_request
from smki.requests.outcomes import Outcome, RequestRejected, describe_exception

COMMON_NAME, ORGANIZATIONAL_UNIT, UNIQUE_IDENTIFIER = "2.5.4.3", "2.5.4.11", "2.5.4.45"
KEY_USAGE, SUBJECT_ALT_NAME = "2.5.29.15", "2.5.29.17"
EXTENSION_REQUEST = "1.2.840.113549.1.9.14"


_Parsed = TypeVar("_Parsed")


def _refusal_at_the_boundary(parse: Callable[[bytes, str], _Parsed]) -> Callable[[bytes, str], _Parsed]:
    """A parser that answers a request or `RequestRejected`, never a library's own exception."""

    @functools.wraps(parse)
    def parse_or_refuse(data: bytes, where: str = "") -> _Parsed:
        try:
            return parse(data, where)
        except RequestRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - the ASN.1 libraries raise many kinds on hostile input
            raise RequestRejected(Outcome.NOT_PKCS10, f"the request cannot be parsed ({describe_exception(exc)})", where) from None

    return parse_or_refuse


@dataclass(frozen=True)
class _CheckedRequest:
    public_key: ec.EllipticCurvePublicKey
    key_usage: KeyUsage
    request_sha256: str  # of the DER, to record which request a certificate answered
    subject_der: bytes
    extensions: x509.Extensions


@dataclass(frozen=True)
class OrganisationRequest:
    role: RemotePartyRole
    entity_id: EUI64
    common_name: str | None
    key_usage: KeyUsage
    public_key: ec.EllipticCurvePublicKey
    request_sha256: str


@dataclass(frozen=True)
class DeviceRequest:
    device_id: EUI64
    hw_type_oid: str
    key_usage: KeyUsage
    public_key: ec.EllipticCurvePublicKey
    request_sha256: str


def _check_common(data: bytes, where: str, allowed_extensions: set[str]) -> _CheckedRequest:
    der = decode_request(data, where)
    try:
        request = asn1_csr.CertificationRequest.load(der, strict=True)
        info = request["certification_request_info"]
        version = info["version"].native
        algorithm = request["signature_algorithm"]["algorithm"].dotted
        spki_der = info["subject_pk_info"].dump()
        info_der, signature = info.dump(), request["signature"].native
        subject_der = info["subject"].dump()
        extension_requests = [len(attribute["values"]) for attribute in info["attributes"] if attribute["type"].dotted == EXTENSION_REQUEST]
    except (ValueError, TypeError, KeyError):
        raise RequestRejected(Outcome.NOT_PKCS10, "not a PKCS#10 certification request", where) from None
    if extension_requests not in ([], [1]):
        # Parsers differ on which of several extensionRequests they read: what is checked might not be what is certified.
        raise RequestRejected(Outcome.NOT_PKCS10, "the request holds more than one extensionRequest (attribute or value)", where)
    if version != "v1":
        raise RequestRejected(Outcome.WRONG_VERSION, f"PKCS#10 version must be 0, got {version}", where)
    if algorithm != ECDSA_WITH_SHA256:
        raise RequestRejected(Outcome.WRONG_SIGNATURE_ALGORITHM, f"signature algorithm {algorithm} is not ecdsa-with-SHA256", where)
    try:
        public_key = check_subject_public_key_info(spki_der, "subject public key")
    except BadInputError as exc:
        raise RequestRejected(Outcome.WRONG_KEY, str(exc), where) from None
    try:
        public_key.verify(signature, info_der, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise RequestRejected(Outcome.BAD_SIGNATURE, "the request's signature does not verify (no proof of possession)", where) from None
    try:
        extensions = x509.load_der_x509_csr(der).extensions
    except (ValueError, x509.DuplicateExtension) as exc:  # two keyUsage (or subjectAltName) requests: DuplicateExtension
        raise RequestRejected(Outcome.NOT_PKCS10, f"requested extensions are malformed ({exc})", where) from None
    unexpected = sorted(ext.oid.dotted_string for ext in extensions if ext.oid.dotted_string not in allowed_extensions)
    if unexpected:
        raise RequestRejected(Outcome.UNEXPECTED_EXTENSION, f"unexpected requested extension(s) {', '.join(unexpected)}", where)
    return _CheckedRequest(public_key, _one_key_usage(extensions, where), hashlib.sha256(der).hexdigest(), subject_der, extensions)


def _one_key_usage(extensions: x509.Extensions, where: str) -> KeyUsage:
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise RequestRejected(Outcome.WRONG_KEY_USAGE, "no keyUsage extension request", where) from None
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")
    asserted = [name for name in names if getattr(usage, name)]
    if asserted not in (["digital_signature"], ["key_agreement"]):
        raise RequestRejected(Outcome.WRONG_KEY_USAGE, f"keyUsage must be exactly digitalSignature or keyAgreement, got {', '.join(asserted) or 'none'}", where)
    return KeyUsage.parse(asserted[0])


@_refusal_at_the_boundary
def parse_organisation_request(data: bytes, where: str = "") -> OrganisationRequest:
    checked = _check_common(data, where, {KEY_USAGE})
    attributes = {}
    for rdn in raw_attributes(checked.subject_der):
        if len(rdn) != 1:
            raise RequestRejected(Outcome.WRONG_SUBJECT, "a subject RDN holds more than one attribute", where)
        oid, identifier, contents = rdn[0]
        if oid not in (COMMON_NAME, ORGANIZATIONAL_UNIT, UNIQUE_IDENTIFIER) or oid in attributes:
            raise RequestRejected(Outcome.WRONG_SUBJECT, f"subject attribute {oid} is not allowed (only CN, OU and uniqueIdentifier, once each)", where)
        attributes[oid] = (identifier, contents)
    if ORGANIZATIONAL_UNIT not in attributes or UNIQUE_IDENTIFIER not in attributes:
        raise RequestRejected(Outcome.WRONG_SUBJECT, "subject must hold OU (role) and uniqueIdentifier (EUI-64)", where)
    try:
        role = RemotePartyRole.from_ou(_directory_string(ORGANIZATIONAL_UNIT, attributes[ORGANIZATIONAL_UNIT]))
        common_name = _directory_string(COMMON_NAME, attributes[COMMON_NAME]) if COMMON_NAME in attributes else None
    except BadInputError as exc:
        raise RequestRejected(Outcome.WRONG_SUBJECT, str(exc), where) from None
    return OrganisationRequest(role, _unique_identifier(attributes[UNIQUE_IDENTIFIER], where), common_name,
                               checked.key_usage, checked.public_key, checked.request_sha256)


def _directory_string(oid: str, value: tuple[int, bytes]) -> str:
    identifier, contents = value
    if identifier not in (0x0C, 0x13):  # UTF8String, PrintableString
        raise BadInputError(f"attribute is ASN.1 tag {identifier:#04x}, not UTF8String or PrintableString")
    return string_value(oid, identifier, contents)


def _unique_identifier(value: tuple[int, bytes], where: str) -> EUI64:
    """uniqueIdentifier: BIT STRING, 0 unused bits, the 8-octet EUI-64 (DER 03 09 00 <8 octets>)."""
    identifier, contents = value
    if identifier != 0x03:
        raise RequestRejected(Outcome.MALFORMED_IDENTIFIER, f"uniqueIdentifier is ASN.1 tag {identifier:#04x}, not a BIT STRING", where)
    if len(contents) != 9 or contents[0] != 0:
        raise RequestRejected(Outcome.MALFORMED_IDENTIFIER, f"uniqueIdentifier holds {max(0, len(contents) - 1)} octets, not an 8-octet EUI-64", where)
    return EUI64(bytes(contents[1:]))


@_refusal_at_the_boundary
def parse_device_request(data: bytes, where: str = "") -> DeviceRequest:
    """A checked device request. Requests in the canonical shape take a fast path (batches of
    50,000 spend most of their time here); anything else, and every rejection, takes the full
    path below, which alone decides what is wrong."""
    der = decode_request(data, where)
    fast = canonical_fields(der)
    if fast is not None:
        return DeviceRequest(EUI64(fast.hw_serial), fast.hw_type_oid, KeyUsage(fast.key_usage), fast.public_key, fast.request_sha256)
    return _parse_device_request(der, where)


def _parse_device_request(data: bytes, where: str) -> DeviceRequest:
    checked = _check_common(data, where, {KEY_USAGE, SUBJECT_ALT_NAME})
    if checked.subject_der != b"\x30\x00":
        raise RequestRejected(Outcome.WRONG_SUBJECT, "a device request's subject must be empty", where)
    try:
        names = list(checked.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        raise RequestRejected(Outcome.WRONG_SUBJECT_ALT_NAME, "no subjectAltName request (HardwareModuleName)", where) from None
    if len(names) != 1 or not isinstance(names[0], x509.OtherName) or names[0].type_id != ID_ON_HARDWARE_MODULE_NAME:
        raise RequestRejected(Outcome.WRONG_SUBJECT_ALT_NAME, "subjectAltName must be exactly one otherName HardwareModuleName", where)
    try:
        hw_type_oid, hw_serial = parse_hardware_module_name(names[0])
    except ValueError:
        raise RequestRejected(Outcome.WRONG_SUBJECT_ALT_NAME, "HardwareModuleName is malformed", where) from None
    if len(hw_serial) != 8:
        raise RequestRejected(Outcome.MALFORMED_IDENTIFIER, f"hwSerialNum holds {len(hw_serial)} octets, not an 8-octet EUI-64", where)
    return DeviceRequest(EUI64(hw_serial), hw_type_oid, checked.key_usage, checked.public_key, checked.request_sha256)
