"""Each extension at most once: in a certificate's extensions, a CRL's crlExtensions and each
CRL entry's crlEntryExtensions (RFC 5280 4.2: "A certificate MUST NOT include more than one
instance of a particular extension"; 5.2 and 5.3 inherit it).

Parsers differ on a repeated extension: cryptography raises DuplicateExtension only when
`.extensions` is first read (deep inside a command, as an internal error), asn1crypto and others
take one copy or the other. What one check reads might not be what another acts on, so the strict
readers (smki.profiles.files) refuse such a file and lint reports it.

The DER is walked once without building objects: under a microsecond an entry (about 0.1 s for a
100,000-entry CRL, 0.9 s for a million), against several seconds for parsing the list. Call it on DER a parser has already accepted (cryptography, or asn1crypto
with strict=True): the walk trusts the structure it finds, and a structure it does not recognise
answers None (no repetition seen) rather than guess.
"""

from __future__ import annotations

from asn1crypto import core

_SEQUENCE, _EXPLICIT_0, _EXPLICIT_3 = 0x30, 0xA0, 0xA3
# RFC 5280's names of the extensions SMKI certificates and CRLs carry, for the message.
_NAMES = {"2.5.29.14": "subjectKeyIdentifier", "2.5.29.15": "keyUsage", "2.5.29.17": "subjectAltName", "2.5.29.19": "basicConstraints",
          "2.5.29.32": "certificatePolicies", "2.5.29.35": "authorityKeyIdentifier", "2.5.29.20": "cRLNumber", "2.5.29.21": "reasonCode",
          "2.5.29.24": "invalidityDate", "2.5.29.27": "deltaCRLIndicator", "2.5.29.28": "issuingDistributionPoint"}


class _Unrecognised(Exception):
    """The DER is not shaped as expected: leave it to the object's own parser."""


def repeated_certificate_extension(der: bytes) -> str | None:
    """What is repeated in a DER certificate's extensions, as one line; None if nothing is."""
    try:
        tbs = _sequence_contents(der, *_sequence_contents(der, 0, len(der)))
        for tag, start, end in _children(der, *tbs):
            if tag == _EXPLICIT_3:
                oid = _repeated_oid(der, *_sequence_contents(der, start, end))
                return _message(oid, "the certificate's extensions") if oid else None
    except (_Unrecognised, IndexError, ValueError):  # not the shape expected: the parser's to judge
        pass
    return None


def repeated_crl_extension(der: bytes) -> str | None:
    """What is repeated in a DER CRL's crlExtensions or in one of its entries' crlEntryExtensions,
    as one line; None if nothing is."""
    try:
        tbs = _sequence_contents(der, *_sequence_contents(der, 0, len(der)))
        sequences = 0
        for tag, start, end in _children(der, *tbs):
            if tag == _SEQUENCE:
                sequences += 1  # signature, issuer, then revokedCertificates (the version is an INTEGER)
                if sequences == 3:
                    found = _repeated_in_entries(der, start, end)
                    if found:
                        return found
            elif tag == _EXPLICIT_0:
                oid = _repeated_oid(der, *_sequence_contents(der, start, end))
                if oid:
                    return _message(oid, "the crlExtensions")
    except (_Unrecognised, IndexError, ValueError):  # not the shape expected: the parser's to judge
        pass
    return None


def _repeated_in_entries(der: bytes, position: int, end: int) -> str | None:
    """The revokedCertificates loop, the hot one: each entry is SEQUENCE {serial, time, extensions?}
    and nearly always short (all lengths one octet), so its layout is read with a few indexings; an
    entry with a single extension (reasonCode) cannot repeat one."""
    while position < end:
        entry = position
        if der[entry + 1] < 0x80 and der[entry + 3] < 0x80:
            entry_end = entry + 2 + der[entry + 1]
            time = entry + 4 + der[entry + 3]
            extensions = time + 2 + der[time + 1]  # a UTCTime or GeneralizedTime is always short
        else:  # a long entry or serial: the general header reading
            _, contents, entry_end = _header(der, entry, end)
            time = _header(der, contents, entry_end)[2]
            extensions = _header(der, time, entry_end)[2]
        if extensions < entry_end:
            _, first, list_end = _header(der, extensions, entry_end)
            if _header(der, first, list_end)[2] < list_end:  # more than one extension
                oid = _repeated_oid(der, first, list_end)
                if oid:
                    return _message(oid, f"the crlEntryExtensions of entry {_entry_serial(der, entry, entry_end)}")
        position = entry_end
    return None


def _repeated_oid(der: bytes, start: int, end: int) -> bytes | None:
    """The encoded extnID that a list of Extension SEQUENCEs holds more than once, if any."""
    seen = set()
    for _, contents, extension_end in _children(der, start, end):
        oid = der[contents:_header(der, contents, extension_end)[2]]
        if oid in seen:
            return oid
        seen.add(oid)
    return None


def _entry_serial(der: bytes, entry: int, entry_end: int) -> str:
    _, contents, _ = _header(der, entry, entry_end)
    _, start, end = _header(der, contents, entry_end)
    return der[start:end].hex().upper()  # the serial's octets, as the repository shows serials


def _message(oid: bytes, where: str) -> str:
    dotted = core.ObjectIdentifier.load(oid).dotted
    name = _NAMES.get(dotted)
    return (f"extension {dotted}{f' ({name})' if name else ''} appears more than once in {where} "
            "(RFC 5280: at most one instance of each extension)")


def _header(der: bytes, position: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end) of the TLV at `position`, which must end by `end`."""
    tag, first = der[position], der[position + 1]
    if first < 0x80:
        start, length = position + 2, first
    else:
        size = first & 0x7F
        if not 0 < size <= 4:
            raise _Unrecognised
        start = position + 2 + size
        length = int.from_bytes(der[position + 2:start], "big")
    if start + length > end:
        raise _Unrecognised
    return tag, start, start + length


def _children(der: bytes, start: int, end: int):
    while start < end:
        tag, contents, child_end = _header(der, start, end)
        yield tag, contents, child_end
        start = child_end


def _sequence_contents(der: bytes, start: int, end: int) -> tuple[int, int]:
    """(start, end) of the contents of the TLV at `start`, which must be a SEQUENCE."""
    tag, contents, child_end = _header(der, start, end)
    if tag != _SEQUENCE:
        raise _Unrecognised
    return contents, child_end
