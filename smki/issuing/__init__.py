"""The Issuing Authorities (Issuing OCA, Issuing DCA): Organisation and Device Certificates from PKCS#10 requests, singly and in batches; revocation; the Organisation CRL."""


def __getattr__(name: str):
    if name == "IssuingAuthority":  # imported on first use: the package's modules load only when the actor is asked for
        from smki.issuing.authority import IssuingAuthority

        return IssuingAuthority
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
