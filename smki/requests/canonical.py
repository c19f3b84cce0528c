"""The fast path for device requests in their canonical DER shape.

A batch of 50,000 device CSRs spends most of its time decoding them, and almost all of them
have one shape: version 0, an empty subject, a P-256 uncompressed key, exactly the keyUsage
and subjectAltName extension requests, ecdsa-with-SHA256. `canonical_fields` recognises that
shape byte for byte (minimal DER lengths, no trailing bytes, no other attribute) and checks
the signature; it answers None for anything else, and the full parser in `csr` then decides.
So this path may only ever accept less than the full parser, never more.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from smki.profiles.der import ECDSA_WITH_SHA256_ALGORITHM, P256_SPKI_PREFIX

EXTENSION_REQUEST_OID = bytes.fromhex("06092a864886f70d01090e")
KEY_USAGE_OID, SUBJECT_ALT_NAME_OID = bytes.fromhex("0603551d0f"), bytes.fromhex("0603551d11")
HARDWARE_MODULE_NAME_OID = bytes.fromhex("06082b06010505070804")  # id-on-hardwareModuleName
CRITICAL = bytes.fromhex("0101ff")
# keyUsage BIT STRING values in DER (trailing zero bits counted as unused).
KEY_USAGE_VALUES = {bytes.fromhex("03020780"): "DS", bytes.fromhex("03020308"): "KA"}
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True)
class CanonicalDeviceFields:
    public_key: ec.EllipticCurvePublicKey
    point: bytes  # 65 octets, 04 || X || Y
    hw_type_oid: str
    hw_serial: bytes
    key_usage: str  # DS or KA
    request_sha256: str


class _NotCanonical(Exception):
    pass


def _element(data: bytes, position: int, tag: int) -> tuple[int, int]:
    """(start, end) of the contents of the DER element of `tag` at `position`; minimal lengths only."""
    if position + 2 > len(data) or data[position] != tag:
        raise _NotCanonical
    first = data[position + 1]
    if first < 0x80:
        start, size = position + 2, first
    elif first == 0x81 and position + 3 <= len(data) and data[position + 2] >= 0x80:
        start, size = position + 3, data[position + 2]
    elif first == 0x82 and position + 4 <= len(data) and data[position + 2] != 0:
        start, size = position + 4, int.from_bytes(data[position + 2:position + 4], "big")
    else:
        raise _NotCanonical
    if start + size > len(data):
        raise _NotCanonical
    return start, start + size


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, element start, contents start, contents end) for each element in data[start:end]."""
    found, position = [], start
    while position < end:
        tag = data[position]
        contents_start, contents_end = _element(data, position, tag)
        found.append((tag, position, contents_start, contents_end))
        position = contents_end
    if position != end:
        raise _NotCanonical
    return found


_OID_NAMES: dict[bytes, str] = {}


def _dotted(oid_contents: bytes) -> str:
    """Dotted form of an OID's contents octets (cached: a batch has one or two hwTypes)."""
    name = _OID_NAMES.get(oid_contents)
    if name is None:
        arcs, value = [], 0
        for octet in oid_contents:
            value = (value << 7) | (octet & 0x7F)
            if not octet & 0x80:
                arcs.append(value)
                value = 0
        if not arcs or oid_contents[-1] & 0x80 or oid_contents[0] == 0x80:
            raise _NotCanonical
        first = min(arcs[0] // 40, 2)
        name = ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))
        _OID_NAMES[oid_contents] = name
    return name


def _hardware_module_name(der: bytes, value_start: int, value_end: int) -> tuple[str, int]:
    """subjectAltName holding exactly one otherName HardwareModuleName: (hwType, offset of the 8-octet hwSerialNum)."""
    start, end = _element(der, value_start, 0x30)
    if end != value_end:
        raise _NotCanonical
    other_start, other_end = _element(der, start, 0xA0)
    if other_end != end or der[other_start:other_start + len(HARDWARE_MODULE_NAME_OID)] != HARDWARE_MODULE_NAME_OID:
        raise _NotCanonical
    wrapped_start, wrapped_end = _element(der, other_start + len(HARDWARE_MODULE_NAME_OID), 0xA0)
    if wrapped_end != other_end:
        raise _NotCanonical
    name_start, name_end = _element(der, wrapped_start, 0x30)
    if name_end != wrapped_end:
        raise _NotCanonical
    (oid_tag, _, oid_start, oid_end), (serial_tag, _, serial_start, serial_end) = _two(_children(der, name_start, name_end))
    if oid_tag != 0x06 or serial_tag != 0x04 or serial_end - serial_start != 8:
        raise _NotCanonical
    return _dotted(der[oid_start:oid_end]), serial_start


def _two(items: list) -> list:
    if len(items) != 2:
        raise _NotCanonical
    return items


def _extensions(der: bytes, start: int, end: int) -> tuple[int, str, int]:
    """The extension request: keyUsage and subjectAltName, once each, in either order.
    Returns (offset of the keyUsage value, hwType, offset of hwSerialNum)."""
    attribute_start, attribute_end = _element(der, start, 0x30)
    if attribute_end != end or der[attribute_start:attribute_start + len(EXTENSION_REQUEST_OID)] != EXTENSION_REQUEST_OID:
        raise _NotCanonical
    set_start, set_end = _element(der, attribute_start + len(EXTENSION_REQUEST_OID), 0x31)
    list_start, list_end = _element(der, set_start, 0x30)
    if set_end != attribute_end or list_end != set_end:
        raise _NotCanonical
    values: dict[bytes, tuple[int, int]] = {}
    for tag, _, ext_start, ext_end in _children(der, list_start, list_end):
        if tag != 0x30:
            raise _NotCanonical
        oid = der[ext_start:ext_start + 5]
        position = ext_start + 5
        if der[position:position + 3] == CRITICAL:
            position += 3
        value_start, value_end = _element(der, position, 0x04)
        if value_end != ext_end or oid not in (KEY_USAGE_OID, SUBJECT_ALT_NAME_OID) or oid in values:
            raise _NotCanonical
        values[oid] = (value_start, value_end)
    if len(values) != 2:
        raise _NotCanonical
    usage_start, usage_end = values[KEY_USAGE_OID]
    if der[usage_start:usage_end] not in KEY_USAGE_VALUES:
        raise _NotCanonical
    return (usage_start, *_hardware_module_name(der, *values[SUBJECT_ALT_NAME_OID]))


@dataclass(frozen=True)
class _Layout:
    """The byte layout of one accepted request: a later request that equals it everywhere but in
    the holes (the point, the key usage value, the hwSerialNum) and in its signature has the same
    structure, so only the holes and the signature need looking at. Learnt from requests the
    walker accepted; a batch from one manufacturer has one or two layouts."""

    skeleton: bytes  # the accepted request up to the end of its CertificationRequestInfo
    header_length: int  # of the outer SEQUENCE
    fixed: tuple[tuple[int, int], ...]  # ranges outside the holes
    point: int
    usage: int
    serial: int
    hw_type_oid: str

    @classmethod
    def learn(cls, der: bytes, info_end: int, point: int, usage: int, serial: int, hw_type_oid: str) -> "_Layout":
        holes = sorted(((point, point + 65), (usage, usage + 4), (serial, serial + 8)))
        # Tag and length form of the outer SEQUENCE are fixed; its length is checked on its own.
        header_length = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
        fixed, cursor = [(0, 2)], header_length
        for hole_start, hole_end in holes:
            fixed.append((cursor, hole_start))
            cursor = hole_end
        fixed.append((cursor, info_end))
        return cls(der[:info_end], header_length, tuple(fixed), point, usage, serial, hw_type_oid)

    def match(self, der: bytes) -> tuple[bytes, bytes] | None:
        """(CertificationRequestInfo DER, signature DER) of a request of this layout, or None."""
        skeleton, size = self.skeleton, len(der)
        for start, end in self.fixed:
            if der[start:end] != skeleton[start:end]:
                return None
        outer_length = int.from_bytes(der[2:self.header_length], "big") if self.header_length > 2 else der[1]
        if outer_length != size - self.header_length or (self.header_length == 3 and outer_length < 0x80) or \
                (self.header_length == 4 and outer_length < 0x100):
            return None
        tail = len(skeleton)
        if der[tail:tail + 12] != ECDSA_WITH_SHA256_ALGORITHM or der[tail + 12:tail + 13] != b"\x03" or \
                der[tail + 13] != size - tail - 14 or der[tail + 14] != 0 or der[self.point] != 0x04 or \
                der[self.usage:self.usage + 4] not in KEY_USAGE_VALUES:
            return None
        return der[self.header_length:tail], der[tail + 15:]


_LAYOUTS: list[_Layout] = []
_MAX_LAYOUTS = 16


def _walk(der: bytes) -> tuple[bytes, bytes, _Layout] | None:
    """The full canonical walk: (info DER, signature DER, the request's layout), or None."""
    try:
        outer_start, outer_end = _element(der, 0, 0x30)
        if outer_end != len(der):
            return None
        parts = _children(der, outer_start, outer_end)
        if len(parts) != 3:
            return None
        info_tag, info_position, info_start, info_end = parts[0]
        if info_tag != 0x30 or der[parts[1][1]:parts[1][3]] != ECDSA_WITH_SHA256_ALGORITHM or parts[2][0] != 0x03:
            return None
        signature_start, signature_end = parts[2][2], parts[2][3]
        if der[signature_start] != 0:
            return None
        fields = _children(der, info_start, info_end)
        if len(fields) != 4 or der[fields[0][1]:fields[0][3]] != b"\x02\x01\x00" or der[fields[1][1]:fields[1][3]] != b"\x30\x00":
            return None
        spki = der[fields[2][1]:fields[2][3]]
        if len(spki) != len(P256_SPKI_PREFIX) + 65 or not spki.startswith(P256_SPKI_PREFIX) or spki[len(P256_SPKI_PREFIX)] != 0x04:
            return None
        if fields[3][0] != 0xA0:
            return None
        usage, hw_type_oid, serial = _extensions(der, fields[3][2], fields[3][3])
    except (_NotCanonical, IndexError):
        return None
    layout = _Layout.learn(der, info_end, fields[2][1] + len(P256_SPKI_PREFIX), usage, serial, hw_type_oid)
    return der[info_position:info_end], der[signature_start + 1:signature_end], layout


def canonical_fields(der: bytes) -> CanonicalDeviceFields | None:
    """The fields of a canonical, validly signed device request, or None (the full parser decides)."""
    try:
        return _canonical_fields(der)
    except Exception:  # noqa: BLE001 - hostile bytes (an IndexError at a cut-short signature, say): not canonical
        return None


def _canonical_fields(der: bytes) -> CanonicalDeviceFields | None:
    layout = found = None
    for known in _LAYOUTS:
        found = known.match(der)
        if found is not None:
            layout = known
            break
    if found is None:
        walked = _walk(der)
        if walked is None:
            return None
        *found, layout = walked
    info, signature = found
    point = der[layout.point:layout.point + 65]
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        public_key.verify(signature, info, _ECDSA_SHA256)
    except (ValueError, InvalidSignature):
        return None
    if layout not in _LAYOUTS and len(_LAYOUTS) < _MAX_LAYOUTS:
        _LAYOUTS.append(layout)  # only layouts of requests that verified
    return CanonicalDeviceFields(public_key, point, layout.hw_type_oid, der[layout.serial:layout.serial + 8],
                                 KEY_USAGE_VALUES[der[layout.usage:layout.usage + 4]], hashlib.sha256(der).hexdigest())
