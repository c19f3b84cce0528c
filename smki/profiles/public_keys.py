"""Subject public keys: P-256, uncompressed point, nothing else (GBCS section 12)."""

from __future__ import annotations

from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from smki.errors import BadInputError

P256_OID = "1.2.840.10045.3.1.7"
UNCOMPRESSED_POINT_SIZE = 65


def check_subject_public_key_info(spki_der: bytes, where: str = "public key") -> ec.EllipticCurvePublicKey:
    """Parse a DER SubjectPublicKeyInfo, requiring id-ecPublicKey, P-256 and an uncompressed point."""
    try:
        info = asn1_keys.PublicKeyInfo.load(spki_der, strict=True)
        algorithm = info["algorithm"]["algorithm"].dotted
        parameters = info["algorithm"]["parameters"]
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{where}: not a DER SubjectPublicKeyInfo ({exc})") from None
    if algorithm != "1.2.840.10045.2.1":
        raise BadInputError(f"{where}: key algorithm {algorithm} is not id-ecPublicKey (only P-256 EC keys are allowed)")
    curve = parameters.chosen.dotted if parameters.name == "named" else parameters.name
    if curve != P256_OID:
        raise BadInputError(f"{where}: curve {curve} is not P-256 ({P256_OID})")
    point = info["public_key"].contents[1:]  # skip the BIT STRING's unused-bits octet
    if len(point) != UNCOMPRESSED_POINT_SIZE or point[0] != 0x04:
        raise BadInputError(f"{where}: the EC point is not uncompressed (04||X||Y, 65 bytes)")
    try:
        return load_der_public_key(spki_der)
    except ValueError as exc:
        raise BadInputError(f"{where}: invalid P-256 point ({exc})") from None


def check_public_key(public_key: object, where: str = "public key") -> ec.EllipticCurvePublicKey:
    """A cryptography key object must be a P-256 EC public key."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise BadInputError(f"{where}: not a P-256 EC public key")
    return public_key
