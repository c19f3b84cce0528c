"""PKCS#10 intake encodings accepted by the SMKI interface.

Base64 DER with `BEGIN CERTIFICATE REQUEST` or `BEGIN NEW CERTIFICATE REQUEST` armour, or
bare Base64 (one line, or wrapped at 64 or 76 characters, LF or CRLF), or plain DER. Exactly one
request: a second armour block, text around the armour or bytes after the DER are refused.
"""

from __future__ import annotations

import base64
import binascii
import re

from smki.errors import BadInputError
from smki.files import MAX_CSR_BYTES
from smki.profiles.pem import PemLabel, der_object, single_object
from smki.requests.outcomes import Outcome, RequestRejected

_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/=]*")
MAX_REQUEST_SIZE = MAX_CSR_BYTES  # an SMKI CSR is under 1 KiB; anything far larger is not one


def decode_request(data: bytes, where: str = "") -> bytes:
    """The DER of a CSR given in any accepted encoding."""
    if len(data) > MAX_REQUEST_SIZE:
        raise RequestRejected(Outcome.NOT_DECODABLE, f"request is {len(data)} bytes, over the {MAX_REQUEST_SIZE}-byte limit", where)
    if data[:1] == b"\x30":
        return _one_object(data, where)
    fast = _plain_armour(data)
    if fast is not None:
        return _whole(fast, where)
    if b"-----" in data:  # armour: exactly one block, nothing but whitespace around it
        return _one_object(data, where)
    lines = [line.strip() for line in data.replace(b"\r\n", b"\n").split(b"\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise RequestRejected(Outcome.NOT_DECODABLE, "request is empty", where)
    if not all(_BASE64_LINE.fullmatch(line) for line in lines):
        raise RequestRejected(Outcome.NOT_DECODABLE, "request is neither DER nor Base64", where)
    try:
        der = base64.b64decode(b"".join(lines), validate=True)
    except binascii.Error:
        raise RequestRejected(Outcome.NOT_DECODABLE, "request has invalid Base64", where) from None
    if der[:1] != b"\x30":
        raise RequestRejected(Outcome.NOT_PKCS10, "decoded request is not a DER SEQUENCE", where)
    return _whole(der, where)


def _one_object(data: bytes, where: str) -> bytes:
    try:
        return single_object(data, (PemLabel.CSR, PemLabel.NEW_CSR), "request")
    except BadInputError as exc:
        raise RequestRejected(Outcome.NOT_DECODABLE, str(exc).removeprefix("request: "), where) from None


def _whole(der: bytes, where: str) -> bytes:
    """Decoded Base64 that is exactly one DER object (a header check: cheap enough for batches)."""
    try:
        return der_object(der, "request")
    except BadInputError as exc:
        raise RequestRejected(Outcome.NOT_DECODABLE, str(exc).removeprefix("request: "), where) from None


_BEGIN, _END = b"-----BEGIN CERTIFICATE REQUEST-----", b"-----END CERTIFICATE REQUEST-----"


def _plain_armour(data: bytes) -> bytes | None:
    """The common case, cheaply: standard armour around lines of Base64 only, LF or CRLF.
    Anything else (other armour, stray spaces, text around it) answers None: the general path decides."""
    text = data.rstrip(b"\r\n")
    if not (text.startswith(_BEGIN) and text.endswith(_END)):
        return None
    body = text[len(_BEGIN):-len(_END)].replace(b"\r\n", b"\n").replace(b"\n", b"")
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error:
        return None
    return der if der[:1] == b"\x30" else None
