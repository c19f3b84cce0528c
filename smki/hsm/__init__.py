"""The HSM layer: PKCS#11 keys behind the Signer seam, SoftHSM token admin, signing pool."""

from smki.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["KeyRef", "default_module_path", "parse_key_id", "parse_pkcs11_uri"], "smki.hsm.config"),
    **dict.fromkeys(["KeyAttributes", "find_key_pair", "generate_p256_key_pair", "public_key_of", "read_attributes"], "smki.hsm.keys"),
    "PinSource": "smki.hsm.pins",
    **dict.fromkeys(["Pkcs11Signer", "Signer", "SignerPrivateKey", "SoftwareSigner", "open_signer"], "smki.hsm.signer"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
