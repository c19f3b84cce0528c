"""The Issuing Authority: `IssuingAuthority` (smki.issuing.authority), batch issuance and its workers.

`IssuingAuthority` is imported on first use: the batch's spawned workers import
`smki.issuing.batch_workers`, and should not pay for the whole authority at start-up.
"""

from __future__ import annotations

__all__ = ["IssuingAuthority"]


def __getattr__(name: str):
    if name in ("IssuingAuthority", "BatchResult", "Reconciliation"):
        from smki.issuing import authority

        return getattr(authority, name)
    raise AttributeError(f"module 'smki.issuing' has no attribute {name!r}")
