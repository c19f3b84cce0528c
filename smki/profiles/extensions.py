"""SMKI-specific extension values, declared to mirror the ASN.1 they come from."""

from __future__ import annotations

from asn1crypto import core
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from smki.identifiers import EUI64

ID_ON_HARDWARE_MODULE_NAME = ObjectIdentifier("1.3.6.1.5.5.7.8.4")  # RFC 4108
ID_PE_WRAPPED_APEX_CONTIN_KEY = ObjectIdentifier("1.3.6.1.5.5.7.1.20")  # RFC 5934
ID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"  # RFC 3394 AES key wrap, 256-bit KEK


class HardwareModuleName(core.Sequence):
    """RFC 4108: HardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING }"""

    _fields = [("hwType", core.ObjectIdentifier), ("hwSerialNum", core.OctetString)]


class AlgorithmIdentifier(core.Sequence):
    """RFC 5280 AlgorithmIdentifier; AES key wrap carries no parameters (RFC 3565)."""

    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class WrappedApexContingencyKey(core.Sequence):
    """RFC 5934: SEQUENCE { wrapAlgorithm AlgorithmIdentifier, wrappedContinPubKey OCTET STRING }"""

    _fields = [("wrapAlgorithm", AlgorithmIdentifier), ("wrappedContinPubKey", core.OctetString)]


def hardware_module_name(hw_type_oid: str, device_id: EUI64) -> x509.OtherName:
    """The device certificate's one GeneralName: otherName id-on-hardwareModuleName."""
    value = HardwareModuleName({"hwType": hw_type_oid, "hwSerialNum": device_id.octets})
    return x509.OtherName(ID_ON_HARDWARE_MODULE_NAME, value.dump())


def parse_hardware_module_name(other_name: x509.OtherName) -> tuple[str, bytes]:
    """(hwType dotted OID, hwSerialNum octets) of an otherName value."""
    value = HardwareModuleName.load(other_name.value, strict=True)
    return value["hwType"].dotted, value["hwSerialNum"].native


def wrapped_apex_contingency_key(wrapped_public_key: bytes, wrap_algorithm_oid: str = ID_AES256_WRAP) -> x509.UnrecognizedExtension:
    """The Root OCA's contingency public key, wrapped under a key that stays in the HSM."""
    value = WrappedApexContingencyKey({
        "wrapAlgorithm": {"algorithm": wrap_algorithm_oid},
        "wrappedContinPubKey": wrapped_public_key,
    })
    return x509.UnrecognizedExtension(ID_PE_WRAPPED_APEX_CONTIN_KEY, value.dump())
