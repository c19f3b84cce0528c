"""The audit trail's head, anchored in the audit key's token where the database cannot roll it back.

An authority's trail and state share one database: whoever can write it can delete the trail's
tail with its checkpoints and roll the state back to match, and every check made from the
database alone still agrees. So the last head a run checkpointed is also kept here, as a private
token data object (CKO_DATA, CKA_TOKEN, CKA_PRIVATE: readable and writable only after login)
beside the audit key, labelled after it. It is the `HeadAnchor` that `smki.audit.trail.AuditTrail`
takes as a duck type.

Some tokens refuse private token data objects (NSS softokn does: CKR_ATTRIBUTE_VALUE_INVALID). In
such a token the head rides on a private token object the token does keep: a generic secret key
(CKO_SECRET_KEY, every usage off, its random key value never used) with the same label, whose CKA_ID
carries the head, readable like the data object's CKA_VALUE only after login.

One audit key anchors one trail. The object is read and written in a session of the process's
login (the audit key's signer logs in first); a process that is not logged in would see no
private object and take "no anchor" for an answer, so it is refused here instead.
"""

from __future__ import annotations

import json

import pkcs11
import pkcs11.exceptions as p11x
import os

from pkcs11 import Attribute, KeyType, ObjectClass

from smki.errors import HsmError
from smki.hsm.config import KeyRef
from smki.hsm.session import is_logged_in, open_session
from smki.hsm.store_lock import token_store_lock

APPLICATION = "smki audit head/1"  # CKA_APPLICATION of every anchor: what the object is, for anyone listing the token
_SUFFIX = ".head"


def anchor_label(key_label: str, key_id: bytes) -> str:
    """The anchor's CKA_LABEL: the audit key's label and id (a data object has no CKA_ID)."""
    return f"{key_label}{_SUFFIX}.{key_id.hex()}"


class TokenHeadAnchor:
    """The head anchored for the trail an audit key signs: (sequence number, entry hash), or None before the first."""

    def __init__(self, module_path: str, token_label: str, key_label: str, key_id: bytes, token_serial: str = "") -> None:
        self.module_path, self.token_label, self.token_serial = module_path, token_label, token_serial
        self.label = anchor_label(key_label, key_id)

    @classmethod
    def for_key(cls, key: KeyRef) -> "TokenHeadAnchor":
        """The anchor beside the audit key `key` names."""
        return cls(key.module, key.token_label, key.key_label, key.key_id, key.token_serial)

    def _session(self) -> pkcs11.Session:
        if not is_logged_in(self.module_path, self.token_label, self.token_serial):
            raise HsmError(f"the audit head anchor in token {self.token_label!r} needs the token logged in first")
        return open_session(self.module_path, self.token_label, None, rw=True, serial=self.token_serial)  # the process's login covers it

    def _objects(self, session: pkcs11.Session) -> list:
        """(object, attribute holding the head) of every anchor object: data objects, and key carriers."""
        data = {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: self.label, Attribute.APPLICATION: APPLICATION}
        carrier = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self.label}
        with token_store_lock(self.module_path):  # C_FindObjects reloads changed object files
            return ([(found, Attribute.VALUE) for found in session.get_objects(data)]
                    + [(found, Attribute.ID) for found in session.get_objects(carrier)])

    def load(self) -> tuple[int, str] | None:
        try:
            values = [bytes(found[attribute]) for found, attribute in self._objects(self._session())]
        except p11x.PKCS11Error as exc:
            raise HsmError(f"cannot read the audit head anchor {self.label!r} in token {self.token_label!r}: {type(exc).__name__}") from None
        # Two only after a crash inside `store` (or two writers at once): both were true heads; the later is the stronger check.
        return max((_decoded(value, self.label) for value in values), default=None)

    def store(self, seq: int, head_hash: str) -> None:
        """Replace the anchored head. SoftHSM keeps a data object's CKA_VALUE read-only, so the new object is
        created before the old one is destroyed: a crash in between leaves two, never none."""
        value = json.dumps({"seq": seq, "head_hash": head_hash}, sort_keys=True).encode()
        session = self._session()
        try:
            with token_store_lock(self.module_path):  # the token's object files are rewritten: one process at a time
                old = self._objects(session)
                try:
                    session.create_object({
                        Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                        Attribute.LABEL: self.label, Attribute.APPLICATION: APPLICATION, Attribute.VALUE: value,
                    })
                except (p11x.AttributeValueInvalid, p11x.TemplateInconsistent):  # no private token data objects here
                    session.create_object(_carrier(self.label, value))
                for stale, _ in old:
                    stale.destroy()
        except p11x.PKCS11Error as exc:
            raise HsmError(f"cannot write the audit head anchor {self.label!r} in token {self.token_label!r}: {type(exc).__name__}") from None


def _carrier(label: str, value: bytes) -> dict:
    """A generic secret key that only carries `value` in its CKA_ID: every usage off, so it can do nothing."""
    usages = (Attribute.SIGN, Attribute.VERIFY, Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.WRAP, Attribute.UNWRAP, Attribute.DERIVE)
    return {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET, Attribute.TOKEN: True,
            Attribute.PRIVATE: True, Attribute.LABEL: label, Attribute.ID: value, Attribute.VALUE: os.urandom(32),
            **dict.fromkeys(usages, False)}


def _decoded(value: bytes, label: str) -> tuple[int, str]:
    """(seq, head hash) from an anchor's value; anything else is refused (never read as "no anchor")."""
    try:
        fields = json.loads(value)
        seq, head_hash = fields["seq"], fields["head_hash"]
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 and isinstance(head_hash, str) and len(head_hash) == 64:
            int(head_hash, 16)
            return seq, head_hash
    except (ValueError, TypeError, KeyError):
        pass
    raise HsmError(f"the audit head anchor {label!r} holds no sequence number and head hash")
