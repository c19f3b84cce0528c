"""m-of-n activation: any m shares rebuild the PIN; fewer, wrong, tampered or repeated shares are refused."""

import base64
import itertools
import json

import pytest

from smki.errors import BadInputError, RefusedError
from smki.hsm.activation import CustodianShare, TokenPins, new_token_secret, recover_secret, split_secret

PASSPHRASES = {"alice": "correct horse", "bob": "battery staple", "carol": "tr0ub4dor", "dave": "hunter2 hunter2"}


@pytest.fixture(scope="module")
def shares():
    secret = new_token_secret()
    return secret, split_secret("root-oca", secret, 3, PASSPHRASES)


def presented(shares, names, passphrases=PASSPHRASES):
    by_name = {share.custodian: share for share in shares}
    return [(by_name[name], passphrases[name]) for name in names]


def test_every_m_subset_recovers_the_secret(shares):
    secret, split = shares
    for names in itertools.combinations(PASSPHRASES, 3):
        recovered, who = recover_secret("root-oca", presented(split, names))
        assert recovered == secret and who == sorted(names)
    recovered, _ = recover_secret("root-oca", presented(split, PASSPHRASES))  # all four also work
    assert recovered == secret


def test_fewer_than_m_shares_are_refused(shares):
    _, split = shares
    for names in itertools.combinations(PASSPHRASES, 2):
        with pytest.raises(RefusedError, match="2 of 3 required custodian shares"):
            recover_secret("root-oca", presented(split, names))


def test_a_wrong_passphrase_is_refused(shares):
    _, split = shares
    with pytest.raises(RefusedError, match="custodian bob: wrong passphrase"):
        recover_secret("root-oca", presented(split, ["alice", "bob", "carol"], {**PASSPHRASES, "bob": "guess"}))


def test_a_tampered_share_file_is_refused(shares, tmp_path):
    _, split = shares
    data = json.loads(split[1].to_json())
    ciphertext = bytearray(base64.b64decode(data["ciphertext"]))
    ciphertext[5] ^= 0x01
    data["ciphertext"] = base64.b64encode(bytes(ciphertext)).decode()
    (tmp_path / "bob.json").write_text(json.dumps(data))
    tampered = CustodianShare.load(tmp_path / "bob.json")
    with pytest.raises(RefusedError, match="altered"):
        recover_secret("root-oca", [(split[0], PASSPHRASES["alice"]), (tampered, PASSPHRASES["bob"]), (split[2], PASSPHRASES["carol"])])
    data = json.loads(split[1].to_json())
    data["custodian"] = "mallory"  # the name is bound into the encryption: renaming is tampering
    (tmp_path / "renamed.json").write_text(json.dumps(data))
    with pytest.raises(RefusedError, match="custodian mallory: wrong passphrase, or the share file was altered"):
        recover_secret("root-oca", [(split[0], "correct horse"), (CustodianShare.load(tmp_path / "renamed.json"), "battery staple"), (split[2], "tr0ub4dor")])


def test_the_same_share_twice_is_refused(shares):
    _, split = shares
    with pytest.raises(RefusedError, match="presented twice: alice"):
        recover_secret("root-oca", presented(split, ["alice", "alice", "bob"]))


def test_shares_of_another_authority_or_set_are_refused(shares):
    _, split = shares
    other = split_secret("root-dca", new_token_secret(), 3, PASSPHRASES)
    with pytest.raises(RefusedError, match="is for root-dca, not root-oca"):
        recover_secret("root-oca", [(split[0], "correct horse"), (other[1], "battery staple"), (split[2], "tr0ub4dor")])


@pytest.mark.parametrize("content", [b"not json", b"{}", b'{"format": "other"}', b"[1, 2]"])
def test_malformed_share_files(tmp_path, content):
    (tmp_path / "share.json").write_bytes(content)
    with pytest.raises(BadInputError, match="malformed share"):
        CustodianShare.load(tmp_path / "share.json")


def test_share_files_hold_no_secret_in_clear(shares):
    secret, split = shares
    pins = TokenPins.from_secret(secret)
    for share in split:
        text = share.to_json()
        assert pins.user_pin.encode() not in text and pins.so_pin.encode() not in text and secret.hex().encode() not in text


def test_threshold_rules():
    with pytest.raises(BadInputError, match="threshold 5 must be between 1 and the number of custodians \\(4\\)"):
        split_secret("root-oca", new_token_secret(), 5, PASSPHRASES)
    with pytest.raises(BadInputError, match="not m-of-n control"):
        split_secret("root-oca", new_token_secret(), 1, PASSPHRASES)


def test_pins_from_secret_are_valid_softhsm_pins():
    pins = TokenPins.from_secret(bytes(range(32)))
    assert pins.user_pin == bytes(range(16)).hex() and pins.so_pin == bytes(range(16, 32)).hex()
