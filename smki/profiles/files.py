"""Reading certificates, CRLs, public keys and times as operators give them: PEM or DER files, ISO 8601 text."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from smki.errors import BadInputError
from smki.files import MAX_CERTIFICATE_BYTES, MAX_PUBLIC_KEY_BYTES, read_input
from smki.profiles.pem import PemLabel, single_object
from smki.profiles.public_keys import check_subject_public_key_info
from smki.profiles.unique_extensions import repeated_certificate_extension, repeated_crl_extension


def read_certificate(path: Path) -> x509.Certificate:
    """A certificate from a PEM or DER file; anything else is a one-line BadInputError naming the file."""
    der = single_object(read_input(path, MAX_CERTIFICATE_BYTES), (PemLabel.CERTIFICATE,), str(path))
    return load_certificate(der, str(path))


def load_certificate(der: bytes, where: str, not_one: str = "not a PEM or DER certificate") -> x509.Certificate:
    """The certificate in `der`; BadInputError (`where: not_one`) if it is none, or if it repeats an
    extension: cryptography would raise DuplicateExtension later, wherever `.extensions` is first read."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise BadInputError(_located(where, not_one)) from None
    _refuse_repeated(repeated_certificate_extension(der), where)
    return certificate


def load_crl(der: bytes, where: str, not_one: str = "not a PEM or DER CRL") -> x509.CertificateRevocationList:
    """The CRL in `der`, refused as `load_certificate` refuses a certificate; the extensions of
    every entry are checked too, in one walk of the DER (no object per entry)."""
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError:
        raise BadInputError(_located(where, not_one)) from None
    _refuse_repeated(repeated_crl_extension(der), where)
    return crl


def _refuse_repeated(repeated: str | None, where: str) -> None:
    if repeated:
        raise BadInputError(_located(where, repeated))


def _located(where: str, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


def read_public_key(path: Path):
    """A subject public key from a PEM or DER SubjectPublicKeyInfo file: P-256, uncompressed, or refused."""
    der = single_object(read_input(path, MAX_PUBLIC_KEY_BYTES), (PemLabel.PUBLIC_KEY,), str(path))
    return check_subject_public_key_info(der, str(path))
