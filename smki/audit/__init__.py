"""The tamper-evident audit trail: hash-chained entries, checkpoints signed by an HSM-held audit key."""

from smki.lazy import lazy_exports

_EXPORTS = {"AuditEntry": "smki.audit.trail", "AuditTrail": "smki.audit.trail", "GENESIS_HASH": "smki.audit.trail",
            "VerificationReport": "smki.audit.verify", "load_export": "smki.audit.verify", "verify_trail": "smki.audit.verify"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
