"""The Root OCA's contingency key (RFC 5934 WrappedApexContingencyKey), kept in the HSM.

The contingency key pair and an AES-256 wrapping key are generated in the root's token.
The certificate carries the contingency public key wrapped under that AES key with
AES key wrap (RFC 3394, id-aes256-wrap): the wrapped value is the DER SubjectPublicKeyInfo
followed by zero octets up to a multiple of 8 (RFC 3394 wraps whole 64-bit blocks; the DER
gives its own length, so the padding is unambiguous). The wrapping happens inside the token
(C_WrapKey of a session object holding those bytes).

The wrapping key is sensitive and never leaves the token in clear: only a recovery ceremony,
logged in with m of n custodian shares, exports it, wrapped under a one-time session key
(`export_wrapping_key`), so that relying parties can unwrap the contingency public key.
"""

from __future__ import annotations

import pkcs11
import pkcs11.exceptions as p11x
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from smki.errors import BadInputError, ConflictError, HsmError
from smki.hsm.keys import generate_p256_key_pair, public_key_of
from smki.hsm.store_lock import token_store_lock

WRAP_BLOCK = 8


def _padded(spki_der: bytes) -> bytes:
    return spki_der + b"\x00" * (-len(spki_der) % WRAP_BLOCK)


@token_store_lock()  # a context manager made by @contextmanager decorates too: a fresh hold per call
def generate_contingency_keys(session: pkcs11.Session, key_label: str, key_id: bytes, wrap_label: str, wrap_id: bytes):
    """(contingency public key, wrapping key object): both generated in the token, as token objects."""
    if list(session.get_objects({Attribute.LABEL: wrap_label, Attribute.CLASS: ObjectClass.SECRET_KEY})):
        raise ConflictError(f"a secret key labelled {wrap_label!r} already exists in the token; not generating another")
    public_object, _ = generate_p256_key_pair(session, key_label, key_id)
    try:
        wrapping_key = session.generate_key(KeyType.AES, 256, label=wrap_label, id=wrap_id, store=True, template={
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
            Attribute.WRAP: True, Attribute.UNWRAP: False, Attribute.ENCRYPT: False, Attribute.DECRYPT: False,
            Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False})
    except p11x.PKCS11Error as exc:
        raise HsmError(f"the token refused to generate the contingency wrapping key: {type(exc).__name__}") from None
    return public_key_of(public_object), wrapping_key


def find_wrapping_key(session: pkcs11.Session, label: str, key_id: bytes):
    with token_store_lock():
        keys = list(session.get_objects({Attribute.LABEL: label, Attribute.ID: key_id, Attribute.CLASS: ObjectClass.SECRET_KEY}))
    if len(keys) != 1:
        raise BadInputError(f"{len(keys)} secret keys labelled {label!r} with id {key_id.hex()} in the token (need exactly one)")
    return keys[0]


def wrap_public_key(session: pkcs11.Session, wrapping_key, public_key) -> bytes:
    """The contingency public key wrapped in the token under `wrapping_key` (RFC 3394)."""
    data = _padded(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    holder = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                                    Attribute.VALUE: data, Attribute.TOKEN: False, Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})
    try:
        return wrapping_key.wrap_key(holder, mechanism=Mechanism.AES_KEY_WRAP)
    except p11x.PKCS11Error as exc:
        raise HsmError(f"the token refused to wrap the contingency public key: {type(exc).__name__}") from None
    finally:
        holder.destroy()


def unwrap_public_key(wrapping_key_value: bytes, wrapped: bytes):
    """What a relying party does after a recovery: the contingency public key from the extension's value."""
    try:
        data = aes_key_unwrap(wrapping_key_value, wrapped)
    except (InvalidUnwrap, ValueError):
        raise BadInputError("the wrapped contingency key does not unwrap under this key") from None
    if len(data) < 2 or data[0] != 0x30 or data[1] >= 0x80:
        raise BadInputError("the unwrapped contingency key is not a DER SubjectPublicKeyInfo")
    spki, padding = data[: 2 + data[1]], data[2 + data[1]:]
    if padding.strip(b"\x00") or len(padding) >= WRAP_BLOCK:
        raise BadInputError("the unwrapped contingency key has padding other than zero octets up to a block")
    return load_der_public_key(spki)


def export_wrapping_key(session: pkcs11.Session, wrapping_key) -> bytes:
    """Recovery only: the wrapping key's value, taken out of the token under a one-time session key."""
    transfer = session.generate_key(KeyType.AES, 256, store=False, template={
        Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.WRAP: True})
    try:
        wrapped = transfer.wrap_key(wrapping_key, mechanism=Mechanism.AES_KEY_WRAP)
        return aes_key_unwrap(transfer[Attribute.VALUE], wrapped)
    except p11x.PKCS11Error as exc:
        raise HsmError(f"the token refused to export the contingency wrapping key: {type(exc).__name__}") from None
    finally:
        transfer.destroy()
