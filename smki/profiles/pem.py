"""Exactly one object from a PEM or DER file: the one strict reader for CSRs, certificates, CRLs and public keys.

A file that holds a second object, text after the armour, or bytes after the DER is refused:
a reader that takes "the first one" certifies or trusts something other than what was
reviewed. Bundles (several PEM blocks, e.g. for `smki lint`) go through `pem_blocks`, which
allows only whitespace between the blocks.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re

from smki.errors import BadInputError


class PemLabel(bytes, enum.Enum):
    CERTIFICATE = b"CERTIFICATE"
    CRL = b"X509 CRL"
    CSR = b"CERTIFICATE REQUEST"
    NEW_CSR = b"NEW CERTIFICATE REQUEST"  # the older spelling, still sent by some tools
    PUBLIC_KEY = b"PUBLIC KEY"


# Base64 holds no "-", so a body never runs on into the next block's armour.
_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \1-----")
_WHITESPACE = b" \t\r\n"


def der_object(data: bytes, what: str) -> bytes:
    """`data`, refused if bytes follow its first DER TLV. A truncated or malformed TLV is left to
    the object's own parser, which says best what is wrong."""
    end = _tlv_end(data)
    if end is not None and end < len(data):
        raise _refused(what, f"{len(data) - end} byte(s) after the DER object")
    return data


def _tlv_end(data: bytes) -> int | None:
    """Where the TLV at the start of `data` ends (definite lengths only, as DER requires)."""
    if len(data) < 2:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    size = first & 0x7F
    if size == 0 or size > 8 or len(data) < 2 + size:
        return None  # 0x80 is the indefinite length, which DER forbids
    return 2 + size + int.from_bytes(data[2:2 + size], "big")


def pem_blocks(data: bytes, what: str, labels: tuple[bytes, ...] | None = None) -> list[tuple[bytes, bytes]]:
    """(label, DER) of every PEM block, each labelled one of `labels` (if given); anything but
    whitespace outside the blocks is refused."""
    blocks, position = [], 0
    for match in _BLOCK.finditer(data):
        _refuse_text(data[position:match.start()], what, "between PEM blocks" if blocks else "before the PEM block")
        if labels is not None and match[1] not in labels:
            expected = " or ".join(label.decode() for label in labels)
            raise _refused(what, f"PEM armour is {match[1][:40].decode()}, not {expected}")
        try:
            der = base64.b64decode(b"".join(match[2].split()), validate=True)
        except binascii.Error:
            raise _refused(what, f"PEM block {len(blocks) + 1} has invalid Base64") from None
        blocks.append((match[1], der_object(der, f"{what + ': ' if what else ''}PEM block {len(blocks) + 1}")))
        position = match.end()
    if not blocks:
        raise _refused(what, "PEM armour is incomplete or malformed" if b"-----" in data else "neither DER nor PEM")
    _refuse_text(data[position:], what, "after the PEM block")
    return blocks


def _refuse_text(text: bytes, what: str, where: str) -> None:
    if text.strip(_WHITESPACE):
        raise _refused(what, f"text {where} (a file holds exactly the object, nothing else)")


def _refused(what: str, problem: str) -> BadInputError:
    """`what: problem`, or the problem alone when the caller names the file itself."""
    return BadInputError(f"{what}: {problem}" if what else problem)


def single_object(data: bytes, labels: tuple[PemLabel, ...], what: str) -> bytes:
    """The DER of the one object in `data`: DER with nothing after it, or exactly one PEM block
    with one of `labels` and only whitespace around it."""
    if data[:1] == b"\x30":
        return der_object(data, what)
    blocks = pem_blocks(data, what, labels)
    if len(blocks) != 1:
        raise _refused(what, f"holds {len(blocks)} PEM blocks; exactly one is expected")
    return blocks[0][1]


def pem_armour(der: bytes, label: PemLabel) -> bytes:
    """`der` in PEM armour (64 characters a line, as OpenSSL writes it), without parsing it again:
    a parsed million-entry CRL costs seconds to re-encode."""
    body = base64.b64encode(der)
    lines = b"\n".join(body[start:start + 64] for start in range(0, len(body), 64))
    return b"-----BEGIN " + label.value + b"-----\n" + lines + b"\n-----END " + label.value + b"-----\n"
