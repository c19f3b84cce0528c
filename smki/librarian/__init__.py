"""The Certificate Librarian: lodges, checks, publishes and serves every certificate, CRL and ARL."""

_EXPORTS = {"Librarian": "smki.librarian.librarian", "RunningRepository": "smki.librarian.librarian"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Imported on first use: the package's modules load only when the actor is asked for."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
