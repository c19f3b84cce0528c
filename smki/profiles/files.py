"""Reading certificates and times as operators give them: PEM or DER files, ISO 8601 text."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509

from smki.errors import BadInputError


def read_certificate(path: Path) -> x509.Certificate:
    """A certificate from a PEM or DER file; anything else is a one-line BadInputError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
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
