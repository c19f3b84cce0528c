"""The Signer seam on a real SoftHSM token, and the python-pkcs11/SoftHSM pitfalls as regressions."""

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from smki.errors import BadInputError, ConflictError, HsmError
from smki.hsm.config import KeyRef, parse_pkcs11_uri
from smki.hsm.keys import P256_OID, find_key_pair, generate_p256_key_pair, public_key_of, read_attributes
from smki.hsm.pins import PinSource
from smki.hsm.pool import SigningPool
from smki.hsm.session import open_session
from smki.hsm.signer import Pkcs11Signer, open_signer


def _session(token):
    return open_session(token.module, token.label, token.pin, rw=True)


def test_generated_key_attributes_read_back_from_the_token(new_hsm_key, hsm_token):
    key, _ = new_hsm_key()
    _, private_object = find_key_pair(_session(hsm_token), key.key_label, key.key_id)
    # Read each attribute straight from the token, not through our KeyAttributes mapping.
    assert private_object[Attribute.SENSITIVE] is True
    assert private_object[Attribute.EXTRACTABLE] is False
    assert private_object[Attribute.LOCAL] is True
    assert private_object[Attribute.NEVER_EXTRACTABLE] is True
    assert private_object[Attribute.ALWAYS_SENSITIVE] is True
    assert private_object[Attribute.DERIVE] is False
    assert private_object[Attribute.TOKEN] is True
    assert bytes(private_object[Attribute.ID]) == key.key_id
    assert read_attributes(private_object).violations() == []


def test_signatures_verify_with_cryptography(new_hsm_key):
    _, signer = new_hsm_key()
    data = b"SMKI to-be-signed bytes"
    signer.public_key.verify(signer.sign(data), data, ec.ECDSA(hashes.SHA256()))


def test_unhashed_input_is_refused(new_hsm_key):
    """CKM_ECDSA truncates long input silently; the seam must refuse anything but a 32-byte digest."""
    _, signer = new_hsm_key()
    for wrong in (b"", b"x" * 31, b"x" * 33, hashlib.sha512(b"x").digest()):
        with pytest.raises(ValueError, match="32-byte SHA-256 digest"):
            signer.sign_digest(wrong)


def test_mechanism_is_always_named(new_hsm_key, hsm_token):
    """python-pkcs11's default EC mechanism is ECDSA_SHA512 (which SoftHSM lacks): we must pass CKM_ECDSA."""
    key, _ = new_hsm_key()
    public_object, private_object = find_key_pair(_session(hsm_token), key.key_label, key.key_id)
    calls = []

    class Recording:
        label = private_object.label

        def sign(self, data, mechanism=None):
            calls.append(mechanism)
            return private_object.sign(data, mechanism=mechanism)

    Pkcs11Signer(Recording(), public_key_of(public_object)).sign(b"data")
    assert calls == [Mechanism.ECDSA]


def test_a_bad_signature_from_the_token_is_never_returned(new_hsm_key):
    _, signer = new_hsm_key()
    _, other = new_hsm_key()
    signer.public_key = other.public_key  # every token signature now fails verification
    with pytest.raises(HsmError, match="do not verify"):
        signer.sign(b"data")


def test_key_lookup_is_by_class_label_and_id(new_hsm_key, hsm_token):
    session = _session(hsm_token)
    key, signer = new_hsm_key("lookup-ca")
    # A secret key with the same label must not be picked up as the CA key.
    session.generate_key(KeyType.AES, 256, label="lookup-ca", id=b"\x7f\x01", store=True)
    public_object, private_object = find_key_pair(session, "lookup-ca", key.key_id)
    assert private_object.object_class == ObjectClass.PRIVATE_KEY
    assert public_object.object_class == ObjectClass.PUBLIC_KEY


def test_missing_and_ambiguous_keys(hsm_token):
    session = _session(hsm_token)
    with pytest.raises(HsmError, match="no private key with label 'absent'"):
        find_key_pair(session, "absent", b"\x01")
    generate_p256_key_pair(session, "twin", b"\x70\x01")
    # Same label, other id: legal on a token, ambiguous by label alone.
    params = session.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256_OID)}, local=True)
    params.generate_keypair(store=True, label="twin", id=b"\x70\x02")
    with pytest.raises(HsmError, match="ambiguous"):
        find_key_pair(session, "twin")
    assert find_key_pair(session, "twin", b"\x70\x02")  # the id settles it


def test_keygen_refuses_a_label_or_id_in_use(new_hsm_key, hsm_token):
    key, _ = new_hsm_key("taken")
    with pytest.raises(ConflictError, match="already holds"):
        generate_p256_key_pair(_session(hsm_token), "taken", b"\x55\x55")
    with pytest.raises(ConflictError, match="already holds"):
        generate_p256_key_pair(_session(hsm_token), "fresh-label", key.key_id)


def test_second_login_in_one_process_is_handled(new_hsm_key, hsm_token):
    key, _ = new_hsm_key()
    first = open_signer(key, PinSource("env", "SMKI_TEST_PIN"))
    second = open_signer(key, PinSource("env", "SMKI_TEST_PIN"))  # would raise UserAlreadyLoggedIn unhandled
    assert first.public_key.public_numbers() == second.public_key.public_numbers()
    second.sign(b"still works")


def test_signing_workers_are_spawned_and_sign_correctly(new_hsm_key, hsm_token):
    key, signer = new_hsm_key()
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(600)]
    with SigningPool(key, hsm_token.pin, workers=2, chunk_size=64) as pool:
        assert pool.start_method() == "spawn"
        signatures = list(pool.sign_digests(digests))
    assert len(signatures) == len(digests)
    for digest, signature in zip(digests, signatures):
        signer.public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def _log_in_and_sign(key: KeyRef, pin: str, start, results) -> None:
    """In a spawned process: wait for the others, log in, find the key, sign; report the outcome."""
    from smki.hsm.signer import signer_for
    start.wait(timeout=60)
    try:
        signer_for(key, pin).sign(b"at once")
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - the outcome is the test's subject
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_logging_in_at_once_all_start(new_hsm_key, hsm_token):
    # SoftHSM rewrites the token file at every C_Login; without the store lock about one in eight
    # of four simultaneous log-ins failed with GeneralError or UserPinNotInitialized.
    import multiprocessing
    key, _ = new_hsm_key()
    context = multiprocessing.get_context("spawn")
    results, outcomes = context.Queue(), []
    for _ in range(12):
        start = context.Barrier(4)  # passed once every process has imported smki
        processes = [context.Process(target=_log_in_and_sign, args=(key, hsm_token.pin, start, results)) for _ in range(4)]
        for process in processes:
            process.start()
        outcomes += [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join()
    assert [outcome for outcome in outcomes if outcome != "ok"] == []


def test_a_signing_pool_with_a_wrong_pin_fails_instead_of_respawning(hsm_token, run_smki, tmp_path):
    # A token of its own (made by the CLI: this process's PKCS#11 library lists only the tokens it
    # saw when loaded), so that wrong PINs never count against the shared test token.
    from smki.hsm.config import KeyRef
    pin = ["--pin-source", "env:SMKI_TEST_PIN"]
    assert run_smki("hsm", "init-token", "--label", "smki-wrong-pin", "--so-pin-source", "env:SMKI_TEST_SO_PIN", *pin).returncode == 0
    assert run_smki("hsm", "keygen", "--token", "smki-wrong-pin", "--key-label", "pool-key", "--key-id", "01", *pin,
                    "--state", str(tmp_path / "state")).returncode == 0
    key = KeyRef("smki-wrong-pin", "pool-key", b"\x01", hsm_token.module)
    with pytest.raises(HsmError, match="could not start: .*PIN incorrect"):
        with SigningPool(key, "not-the-pin", workers=2) as pool:
            list(pool.sign_digests([hashlib.sha256(b"x").digest()]))


def test_pin_sources(monkeypatch):
    monkeypatch.setenv("OPERATOR_PIN", "s3cret")
    assert PinSource.parse("env:OPERATOR_PIN").read() == "s3cret"
    read_end, write_end = os.pipe()
    os.write(write_end, b"from-fd\n")
    os.close(write_end)
    assert PinSource.parse(f"fd:{read_end}").read() == "from-fd"
    os.close(read_end)
    for spec in ("1234", "env:", "fd:x", "file:/tmp/pin"):
        with pytest.raises(BadInputError, match="never accepted|fd: takes|must be env"):
            PinSource.parse(spec)
    with pytest.raises(BadInputError, match="environment variable named by the secret source is not set"):
        PinSource.parse("env:NOT_SET_ANYWHERE").read()


def test_pkcs11_uri():
    ref = parse_pkcs11_uri("pkcs11:token=SMKI-ROOT-OCA;object=root-oca;id=%01?module-path=/opt/hsm/lib.so")
    assert ref == KeyRef("SMKI-ROOT-OCA", "root-oca", b"\x01", "/opt/hsm/lib.so")
    assert parse_pkcs11_uri(ref.uri) == ref
    with pytest.raises(BadInputError, match="pin-value"):
        parse_pkcs11_uri("pkcs11:token=T;object=k;id=%01?pin-value=1234")
    with pytest.raises(BadInputError, match="not a pkcs11: URI"):
        parse_pkcs11_uri("file:///key")


def _store_is_locked() -> bool:
    """Whether another process holds the SoftHSM store lock (asked from a fresh process)."""
    import subprocess
    import sys
    probe = ("import fcntl, os, sys\nfd = os.open(os.environ['SOFTHSM2_CONF'], os.O_RDONLY)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 1


def test_the_store_lock_excludes_other_processes_is_reentrant_and_spares_other_modules(hsm_token):
    from smki.hsm.store_lock import ModuleKind, is_softhsm, remember_module, token_store_lock
    assert not _store_is_locked()
    with token_store_lock(hsm_token.module):
        assert _store_is_locked()
        with token_store_lock(hsm_token.module), token_store_lock():  # nested: no deadlock on our own flock
            assert _store_is_locked()
        assert _store_is_locked()
    assert not _store_is_locked()
    vendor = "/usr/lib/vendor/libvendorpkcs11.so"
    with token_store_lock(vendor):  # not loaded yet, so not known: locked, as if SoftHSM (C_Initialize may read a store)
        assert _store_is_locked()
    remember_module(vendor, ModuleKind.OTHER)  # what load_module records once the module says it is not SoftHSM
    with token_store_lock(vendor):  # a real HSM's module: no lock
        assert not _store_is_locked()
    assert is_softhsm(hsm_token.module), "SoftHSM is known by what it says it is"
