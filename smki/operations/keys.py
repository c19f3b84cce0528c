"""A CA key generated in the HSM and audited in an authority's state (`smki hsm keygen`), for both hierarchies.

The private key is a token object, SENSITIVE, not EXTRACTABLE, sign-only; its attributes are read
back and recorded with the generation. An audit key being generated signs its own generation's
checkpoint: it is the first entry of the trail it will sign.

A key whose attributes, read back, differ from what is required (the policy's key_attributes when
one is given, over smki's own requirement) is destroyed and the generation refused (HsmError,
exit 4): left in the token, it would be found by its label and id by the next command that signs,
and would block a second attempt under the same label and id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from smki.hsm.config import KeyRef
from smki.errors import HsmError
from smki.hsm.keys import destroy_key_pair, generate_p256_key_pair, public_key_of, read_attributes
from smki.hsm.pins import PinSource, SourceKind
from smki.hsm.session import open_session
from smki.hsm.signer import Pkcs11Signer
from smki.operations.audited import AuditedOperation, open_audit_trail, open_state
from smki.operations.names import Operation
from smki.profiles.keyids import key_identifier
from smki.store.database import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratedKey:
    """A key pair made in the token, with its private key's attributes as read back."""

    key: KeyRef
    public_key: ec.EllipticCurvePublicKey
    subject_key_identifier: str
    attributes: dict
    violations: tuple[str, ...]  # always empty on a key returned (one with violations is destroyed and refused); kept in the JSON and audit shapes

    @property
    def key_uri(self) -> str:
        return self.key.uri

    def summary(self) -> dict:
        return {"key_uri": self.key_uri, "subject_key_identifier": self.subject_key_identifier,
                "attributes": self.attributes, "violations": list(self.violations)}


def generate_key(state: Path | str, key: KeyRef, pin: PinSource | str | None, *, actor: str = "operator",
                 audit_key: KeyRef | None = None, audit_pin: PinSource | str | None = None,
                 required_attributes: Mapping[str, bool] | None = None) -> GeneratedKey:
    """Generate a P-256 key pair for `key` in its token (user PIN `pin`), audited in `state`'s trail.

    `required_attributes` (a policy's key_attributes) says what the key's attributes must read back
    as, over smki's own requirement; a key that differs is destroyed and the run refused.

    With `audit_key`, the run ends with a checkpoint it signs; when `audit_key` is the key being
    generated, the new key signs that checkpoint itself (its token holds no anchor yet to check).
    """
    audits_itself = audit_key is not None and same_key(audit_key, key)
    connection = open_state(state)
    try:
        audit = open_audit_trail(connection, None if audits_itself else audit_key, audit_pin)
        with AuditedOperation(audit, actor, Operation.GENERATE_KEY, {"key_uri": key.uri}) as operation:
            session = open_session(key.module, key.token_label, _pin_value(pin, key), rw=True, serial=key.token_serial)
            public_object, private_object = generate_p256_key_pair(session, key.key_label, key.key_id)
            public_key = public_key_of(public_object)
            attributes = read_attributes(private_object)
            generated = GeneratedKey(key, public_key, key_identifier(public_key).hex().upper(), attributes.as_json(),
                                     tuple(attributes.violations(required_attributes)))
            operation.subject["subject_key_identifier"] = generated.subject_key_identifier
            if generated.violations:
                destroy_key_pair(public_object, private_object)
                raise HsmError(f"key {key.key_label!r} read back with attributes the policy forbids "
                               f"({', '.join(generated.violations)}); it was destroyed, nothing generated")
            if audits_itself:
                operation.audit.signer = Pkcs11Signer(private_object, public_key)
            with transaction(connection):
                operation.audit.append(operation.success_entry({"attributes": generated.attributes,
                                                                "violations": list(generated.violations)}))
    finally:
        connection.close()
    log.info("generated key %s (SKI %s)", key.uri, generated.subject_key_identifier)
    return generated


def same_key(one: KeyRef, other: KeyRef) -> bool:
    """The same key pair in the same token (the module path aside: one URI may omit it)."""
    return (one.token_label, one.key_label, one.key_id) == (other.token_label, other.key_label, other.key_id)


def _pin_value(pin: PinSource | str | None, key: KeyRef) -> str:
    if isinstance(pin, str):
        return pin
    return (pin or PinSource(SourceKind.PROMPT)).read(f"user PIN for token {key.token_label}")
