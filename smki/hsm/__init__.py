"""The HSM layer: PKCS#11 keys behind the Signer seam, SoftHSM token admin, signing pool."""

from smki.hsm.config import KeyRef, TokenLayout, default_module_path, parse_key_id, parse_pkcs11_uri
from smki.hsm.keys import KeyAttributes, find_key_pair, generate_p256_key_pair, public_key_of, read_attributes
from smki.hsm.pins import PinSource
from smki.hsm.signer import Pkcs11Signer, Signer, SignerPrivateKey, SoftwareSigner, open_signer

__all__ = [
    "KeyAttributes", "KeyRef", "PinSource", "Pkcs11Signer", "Signer", "SignerPrivateKey",
    "SoftwareSigner", "TokenLayout", "default_module_path", "find_key_pair",
    "generate_p256_key_pair", "open_signer", "parse_key_id", "parse_pkcs11_uri",
    "public_key_of", "read_attributes",
]
