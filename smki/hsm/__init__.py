"""The HSM layer: PKCS#11 keys behind the Signer seam, SoftHSM token admin, signing pool."""

_EXPORTS = {
    **dict.fromkeys(["KeyRef", "TokenLayout", "default_module_path", "parse_key_id", "parse_pkcs11_uri"], "smki.hsm.config"),
    **dict.fromkeys(["KeyAttributes", "find_key_pair", "generate_p256_key_pair", "public_key_of", "read_attributes"], "smki.hsm.keys"),
    "PinSource": "smki.hsm.pins",
    **dict.fromkeys(["Pkcs11Signer", "Signer", "SignerPrivateKey", "SoftwareSigner", "open_signer"], "smki.hsm.signer"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Names are imported on first use (PEP 562): a command that needs one submodule does not load them all."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
