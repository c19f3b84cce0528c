"""The Signer seam: everything that signs for a CA goes through a `Signer`.

A Signer signs with ECDSA P-256 / SHA-256 and returns a DER signature that it has
already verified against its public key: nothing unverified leaves this module
(SoftHSM has produced rare bad ECDSA signatures in the past), except through
`sign_digests_sampled`, batch issuance's explicit, sampled exception.

`Pkcs11Signer` keeps the key in a token: SHA-256 is computed here and the 32-byte
digest is signed with raw CKM_ECDSA, because SoftHSM offers no CKM_ECDSA_SHA256 and
python-pkcs11's default EC mechanism is ECDSA_SHA512. `SoftwareSigner` is for unit
tests only. `SignerPrivateKey` lets cryptography's certificate and CRL builders sign
through any Signer.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

import pkcs11
import pkcs11.exceptions as p11x
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Mechanism

from smki.errors import BadInputError, HsmError
from smki.hsm.config import KeyRef
from smki.hsm.keys import find_key_pair, public_key_of, read_attributes, KeyAttributes
from smki.hsm.pins import PinSource
from smki.hsm.session import open_session
from smki.hsm.store_lock import token_store_lock

SHA256_DIGEST_SIZE = 32
_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
# A bad signature from the token is retried this many times before it is an error.
SIGNATURE_ATTEMPTS = 3


class Signer(Protocol):
    """Signs SHA-256 digests with a P-256 key; every returned signature is verified."""

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_digest(self, digest: bytes) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class _VerifyingSigner:
    """Shared logic: hash, sign the digest, verify before returning."""

    public_key: ec.EllipticCurvePublicKey

    def _raw_sign(self, digest: bytes) -> bytes:
        raise NotImplementedError

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != SHA256_DIGEST_SIZE:
            # CKM_ECDSA would silently truncate longer input and sign it: refuse instead.
            raise ValueError(f"sign_digest takes a 32-byte SHA-256 digest, got {len(digest)} bytes")
        for _ in range(SIGNATURE_ATTEMPTS):
            signature = self._raw_sign(digest)
            try:
                self.public_key.verify(signature, digest, _PREHASHED)
                return signature
            except InvalidSignature:
                continue
        raise HsmError(f"the signer returned {SIGNATURE_ATTEMPTS} signatures that do not verify against its public key")

    def sign(self, data: bytes) -> bytes:
        return self.sign_digest(hashlib.sha256(data).digest())

    def sign_digests_sampled(self, digests: list[bytes], verify_one_in: int) -> list[bytes]:
        """Sign many digests, verifying one signature in `verify_one_in` (chosen at random) and the first.

        For batch issuance only, where a verify costs more than the HSM's sign: every sampled
        signature must verify or the whole call fails (nothing of it is released), so a token
        that signs wrongly is caught within a few dozen signatures. `verify_one_in=1` is `sign_digest`.
        """
        if verify_one_in <= 1:
            return [self.sign_digest(digest) for digest in digests]
        signatures = []
        for index, digest in enumerate(digests):
            if len(digest) != SHA256_DIGEST_SIZE:
                raise ValueError(f"sign_digest takes a 32-byte SHA-256 digest, got {len(digest)} bytes")
            signature = self._raw_sign(digest)
            if index == 0 or secrets.randbelow(verify_one_in) == 0:
                try:
                    self.public_key.verify(signature, digest, _PREHASHED)
                except InvalidSignature:
                    raise HsmError("a sampled batch signature does not verify against the signer's public key; none of its chunk is released") from None
            signatures.append(signature)
        return signatures


class SoftwareSigner(_VerifyingSigner):
    """A key in memory. For unit tests and throw-away lint signatures; never for a CA."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        self.public_key = self.private_key.public_key()

    def _raw_sign(self, digest: bytes) -> bytes:
        return self.private_key.sign(digest, _PREHASHED)


class Pkcs11Signer(_VerifyingSigner):
    """A CA key held in a PKCS#11 token."""

    def __init__(self, private_key: pkcs11.PrivateKey, public_key: ec.EllipticCurvePublicKey) -> None:
        self._private_key = private_key
        self.public_key = public_key

    def _raw_sign(self, digest: bytes) -> bytes:
        try:
            raw = self._private_key.sign(digest, mechanism=Mechanism.ECDSA)
        except p11x.PKCS11Error as exc:
            raise HsmError(f"token refused to sign with key {self._private_key.label!r}: {type(exc).__name__}") from None
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def attributes(self) -> KeyAttributes:
        return read_attributes(self._private_key)


def require_key_of(signer: Signer, certificate: x509.Certificate, key_name: str = "the HSM key") -> None:
    """The one check, for every actor, that the key about to sign is the issuer certificate's key:
    refused (exit 3) before anything is signed. `key_name` says which key, for the message."""
    if signer.public_key.public_numbers() != certificate.public_key().public_numbers():
        raise BadInputError(f"{key_name} does not match the issuer certificate's public key; nothing signed")


def open_signer(key: KeyRef, pin_source: PinSource) -> Pkcs11Signer:
    """Log in to the key's token (PIN from the operator's source) and return its Signer."""
    return signer_for(key, pin_source.read(f"user PIN for token {key.token_label}"))


def signer_for(key: KeyRef, pin: str) -> Pkcs11Signer:
    """Log in to the key's token and return its Signer (the store is locked until the key is found)."""
    with token_store_lock(key.module):
        session = open_session(key.module, key.token_label, pin, serial=key.token_serial)
        public_object, private_object = find_key_pair(session, key.key_label, key.key_id)
        return Pkcs11Signer(private_object, public_key_of(public_object))


class SignerPrivateKey(ec.EllipticCurvePrivateKey):
    """Presents a Signer to cryptography's builders as a private key that can only sign.

    The builders call `sign(tbs_bytes, ECDSA(SHA256()))`; anything else is refused, and
    the private scalar is unreachable because it is not here.
    """

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        # The bytes last signed and their (verified) signature, so a caller can confirm that
        # what the builder released is exactly what the Signer verified.
        self.last_signed: tuple[bytes, bytes] | None = None

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = getattr(signature_algorithm, "algorithm", None)
        if not isinstance(signature_algorithm, ec.ECDSA) or not isinstance(algorithm, hashes.SHA256):
            raise ValueError("SMKI keys sign with ecdsa-with-SHA256 only")
        signature = self._signer.sign(data)
        self.last_signed = (data, signature)
        return signature

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._signer.public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._signer.public_key.curve

    @property
    def key_size(self) -> int:
        return self._signer.public_key.curve.key_size

    def exchange(self, algorithm, peer_public_key):  # noqa: ANN001 - abstract signature
        raise TypeError("a CA signing key is never used for key agreement")

    def private_numbers(self):
        raise TypeError("the private key is held by the signer and cannot be read")

    def private_bytes(self, encoding, format, encryption_algorithm):  # noqa: A002 - abstract signature
        raise TypeError("the private key is held by the signer and cannot be exported")

    def __copy__(self) -> "SignerPrivateKey":
        return self

    def __deepcopy__(self, memo: dict) -> "SignerPrivateKey":
        return self
