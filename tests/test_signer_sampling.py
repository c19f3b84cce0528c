"""Batch signing's verification: every signature by default, or a sample; a bad one stops the chunk."""

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives import hashes

from smki.errors import HsmError
from smki.hsm.signer import SoftwareSigner


class FaultySigner(SoftwareSigner):
    """Signs with the wrong key every `every`-th call: a token gone bad."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.calls, self.every, self.other = 0, every, ec.generate_private_key(ec.SECP256R1())

    def _raw_sign(self, digest: bytes) -> bytes:
        self.calls += 1
        key = self.other if self.calls % self.every == 0 else self.private_key
        return key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


DIGESTS = [hashlib.sha256(bytes([i])).digest() for i in range(64)]


def test_full_verification_returns_only_good_signatures():
    signer = SoftwareSigner()
    signatures = signer.sign_digests_sampled(DIGESTS, verify_one_in=1)
    for digest, signature in zip(DIGESTS, signatures):
        signer.public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_a_token_that_always_signs_wrongly_is_caught_by_any_sample():
    with pytest.raises(HsmError, match="sampled batch signature"):
        FaultySigner(every=1).sign_digests_sampled(DIGESTS, verify_one_in=32)


def test_full_verification_retries_a_rare_bad_signature():
    signer = FaultySigner(every=3)
    signatures = signer.sign_digests_sampled(DIGESTS[:4], verify_one_in=1)
    assert len(signatures) == 4 and signer.calls == 5  # the third call was bad, retried by sign_digest


def test_digests_must_be_sha256_sized():
    with pytest.raises(ValueError, match="32-byte"):
        SoftwareSigner().sign_digests_sampled([b"short"] * 2, verify_one_in=8)
