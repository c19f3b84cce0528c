"""The tamper-evident audit trail: hash-chained entries, checkpoints signed by an HSM-held audit key."""

_EXPORTS = {"AuditEntry": "smki.audit.trail", "AuditTrail": "smki.audit.trail", "GENESIS_HASH": "smki.audit.trail",
            "VerificationReport": "smki.audit.verify", "load_export": "smki.audit.verify", "verify_trail": "smki.audit.verify"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Names are imported on first use (PEP 562): a command that needs one submodule does not load them all."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
