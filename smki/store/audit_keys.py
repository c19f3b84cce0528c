"""The audit keys a store holds: the public keys that signed its trail's checkpoints (smki.audit.trail writes them)."""

from __future__ import annotations

from smki.store.connection import Connection


def audit_key_pems(connection: Connection) -> list[str]:
    """The PEM public key of every audit key that signed a checkpoint in this store, in key-id order."""
    return [row[0] for row in connection.execute("SELECT public_key_pem FROM audit_keys ORDER BY key_id")]
