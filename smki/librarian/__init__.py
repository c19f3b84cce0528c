"""The Certificate Librarian: lodges, checks, publishes and serves every certificate, CRL and ARL."""


def __getattr__(name: str):
    if name == "Librarian":  # imported on first use: the package's modules load only when the actor is asked for
        from smki.librarian.librarian import Librarian

        return Librarian
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
