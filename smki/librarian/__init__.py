"""The Certificate Librarian: lodges, checks, publishes (and answers the repository web service for) every certificate, CRL and ARL."""

from smki.lazy import lazy_exports

_EXPORTS = {"Librarian": "smki.librarian.librarian"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
