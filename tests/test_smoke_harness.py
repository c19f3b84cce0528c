def test_token_signs(new_hsm_key):
    import hashlib
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    _, signer = new_hsm_key()
    digest = hashlib.sha256(b"x").digest()
    signer.public_key.verify(signer.sign_digest(digest), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
