"""Every audit trail ends signed: a root's ceremonies are checkpointed by an audit key in the root's
own token, and a new audit key signs the checkpoint of its own generation."""

import json
from pathlib import Path

import pytest

from conftest import smki as run_cli
from test_ceremony import PASSPHRASES, SOURCES, issuing_key, workspace


def smki(*args, check=True):
    return run_cli(*args, check=check, env=PASSPHRASES)


def verified(database: Path, public_key: Path) -> dict:
    """`smki audit verify --json` of a trail against a pinned audit public key."""
    result = smki("audit", "verify", "--db", str(database), "--public-key", str(public_key), "--json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1)
    return report


def entries(database: Path) -> list[dict]:
    return json.loads(smki("audit", "show", "--db", str(database), "--json").stdout)


@pytest.fixture(scope="module")
def root(tmp_path_factory, hsm_token):
    """The Root OCA made by its key ceremony; its audit public key as the transcript gives it."""
    work = workspace(tmp_path_factory.mktemp("root-audit"), "AUD")
    transcript = json.loads(smki("ceremony", "run", str(work / "ceremonies" / "root-oca.yaml"), *SOURCES, "--json").stdout)
    public_key = work / "root-oca-audit.pub.pem"
    public_key.write_text(transcript["facts"]["audit_key"]["public_key_pem"])
    return work, transcript, public_key


def test_the_key_ceremony_makes_the_audit_key_and_signs_the_whole_trail(root):
    work, transcript, public_key = root
    audit_key = [key for key in transcript["key_attributes"] if key["role"] == "audit key"]
    assert len(audit_key) == 1 and audit_key[0]["sensitive"] is True and audit_key[0]["extractable"] is False
    # The transcript's key is the token's key, read independently of the ceremony.
    from_token = smki("hsm", "pubkey", "--key-uri", "pkcs11:token=T-ROOT-OCA-AUD;object=root-oca-audit;id=%02").stdout
    assert from_token == public_key.read_text()
    report = verified(work / "state" / "root-oca" / "smki.db", public_key)
    assert report["ok"] and report["entries"] >= 2 and report["last_signed_seq"] == report["entries"]


def test_every_later_ceremony_and_its_refusals_end_signed(root, fixtures_dir):
    work, _, public_key = root
    database = work / "state" / "root-oca" / "smki.db"
    issuing_key(work, "issuing-oca", "T-ISSUING-OCA-AUD")
    smki("ceremony", "run", str(work / "ceremonies" / "issuing-oca.yaml"), *SOURCES)
    after_issuing = verified(database, public_key)
    assert after_issuing["ok"] and after_issuing["last_signed_seq"] == after_issuing["entries"]
    # An ARL revoking a certificate this root never issued is refused after the quorum opened the
    # token: the refusal is recorded and signed at once.
    stranger = work / "stranger.pem"
    stranger.write_bytes((fixtures_dir / "issuing-oca-Z1.pem").read_bytes())  # DCC's Issuing OCA: never issued by this root
    arl = (work / "ceremonies" / "arl-oca.yaml").read_text().replace(
        "revoke: []", "revoke:\n  - {certificate: ../stranger.pem, reason: keyCompromise}").replace("root-oca-arl-1", "root-oca-arl-r")
    (work / "ceremonies" / "arl-refused.yaml").write_text(arl)
    refused = smki("ceremony", "run", str(work / "ceremonies" / "arl-refused.yaml"), *SOURCES, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert entries(database)[-1]["outcome"] == "refused"
    after_refusal = verified(database, public_key)
    assert after_refusal["ok"] and after_refusal["entries"] == after_issuing["entries"] + 1
    assert after_refusal["last_signed_seq"] == after_refusal["entries"]
    smki("ceremony", "run", str(work / "ceremonies" / "arl-oca.yaml"), *SOURCES)
    after_arl = verified(database, public_key)
    assert after_arl["ok"] and after_arl["last_signed_seq"] == after_arl["entries"] == after_refusal["entries"] + 1


def test_a_ceremony_on_a_token_without_its_audit_key_is_refused(root):
    work, _, _ = root
    ceremony = (work / "ceremonies" / "arl-oca.yaml").read_text().replace(
        'audit_key: {label: root-oca-audit, id: "02"}', 'audit_key: {label: root-oca-missing, id: "0A"}')
    (work / "ceremonies" / "arl-no-audit-key.yaml").write_text(ceremony.replace("root-oca-arl-1", "root-oca-arl-x"))
    refused = smki("ceremony", "run", str(work / "ceremonies" / "arl-no-audit-key.yaml"), *SOURCES, check=False)
    assert refused.returncode == 4 and "root-oca-missing" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (work / "out" / "root-oca-arl-x.pem").exists()


def test_a_new_audit_key_signs_the_checkpoint_of_its_own_generation(tmp_path, hsm_token):
    uri = f"pkcs11:token={hsm_token.label};object=self-audit;id=%5A"
    state = tmp_path / "librarian-audit"
    smki("hsm", "keygen", "--key-uri", uri, "--pin-source", "env:SMKI_TEST_PIN", "--state", str(state),
         "--audit-key-uri", uri, "--audit-pin-source", "env:SMKI_TEST_PIN")
    public_key = tmp_path / "self-audit.pub.pem"
    smki("hsm", "pubkey", "--key-uri", uri, "--out", str(public_key))
    report = verified(state / "smki.db", public_key)
    assert report["ok"] and report["entries"] == 1 and report["checkpoints"] == 1 and report["last_signed_seq"] == 1
    assert entries(state / "smki.db")[0]["operation"] == "key.generate"
