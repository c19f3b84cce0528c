"""Subject and issuer names of the SMKI profiles, with their exact string types."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from asn1crypto import core
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from smki.errors import BadInputError
from smki.identifiers import EUI64, RemotePartyRole

# Attribute short names a policy may use for CA names.
CA_NAME_ATTRIBUTES = {
    "CN": NameOID.COMMON_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "C": NameOID.COUNTRY_NAME,
}
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")


# Unicode categories no certified name may hold: what they do to a displayed name is invisible,
# so a name shown to a person may differ from the name certified. Cc: C0 and C1 controls and
# DEL (NUL ends a C string early); Cf: format characters (bidirectional embeddings, overrides
# and isolates U+202A-U+202E, U+2066-U+2069, marks U+200E/U+200F, zero-width U+200B-U+200D,
# U+2060, U+FEFF, tags U+E0000-U+E007F); Zl, Zp: line and paragraph separators; Cs: lone
# surrogates; Co: private use (shown as whatever a font puts there); Cn: unassigned code points
# and the non-characters U+FDD0-U+FDEF and U+xxFFFE/U+xxFFFF (no meaning; U+FFFE swaps byte order).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
# Characters of other categories that show as nothing or as blank space: the combining grapheme
# joiner, Hangul and Khmer fillers and inherent vowels, the Mongolian vowel separator and free
# variation selectors, the braille blank, and the variation selectors (marks that change how the
# character before them is drawn, so two names that look alike differ in their code points).
INVISIBLE_CHARACTERS = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u2800\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10))) + "".join(map(chr, range(0xE0100, 0xE01F0))))
# ASN.1 string types of X.520 DirectoryString and its relatives, with the codec of each.
STRING_CODECS = {0x0C: "utf-8", 0x12: "ascii", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii", 0x1A: "ascii",
                 0x1C: "utf-32-be", 0x1E: "utf-16-be"}
ATTRIBUTE_NAMES = {"2.5.4.3": "CN", "2.5.4.11": "OU", "2.5.4.10": "O", "2.5.4.6": "C", "2.5.4.45": "uniqueIdentifier"}


def unsafe_characters(text: str) -> list[str]:
    """The code points of `text` no certified name may hold, as U+XXXX, each once, in order."""
    if text.isascii() and text.isprintable():
        return []  # the common case, without a per-character look-up
    found = [f"U+{ord(c):04X}" for c in text if c in INVISIBLE_CHARACTERS or unicodedata.category(c) in UNSAFE_CATEGORIES]
    return list(dict.fromkeys(found))


def string_value(oid: str, tag: int, contents: bytes) -> str | None:
    """An attribute's text, checked: None if it is no string type; BadInputError if it cannot be
    decoded or holds a character no certified name may hold. Used at intake and by lint alike."""
    codec = STRING_CODECS.get(tag)
    if codec is None:
        return None
    name = ATTRIBUTE_NAMES.get(oid, oid)
    try:
        text = contents.decode(codec)
    except UnicodeDecodeError:
        raise BadInputError(f"{name} is not a valid {codec} string (ASN.1 tag {tag:#04x})") from None
    check_name_text(text, name)
    return text


def check_name_text(text: str, name: str) -> None:
    unsafe = unsafe_characters(text)
    if unsafe:
        raise BadInputError(f"{name} holds {', '.join(unsafe)}: control, bidirectional, invisible, private-use, "
                            "unassigned or non-characters are not certified")


def ca_name(attributes: Sequence[tuple[str, str]]) -> x509.Name:
    """A CA name, one PrintableString attribute per RDN in the order given (e.g. OU=00, CN=ZA)."""
    if not attributes:
        raise BadInputError("a CA name needs at least one attribute")
    rdns = []
    for short_name, value in attributes:
        if short_name not in CA_NAME_ATTRIBUTES:
            raise BadInputError(f"CA name attribute {short_name!r} is not one of {', '.join(CA_NAME_ATTRIBUTES)}")
        if not _PRINTABLE.fullmatch(value or ""):
            raise BadInputError(f"CA name {short_name}={value!r} is not a PrintableString")
        rdns.append(x509.NameAttribute(CA_NAME_ATTRIBUTES[short_name], value, _ASN1Type.PrintableString))
    return x509.Name(rdns)


def organisation_subject(role: RemotePartyRole, entity_id: EUI64, common_name: str | None = None) -> x509.Name:
    """CN (UTF8String, optional), OU (UTF8String role code), uniqueIdentifier (BIT STRING EUI-64)."""
    rdns = []
    if common_name is not None:
        if not common_name or len(common_name) > 64:
            raise BadInputError(f"organisation common name {common_name!r} must be 1 to 64 characters")
        check_name_text(common_name, "organisation common name")
        rdns.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name, _ASN1Type.UTF8String))
    rdns.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.ou, _ASN1Type.UTF8String))
    # cryptography takes a BIT STRING's contents: the unused-bits octet (0) then the bits.
    rdns.append(x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00" + entity_id.octets, _ASN1Type.BitString))
    return x509.Name(rdns)


EMPTY_NAME = x509.Name([])


class RawAttributeTypeAndValue(core.Sequence):
    """X.501 AttributeTypeAndValue with the value kept raw, so its exact ASN.1 type can be checked."""

    _fields = [("type", core.ObjectIdentifier), ("value", core.Any)]


class RawRelativeDistinguishedName(core.SetOf):
    _child_spec = RawAttributeTypeAndValue


class RawRdnSequence(core.SequenceOf):
    """A Name read without interpreting attribute values (a wrong string type is seen, not refused)."""

    _child_spec = RawRelativeDistinguishedName


def raw_attributes(name_der: bytes) -> list[list[tuple[str, int, bytes]]]:
    """Per RDN: (type OID, identifier octet, contents) of each attribute, in encoded order."""
    rdns = []
    for rdn in RawRdnSequence.load(name_der):
        attributes = []
        for attribute in rdn:
            raw = attribute["value"].dump()
            attributes.append((attribute["type"].dotted, raw[0], core.Asn1Value.load(raw).contents))
        rdns.append(attributes)
    return rdns
