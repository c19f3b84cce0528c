"""The tamper-evident audit trail: hash-chained entries, checkpoints signed by an HSM-held audit key."""

from smki.audit.trail import AuditEntry, AuditTrail, GENESIS_HASH
from smki.audit.verify import VerificationReport, load_export, verify_trail

__all__ = ["AuditEntry", "AuditTrail", "GENESIS_HASH", "VerificationReport", "load_export", "verify_trail"]
