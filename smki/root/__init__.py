"""The Root Authorities (Root OCA, Root DCA): key ceremonies, Issuing Authority certificates, ARLs."""

from smki.root.authority import RootAuthority

__all__ = ["RootAuthority"]
