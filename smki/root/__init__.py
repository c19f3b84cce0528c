"""The Root Authorities (Root OCA, Root DCA): key ceremonies under m-of-n custody, Issuing Authority certificates, ARLs."""

from smki.lazy import lazy_exports

_EXPORTS = {"RootAuthority": "smki.root.authority"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
