"""The Issuing Authorities (Issuing OCA, Issuing DCA): Organisation and Device Certificates from PKCS#10
requests, singly and in batches; revocation; the Organisation CRL.

`IssuingAuthority` is imported on first use: the batch's spawned workers import
`smki.issuing.batch_workers`, and should not pay for the whole authority at start-up.
"""

from smki.lazy import lazy_exports

_EXPORTS = {name: "smki.issuing.authority" for name in ("IssuingAuthority", "BatchResult", "Reconciliation")}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
