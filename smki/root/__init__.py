"""The Root Authorities (Root OCA, Root DCA): key ceremonies under m-of-n custody, Issuing Authority certificates, ARLs."""


def __getattr__(name: str):
    if name == "RootAuthority":  # imported on first use: the package's modules load only when the actor is asked for
        from smki.root.authority import RootAuthority

        return RootAuthority
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["RootAuthority"]
