"""Reading certificates, public keys and times as operators give them: PEM or DER files, ISO 8601 text."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509

from smki.errors import BadInputError
from smki.files import read_input
from smki.profiles.public_keys import check_subject_public_key_info


def read_certificate(path: Path) -> x509.Certificate:
    """A certificate from a PEM or DER file; anything else is a one-line BadInputError naming the file."""
    data = read_input(path)
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise BadInputError(f"{path}: not a PEM or DER certificate") from None


def parse_utc(text: str, where: str) -> datetime:
    """An ISO 8601 date or date-time, taken as UTC when it has no offset."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInputError(f"{where}: {text!r} is not an ISO 8601 date or date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def read_public_key(path: Path):
    """A subject public key from a PEM or DER SubjectPublicKeyInfo file: P-256, uncompressed, or refused."""
    data = read_input(path)
    if data.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----"):
        # Decode the armour ourselves: the raw DER must be checked (a compressed point is refused).
        body = b"".join(line for line in data.strip().splitlines() if not line.startswith(b"-----"))
        try:
            data = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise BadInputError(f"{path}: PEM public key has invalid Base64") from None
    return check_subject_public_key_info(data, str(path))
