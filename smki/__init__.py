"""smki: the GB Smart Metering Key Infrastructure on PKCS#11.

The three actors of the SMKI, and the values they take and return:

    from smki import IssuingAuthority, Librarian, RootAuthority

`smki.testing` builds a complete test PKI on a private SoftHSM token in one call. Names are
imported on first use (PEP 562), so `smki --version` does not load the actors.
"""

__version__ = "0.1.0"

from smki.lazy import lazy_exports  # noqa: E402 - after the version, which the CLI reads alone

_EXPORTS = {
    "RootAuthority": "smki.root",
    "IssuingAuthority": "smki.issuing",
    "Librarian": "smki.librarian",
    **dict.fromkeys(["IssuedCertificate", "IssuedCrl", "Revocation"], "smki.operations.results"),
    **dict.fromkeys(["CertificateType", "DeviceType", "EUI64", "KeyUsage", "ListType", "PolicyKind", "RemotePartyRole"],
                    "smki.identifiers"),
    **dict.fromkeys(["CertificatePolicy", "Environment", "RevocationMethod", "load_policy"], "smki.policy"),
    **dict.fromkeys(["CertificateRecord", "RepositoryStatus"], "smki.store.certificates"),
    **dict.fromkeys(["KeyRef", "PinSource"], "smki.hsm"),
    **dict.fromkeys(["SmkiError", "BadInputError", "RefusedError", "ConflictError", "HsmError"], "smki.errors"),
}
__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__ = lazy_exports(__name__, _EXPORTS)
