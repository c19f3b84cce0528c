"""CA key pairs on a PKCS#11 token: generation, lookup by class + label + id, attributes.

Keys are generated inside the token as token objects, SENSITIVE and not EXTRACTABLE,
able to sign and verify and nothing else, with an explicit CKA_ID. They are found by
object class + label + id, never by label alone across classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pkcs11
import pkcs11.exceptions as p11x
from asn1crypto import core
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from smki.errors import ConflictError, HsmError
from smki.hsm.config import pkcs11_text
from smki.hsm.store_lock import token_store_lock

P256_OID = "1.2.840.10045.3.1.7"

# What every CA private key must show when read back (policy 6.1/6.2 and the ceremony transcript).
REQUIRED_PRIVATE_KEY_ATTRIBUTES = {
    "token": True,
    "private": True,
    "sensitive": True,
    "always_sensitive": True,
    "extractable": False,
    "never_extractable": True,
    "local": True,
    "sign": True,
    "derive": False,
    "decrypt": False,
    "unwrap": False,
}

_PUBLIC_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
    Attribute.DERIVE: False,
}
_PRIVATE_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DERIVE: False,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
}


@dataclass(frozen=True)
class KeyAttributes:
    """The security attributes of a private key, as the token reports them."""

    label: str
    key_id: bytes
    token: bool
    private: bool
    sensitive: bool
    always_sensitive: bool
    extractable: bool
    never_extractable: bool
    local: bool
    sign: bool
    derive: bool
    decrypt: bool
    unwrap: bool

    def violations(self, required: Mapping[str, bool] | None = None) -> list[str]:
        """Attributes that differ from what a CA key must have, e.g. 'extractable=True'. `required` (a
        policy's key_attributes) overrides the built-in requirement for the attributes it names."""
        actual = asdict(self)
        wanted = {**REQUIRED_PRIVATE_KEY_ATTRIBUTES, **(required or {})}
        return [f"{name}={actual[name]}" for name, want in wanted.items() if name in actual and actual[name] != want]

    def as_json(self) -> dict:
        data = asdict(self)
        data["key_id"] = self.key_id.hex()
        return data


def read_attributes(private_key: pkcs11.PrivateKey) -> KeyAttributes:
    def flag(attribute: Attribute) -> bool:
        try:
            return bool(private_key[attribute])
        except (p11x.AttributeTypeInvalid, p11x.AttributeSensitive):
            return False

    return KeyAttributes(
        label=private_key.label,
        key_id=bytes(private_key[Attribute.ID]),
        token=flag(Attribute.TOKEN),
        private=flag(Attribute.PRIVATE),
        sensitive=flag(Attribute.SENSITIVE),
        always_sensitive=flag(Attribute.ALWAYS_SENSITIVE),
        extractable=flag(Attribute.EXTRACTABLE),
        never_extractable=flag(Attribute.NEVER_EXTRACTABLE),
        local=flag(Attribute.LOCAL),
        sign=flag(Attribute.SIGN),
        derive=flag(Attribute.DERIVE),
        decrypt=flag(Attribute.DECRYPT),
        unwrap=flag(Attribute.UNWRAP),
    )


def public_key_of(public_key_object: pkcs11.PublicKey) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of a token object, as a cryptography key."""
    # CKA_EC_POINT is the DER encoding of an OCTET STRING holding the 65-byte point.
    point = core.OctetString.load(bytes(public_key_object[Attribute.EC_POINT])).native
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def _objects(session: pkcs11.Session, object_class: ObjectClass, label: str | None, key_id: bytes | None) -> list:
    template = {Attribute.CLASS: object_class}
    if label is not None:
        # python-pkcs11 crashes the process natively on a label that is not UTF-8 (a surrogate escape).
        template[Attribute.LABEL] = pkcs11_text(label, "the key label")
    if key_id is not None:
        template[Attribute.ID] = key_id
    with token_store_lock():  # C_FindObjects reloads changed object files
        return list(session.get_objects(template))


def generate_p256_key_pair(session: pkcs11.Session, label: str, key_id: bytes) -> tuple[pkcs11.PublicKey, pkcs11.PrivateKey]:
    """Generate a P-256 key pair inside the token. Refuses a label or id already in use."""
    if len(key_id) == 0:
        raise HsmError("a key needs an explicit, non-empty CKA_ID")
    pkcs11_text(label, "the key label")
    for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        if _objects(session, object_class, label, None) or _objects(session, object_class, None, key_id):
            raise ConflictError(f"token already holds a key labelled {label!r} or with id {key_id.hex()}")
    parameters = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256_OID)}, local=True
    )
    try:
        with token_store_lock():
            return parameters.generate_keypair(
                store=True, label=label, id=key_id,
                public_template=_PUBLIC_TEMPLATE, private_template=_PRIVATE_TEMPLATE,
            )
    except p11x.PKCS11Error as exc:
        raise HsmError(f"key generation for {label!r} failed in the token: {type(exc).__name__}") from None


def _one_object(session: pkcs11.Session, object_class: ObjectClass, label: str, key_id: bytes | None):
    objects = _objects(session, object_class, label, key_id)
    name = "private" if object_class == ObjectClass.PRIVATE_KEY else "public"
    where = f"label {label!r}" + (f", id {key_id.hex()}" if key_id else "")
    if not objects:
        raise HsmError(f"no {name} key with {where} on the token")
    if len(objects) > 1:
        raise HsmError(f"{len(objects)} {name} keys match {where}: the key reference is ambiguous (give the id)")
    return objects[0]


def find_public_key(session: pkcs11.Session, label: str, key_id: bytes | None = None) -> pkcs11.PublicKey:
    """The one public key with this label (and id); visible without login."""
    return _one_object(session, ObjectClass.PUBLIC_KEY, label, key_id)


def find_key_pair(session: pkcs11.Session, label: str, key_id: bytes | None = None) -> tuple[pkcs11.PublicKey, pkcs11.PrivateKey]:
    """The one key pair with this label (and id). Missing or ambiguous keys are errors."""
    private_object = _one_object(session, ObjectClass.PRIVATE_KEY, label, key_id)
    return find_public_key(session, label, key_id), private_object


def destroy_key_pair(public_object: pkcs11.PublicKey, private_object: pkcs11.PrivateKey) -> None:
    """Destroy both halves of a key pair in the token."""
    try:
        with token_store_lock():
            private_object.destroy()
            public_object.destroy()
    except p11x.PKCS11Error as exc:
        raise HsmError(f"the token could not destroy key {private_object.label!r}: {type(exc).__name__}") from None


def token_object_count(session: pkcs11.Session) -> int:
    """How many objects of any class the session sees on its token (private ones too once logged in)."""
    try:
        with token_store_lock():
            return sum(1 for _ in session.get_objects({Attribute.TOKEN: True}))
    except p11x.PKCS11Error as exc:
        raise HsmError(f"cannot list the token's objects: {type(exc).__name__}") from None


def destroy_token_objects(session: pkcs11.Session) -> int:
    """Destroy every object the session sees on its token; return how many."""
    try:
        with token_store_lock():
            objects = list(session.get_objects({Attribute.TOKEN: True}))
            for obj in objects:
                obj.destroy()
    except p11x.PKCS11Error as exc:
        raise HsmError(f"the token could not destroy its objects: {type(exc).__name__}") from None
    return len(objects)


@dataclass(frozen=True)
class ListedKey:
    """One key object on a token, as `smki hsm list` shows it: the object itself is kept, so that two
    objects with the same label and id (which a lookup refuses as ambiguous) are both listed."""

    label: str
    key_id: bytes
    object_class: str  # "private", "public" or "secret"
    handle: Any = field(compare=False, repr=False)


def list_keys(session: pkcs11.Session) -> list[ListedKey]:
    """Every key object the session can see, by label, id and class."""
    rows = []
    for object_class, name in ((ObjectClass.PRIVATE_KEY, "private"), (ObjectClass.PUBLIC_KEY, "public"), (ObjectClass.SECRET_KEY, "secret")):
        for obj in _objects(session, object_class, None, None):
            rows.append(ListedKey(obj.label, bytes(obj[Attribute.ID]), name, obj))
    return sorted(rows, key=lambda key: (key.label, key.key_id, key.object_class))
