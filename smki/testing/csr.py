"""Build SMKI PKCS#10 requests, correct or deliberately broken, signed by the subject key.

asn1crypto is used (not cryptography's builder) so that a test can place exactly the bytes
it wants: compressed points, OCTET STRING identifiers, extra attributes, wrong versions.
`organisation_csr` and `device_csr` make valid requests; the lower functions build odd ones.
"""

from __future__ import annotations

from asn1crypto import core, csr as asn1_csr, keys as asn1_keys, x509 as asn1_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

UTF8, PRINTABLE, BIT_STRING, OCTET_STRING = 0x0C, 0x13, 0x03, 0x04
HW_TYPE = "1.2.826.0.1.8641679.1.2.2.1"


def tlv(tag: int, contents: bytes) -> bytes:
    length = len(contents)
    encoded = bytes([length]) if length < 0x80 else bytes([0x80 | ((length.bit_length() + 7) // 8)]) + length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag]) + encoded + contents


def name(*attributes: tuple[str, int, bytes]) -> bytes:
    """A Name: one RDN per (oid, value tag, value contents)."""
    rdns = b"".join(tlv(0x31, tlv(0x30, core.ObjectIdentifier(oid).dump() + tlv(tag, value))) for oid, tag, value in attributes)
    return tlv(0x30, rdns)


def org_subject(role="02", eui64="90B3D51F30010000", common_name: str | None = "GITTESTSUPPLIER", uid_tag=BIT_STRING, extra=()):
    attributes = [("2.5.4.3", UTF8, common_name.encode())] if common_name else []
    uid = (b"\x00" if uid_tag == BIT_STRING else b"") + bytes.fromhex(eui64)
    attributes += [("2.5.4.11", UTF8, role.encode()), ("2.5.4.45", uid_tag, uid), *extra]
    return name(*attributes)


def key_usage(*bits: str) -> tuple[str, bool, bytes]:
    value = asn1_x509.KeyUsage(set(bits)).dump()
    return ("2.5.29.15", True, value)


def hardware_module_name_san(eui64="00DB1234567890A0", hw_type=HW_TYPE) -> tuple[str, bool, bytes]:
    hmn = tlv(0x30, core.ObjectIdentifier(hw_type).dump() + core.OctetString(bytes.fromhex(eui64)).dump())
    other_name = tlv(0xA0, core.ObjectIdentifier("1.3.6.1.5.5.7.8.4").dump() + tlv(0xA0, hmn))
    return ("2.5.29.17", True, tlv(0x30, other_name))


def spki(key, point_format=PublicFormat.UncompressedPoint) -> bytes:
    info = asn1_keys.PublicKeyInfo.load(key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return info.dump()
    point = key.public_key().public_bytes(Encoding.X962, point_format)
    return asn1_keys.PublicKeyInfo({"algorithm": info["algorithm"], "public_key": point}).dump()


def build_csr(key, subject: bytes, extensions, *, public_key_info: bytes | None = None, version: int = 0,
              corrupt_signature: bool = False, algorithm: str = "1.2.840.10045.4.3.2") -> bytes:
    extension_list = b"".join(tlv(0x30, core.ObjectIdentifier(oid).dump() + (b"\x01\x01\xff" if critical else b"") + core.OctetString(value).dump())
                              for oid, critical, value in extensions)
    attribute = tlv(0x30, core.ObjectIdentifier("1.2.840.113549.1.9.14").dump() + tlv(0x31, tlv(0x30, extension_list)))
    info = tlv(0x30, core.Integer(version).dump() + subject + (public_key_info or spki(key)) + tlv(0xA0, attribute))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    else:
        from cryptography.hazmat.primitives.asymmetric import padding
        signature = key.sign(info, padding.PKCS1v15(), hashes.SHA256())
    if corrupt_signature:
        signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
    algorithm_identifier = tlv(0x30, core.ObjectIdentifier(algorithm).dump())
    der = tlv(0x30, info + algorithm_identifier + core.BitString.load(tlv(0x03, b"\x00" + signature)).dump())
    asn1_csr.CertificationRequest.load(der)  # sanity: well-formed DER
    return der


def organisation_csr(key=None, usage="digital_signature", **subject):
    key = key or ec.generate_private_key(ec.SECP256R1())
    return build_csr(key, org_subject(**subject), [key_usage(usage)])


def device_csr(key=None, usage="key_agreement", eui64="00DB1234567890A0"):
    key = key or ec.generate_private_key(ec.SECP256R1())
    return build_csr(key, b"\x30\x00", [key_usage(usage), hardware_module_name_san(eui64)])
