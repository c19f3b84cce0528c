"""The Root Authority's own checks, written once for its ceremonies and for `RootAuthority`:
the key an Issuing Authority hands over (a public key, or a PKCS#10 request whose proof of
possession is checked), and the revocations a root may make."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from smki.errors import BadInputError, ConflictError
from smki.files import MAX_CSR_BYTES, read_input
from smki.profiles.files import read_public_key
from smki.profiles.pem import PemLabel, single_object
from smki.profiles.public_keys import check_public_key, check_subject_public_key_info
from smki.store.certificates import CertificateRecord, find_certificate

REQUEST_LABELS = (PemLabel.CSR, PemLabel.NEW_CSR)

# What an Issuing Authority may hand a root to certify: its key, or its PKCS#10 request (in a file or as bytes).
IssuingAuthorityKey = ec.EllipticCurvePublicKey | x509.CertificateSigningRequest | bytes | Path | str


def requested_public_key(request: x509.CertificateSigningRequest | bytes, where: str) -> ec.EllipticCurvePublicKey:
    """The key of a PKCS#10 request (PEM or DER), refused unless its signature verifies (proof of possession)."""
    if not isinstance(request, x509.CertificateSigningRequest):
        der = single_object(request, REQUEST_LABELS, where)
        try:
            request = x509.load_der_x509_csr(der)
        except ValueError:
            raise BadInputError(f"{where}: not a PEM or DER PKCS#10 request") from None
    if not request.is_signature_valid:
        raise BadInputError(f"{where}: the request's signature does not verify (no proof of possession)")
    return check_public_key(request.public_key(), where)


def request_file_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """The key of the PKCS#10 request in `path` (a ceremony's subject_csr)."""
    return requested_public_key(read_input(path, MAX_CSR_BYTES), str(path))


def issuing_authority_key(source: IssuingAuthorityKey) -> ec.EllipticCurvePublicKey:
    """The P-256 key an Issuing Authority hands over: a key object, a request object, or a file
    (or bytes) holding either a SubjectPublicKeyInfo or a PKCS#10 request, told apart by content."""
    if isinstance(source, ec.EllipticCurvePublicKey):
        return check_public_key(source, "the Issuing Authority's public key")
    if isinstance(source, x509.CertificateSigningRequest):
        return requested_public_key(source, "the Issuing Authority's request")
    if isinstance(source, (str, Path)):
        path = Path(source)
        data = read_input(path, MAX_CSR_BYTES)
        return requested_public_key(data, str(path)) if _is_request(data) else read_public_key(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if _is_request(data):
            return requested_public_key(data, "the Issuing Authority's request")
        return check_subject_public_key_info(single_object(data, (PemLabel.PUBLIC_KEY,), "the Issuing Authority's public key"),
                                             "the Issuing Authority's public key")
    raise BadInputError(f"cannot certify a {type(source).__name__}: give a P-256 public key or a PKCS#10 request")


def _is_request(data: bytes) -> bool:
    """A PKCS#10 request, PEM (by its label) or DER (by parsing); anything else is taken for a public key."""
    if data[:1] != b"\x30":
        return any(b"-----BEGIN " + label.value + b"-----" in data for label in REQUEST_LABELS)
    try:
        x509.load_der_x509_csr(data)
    except ValueError:
        return False
    return True


def revocable_record(connection, root_key_id: str, serial: str, *, where: str | None = None, remedy: str = "") -> CertificateRecord:
    """The record of a certificate this root issued and has not revoked: refused (exit 3) for a serial
    the root never issued, (exit 5) for one already revoked. `where` prefixes the message (a ceremony
    names the certificate file), `remedy` ends the already-revoked one."""
    prefix = f"{where}: " if where else ""
    records = [record for record in find_certificate(connection, serial) if record.issuer_key_id == root_key_id]
    if not records:
        raise BadInputError(f"{prefix}this root has no record of issuing serial {serial}")
    if records[0].status == "R":
        raise ConflictError(f"{prefix}serial {serial} is already revoked{remedy}")
    return records[0]
