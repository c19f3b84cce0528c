"""Root ceremonies from the shipped ceremony files, on SoftHSM: roots, Issuing Authorities, ARL,
re-key, contingency recovery; m-of-n activation; and every bad input refused with nothing written."""

import hashlib
import itertools
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from conftest import openssl
from conftest import smki as run_cli
from smki.errors import RefusedError
from smki.hsm import activation

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CEREMONIES = REPO / "smki" / "data" / "ceremonies"
CUSTODIANS = ("alice", "bob", "carol", "dave", "erin")
PASSPHRASES = {f"CEREMONY_PASS_{name}": f"{name} correct horse battery" for name in CUSTODIANS}
SOURCES = [arg for name in CUSTODIANS for arg in ("--passphrase-source", f"{name}=env:CEREMONY_PASS_{name}")]


def smki(*args, check=True, env=None):
    return run_cli(*args, check=check, env={**PASSPHRASES, **(env or {})})


_workspaces = itertools.count(1)


def workspace(tmp: Path, suffix: str) -> Path:
    """The shipped ceremony files (naming the shipped policies, builtin:NAME), with this workspace's own token labels."""
    work = tmp / f"w{next(_workspaces)}"
    (work / "ceremonies").mkdir(parents=True)
    for source in SHIPPED_CEREMONIES.glob("*.yaml"):
        text = source.read_text().replace("SMKI-ROOT-OCA", f"T-ROOT-OCA-{suffix}").replace("SMKI-ROOT-DCA", f"T-ROOT-DCA-{suffix}")
        (work / "ceremonies" / source.name).write_text(text)
    return work


def issuing_key(work: Path, name: str, token: str) -> None:
    """An Issuing Authority's key in its own token; its public key handed to the root ceremony."""
    smki("hsm", "init-token", "--label", token, "--so-pin-source", "env:SMKI_TEST_SO_PIN", "--pin-source", "env:SMKI_TEST_PIN")
    smki("hsm", "keygen", "--token", token, "--key-label", name, "--key-id", "01", "--pin-source", "env:SMKI_TEST_PIN",
         "--state", str(work / "state" / name))
    (work / "requests").mkdir(exist_ok=True)
    smki("hsm", "pubkey", "--token", token, "--key-label", name, "--key-id", "01", "--out", str(work / "requests" / f"{name}.pub.pem"))


# Kept by hand, not smki.testing: the ceremonies that make this PKI (shares, transcripts, contingency keys) are what is tested.
@pytest.fixture(scope="module")
def pki(tmp_path_factory, hsm_token):
    """Both roots and both Issuing Authorities made by ceremony from the shipped files."""
    work = workspace(tmp_path_factory.mktemp("ceremonies"), "A")
    transcripts = {}
    for root in ("root-oca", "root-dca"):
        transcripts[root] = json.loads(smki("ceremony", "run", str(work / "ceremonies" / f"{root}.yaml"), *SOURCES, "--json",
                                            "--operator", "test-operator").stdout)
    for name in ("issuing-oca", "issuing-dca"):
        issuing_key(work, name, f"T-{name.upper()}-A")
        transcripts[name] = json.loads(smki("ceremony", "run", str(work / "ceremonies" / f"{name}.yaml"), *SOURCES, "--json").stdout)
    return work, transcripts


def out(work: Path, name: str) -> Path:
    return work / "out" / name


def test_both_hierarchies_lint_clean_and_verify(pki):
    work, _ = pki
    lint = smki("lint", "--environment", "test", "--json", *(str(out(work, f"{n}.pem")) for n in ("root-oca", "root-dca", "issuing-oca", "issuing-dca")))
    results = json.loads(lint.stdout)
    assert [r["type"] for r in results] == ["root", "root", "issuing-ca", "issuing-ca"] and all(not r["findings"] for r in results)
    for root, issuing in (("root-oca", "issuing-oca"), ("root-dca", "issuing-dca")):
        verified = openssl("verify", "-CAfile", str(out(work, f"{root}.pem")), str(out(work, f"{issuing}.pem")))
        assert verified.returncode == 0 and b": OK" in verified.stdout
    issuing = x509.load_pem_x509_certificate(out(work, "issuing-oca.pem").read_bytes())
    handed_over = load_pem_public_key((work / "requests" / "issuing-oca.pub.pem").read_bytes())
    assert issuing.public_key().public_numbers() == handed_over.public_numbers()


def test_transcript_records_what_witnesses_sign(pki):
    work, transcripts = pki
    transcript = json.loads((work / "transcripts" / "root-oca-key.json").read_text())
    assert transcript == transcripts["root-oca"]
    ceremony_file = work / "ceremonies" / "root-oca.yaml"
    assert transcript["ceremony"]["sha256"] == hashlib.sha256(ceremony_file.read_bytes()).hexdigest()
    assert transcript["policy"]["sha256"] == hashlib.sha256((REPO / "smki" / "data" / "policies" / "organisation.yaml").read_bytes()).hexdigest()
    assert transcript["operator"] == "test-operator" and transcript["custodians_present"] == sorted(CUSTODIANS)
    for output in transcript["outputs"]:
        assert hashlib.sha256(Path(output["file"]).read_bytes()).hexdigest() == output["sha256"]
    keys = {key["role"]: key for key in transcript["key_attributes"]}
    for role in ("root key", "contingency key"):
        assert (keys[role]["local"], keys[role]["never_extractable"], keys[role]["sensitive"], keys[role]["always_sensitive"]) == (True,) * 4
        assert keys[role]["extractable"] is False
    assert [w["witness"] for w in transcript["witness_sign_off"]] == ["Internal auditor", "SMKI PMA observer"]
    text = (work / "transcripts" / "root-oca-key.txt").read_text()
    assert "LOCAL=True, NEVER_EXTRACTABLE=True, SENSITIVE=True, ALWAYS_SENSITIVE=True" in text and "signature ____" in text
    # Shares and passphrases never reach the transcript or the audit trail.
    everything = json.dumps(transcript) + text + _audit_text(work / "state" / "root-oca")
    for passphrase in PASSPHRASES.values():
        assert passphrase not in everything
    share = json.loads((work / "shares" / "root-oca" / "alice.share.json").read_text())
    assert share["ciphertext"] not in everything
    issuing = transcripts["issuing-oca"]
    assert len(issuing["custodians_present"]) == 3
    assert sorted(key["role"] for key in issuing["key_attributes"]) == ["audit key", "root key"]


def _audit_text(state: Path) -> str:
    with sqlite3.connect(state / "smki.db") as connection:
        return json.dumps([list(row) for row in connection.execute("SELECT * FROM audit_entries")])


def test_contingency_extension_unwraps_to_the_contingency_public_key(pki):
    work, _ = pki
    root = x509.load_pem_x509_certificate(out(work, "root-oca.pem").read_bytes())
    extension = root.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.20"))
    assert extension.critical is False
    from smki.profiles.extensions import WrappedApexContingencyKey
    value = WrappedApexContingencyKey.load(extension.value.value, strict=True)
    assert value["wrapAlgorithm"]["algorithm"].dotted == "2.16.840.1.101.3.4.1.45"
    # The contingency public key as the token holds it (a public object).
    smki("hsm", "pubkey", "--token", "T-ROOT-OCA-A", "--key-label", "root-oca-contingency", "--key-id", "03", "--out", str(work / "contingency.pub.pem"))
    in_token = load_pem_public_key((work / "contingency.pub.pem").read_bytes())
    assert x509.load_pem_x509_certificate(out(work, "root-oca.pem").read_bytes()).public_key().public_numbers() != in_token.public_numbers()
    smki("ceremony", "run", str(work / "ceremonies" / "contingency-recovery-oca.yaml"), *SOURCES)
    package = json.loads(out(work, "root-oca-contingency-recovery.json").read_text())
    assert oct(out(work, "root-oca-contingency-recovery.json").stat().st_mode & 0o777) == "0o600"
    # Unwrap independently with cryptography's RFC 3394 implementation and the released key.
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
    plain = aes_key_unwrap(bytes.fromhex(package["wrapping_key_hex"]), value["wrappedContinPubKey"].native)
    spki = in_token.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert plain[:len(spki)] == spki and set(plain[len(spki):]) <= {0} and len(plain) % 8 == 0
    assert load_pem_public_key(package["contingency_public_key_pem"].encode()).public_numbers() == in_token.public_numbers()
    # The wrapping key itself is still in the token, sensitive: recovery exported it wrapped, never in clear.
    assert value["wrappedContinPubKey"].native != plain


def test_arl_lists_the_revoked_issuing_authority(pki, tmp_path):
    work, _ = pki
    ceremony = work / "ceremonies" / "arl-oca.yaml"
    text = ceremony.read_text().replace("revoke: []", "revoke:\n  - {certificate: ../out/issuing-oca.pem, reason: keyCompromise}")
    revoking = work / "ceremonies" / "arl-oca-revoke.yaml"
    revoking.write_text(text.replace("root-oca-arl-1", "root-oca-arl-revoke"))
    smki("ceremony", "run", str(revoking), *SOURCES)
    arl = out(work, "root-oca-arl-revoke.pem")
    shown = openssl("crl", "-in", str(arl), "-noout", "-text").stdout.decode()
    serial = f"{x509.load_pem_x509_certificate(out(work, 'issuing-oca.pem').read_bytes()).serial_number:032X}"
    assert f"Serial Number: {serial}" in shown and "Key Compromise" in shown and "X509v3 CRL Number" in shown
    checked = openssl("verify", "-crl_check", "-CAfile", str(out(work, "root-oca.pem")), "-CRLfile", str(arl), str(out(work, "issuing-oca.pem")))
    assert checked.returncode != 0 and b"certificate revoked" in checked.stdout + checked.stderr
    # The same revocation again is refused: already revoked, nothing written.
    again = work / "ceremonies" / "arl-oca-again.yaml"
    again.write_text(text.replace("root-oca-arl-1", "root-oca-arl-again"))
    refused = smki("ceremony", "run", str(again), *SOURCES, check=False)
    assert refused.returncode == 5 and "already revoked" in refused.stderr and not out(work, "root-oca-arl-again.pem").exists()


def test_every_m_subset_activates_and_m_minus_one_does_not(pki):
    work, _ = pki
    base = (work / "ceremonies" / "arl-oca.yaml").read_text()
    numbers = []
    for index, present in enumerate(itertools.combinations(CUSTODIANS, 3)):
        ceremony = work / "ceremonies" / f"arl-subset-{index}.yaml"
        ceremony.write_text(base.replace("present: [bob, carol, dave]", f"present: [{', '.join(present)}]")
                            .replace("root-oca-arl-1", f"root-oca-arl-subset-{index}"))
        transcript = json.loads(smki("ceremony", "run", str(ceremony), *SOURCES, "--json").stdout)
        assert transcript["custodians_present"] == sorted(present)
        numbers.append(transcript["facts"]["arl"]["crl_number"])
    assert len(numbers) == 10 and numbers == sorted(numbers) and len(set(numbers)) == 10
    short = work / "ceremonies" / "arl-short.yaml"
    short.write_text(base.replace("present: [bob, carol, dave]", "present: [bob, carol]").replace("root-oca-arl-1", "root-oca-arl-short"))
    refused = smki("ceremony", "run", str(short), *SOURCES, check=False)
    assert refused.returncode == 1 and "2 of 3 required custodians" in refused.stderr
    assert not out(work, "root-oca-arl-short.pem").exists() and not (work / "transcripts" / "root-oca-arl-short.json").exists()


@pytest.mark.parametrize("tamper, code, fragment", [
    ("wrong passphrase", 1, "wrong passphrase"),
    ("altered share", 1, "altered"),
    ("malformed share", 3, "malformed share"),
    ("another custodian's share", 1, "the share is alice's, not bob's"),
])
def test_bad_shares_are_refused_and_the_key_unused(pki, tamper, code, fragment):
    work, _ = pki
    shares = work / "shares" / "root-oca"
    presented = work / f"shares-{tamper.replace(' ', '-').replace(chr(39), '')}"
    shutil.copytree(shares, presented)
    env = {}
    if tamper == "wrong passphrase":
        env["CEREMONY_PASS_bob"] = "not bob's passphrase"
    elif tamper == "altered share":
        data = json.loads((presented / "bob.share.json").read_text())
        data["threshold"] = 2
        (presented / "bob.share.json").write_text(json.dumps(data))
    elif tamper == "malformed share":
        (presented / "bob.share.json").write_text("{not json")
    else:
        shutil.copy(presented / "alice.share.json", presented / "bob.share.json")
    ceremony = work / "ceremonies" / f"arl-{presented.name}.yaml"
    ceremony.write_text((work / "ceremonies" / "arl-oca.yaml").read_text()
                        .replace("present: [bob, carol, dave]", "present: [alice, bob, carol]")
                        .replace("../shares/root-oca", f"../{presented.name}").replace("root-oca-arl-1", f"arl-{presented.name}"))
    before = _state_counts(work / "state" / "root-oca")
    refused = smki("ceremony", "run", str(ceremony), *SOURCES, check=False, env=env)
    assert refused.returncode == code and fragment in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not out(work, f"arl-{presented.name}.pem").exists()
    assert _state_counts(work / "state" / "root-oca")[:2] == before[:2], "no record and no CRL number spent"


def _state_counts(state: Path) -> tuple[int, int, int]:
    with sqlite3.connect(state / "smki.db") as connection:
        return tuple(connection.execute(sql).fetchone()[0] for sql in (
            "SELECT COUNT(*) FROM certificates", "SELECT COALESCE(MAX(last_number), 0) FROM crl_numbers", "SELECT COUNT(*) FROM audit_entries"))


def test_root_rekey_cross_certifies_the_new_root(pki):
    work, _ = pki
    smki("ceremony", "run", str(work / "ceremonies" / "root-oca-rekey.yaml"), *SOURCES)
    old = x509.load_pem_x509_certificate(out(work, "root-oca.pem").read_bytes())
    new = x509.load_pem_x509_certificate(out(work, "root-oca-2.pem").read_bytes())
    cross = x509.load_pem_x509_certificate(out(work, "root-oca-2-cross.pem").read_bytes())
    assert new.subject == old.subject and new.public_key().public_numbers() != old.public_key().public_numbers()
    assert cross.public_key().public_numbers() == new.public_key().public_numbers()
    cross.verify_directly_issued_by(old)
    assert cross.not_valid_after_utc <= old.not_valid_after_utc
    lint = json.loads(smki("lint", "--environment", "test", "--json", str(out(work, "root-oca-2.pem")), str(out(work, "root-oca-2-cross.pem"))).stdout)
    assert [(r["type"], r["findings"]) for r in lint] == [("root", []), ("cross-certificate", [])]
    # A party that trusts only the old root reaches the new root's key through the cross-certificate.
    verified = openssl("verify", "-CAfile", str(out(work, "root-oca.pem")), str(out(work, "root-oca-2-cross.pem")))
    assert verified.returncode == 0


BAD_FILES = {
    "unknown key": (lambda t: t.replace("environment: test", "environment: test\nbogus: 1"), 3, "bogus: unknown key"),
    "missing field": (lambda t: t.replace("environment: test\n", ""), 3, "'environment' is a required property"),
    "wrong type": (lambda t: t.replace("witnesses: [Internal auditor]", "witnesses: 7"), 3, "witnesses: 7 is not of type 'array'"),
    "validity beyond the policy": (lambda t: t.replace('  not_before: "2026-01-01"', '  not_before: "2026-01-01"\n  not_after: "2080-01-01"'),
                                   1, "6.3.2 validity"),
    "HSM key missing": (lambda t: t.replace("{label: root-oca, id: \"01\"}", "{label: no-such-key, id: \"01\"}"), 4, "no private key with label 'no-such-key'"),
    "same custodian twice": (lambda t: t.replace("present: [alice, carol, erin]", "present: [alice, alice, carol]"), 3, "non-unique elements"),
    "key not the issuer's": (lambda t: t.replace("issuer_certificate: ../out/root-oca.pem", "issuer_certificate: ../out/root-dca.pem"),
                             3, "does not match the issuer certificate"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_ceremony_files_are_refused_with_nothing_written(pki, case):
    work, _ = pki
    change, code, fragment = BAD_FILES[case]
    slug = case.replace(" ", "-").replace("'", "")
    text = (work / "ceremonies" / "issuing-oca.yaml").read_text().replace("../out/issuing-oca.pem", f"../out/bad-{slug}.pem") \
        .replace("issuing-oca-certificate.json", f"bad-{slug}.json")
    ceremony = work / "ceremonies" / f"bad-{slug}.yaml"
    ceremony.write_text(change(text))
    before = _state_counts(work / "state" / "root-oca")
    refused = smki("ceremony", "run", str(ceremony), *SOURCES, check=False)
    assert refused.returncode == code and fragment in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    if case in ("unknown key", "missing field", "wrong type"):  # file:line: field: what is wrong
        assert refused.stderr.startswith(f"smki: error: {ceremony}:") and refused.stderr[len(f"smki: error: {ceremony}:"):].split(":")[0].isdigit()
    assert not out(work, f"bad-{slug}.pem").exists() and not (work / "transcripts" / f"bad-{slug}.json").exists()
    assert _state_counts(work / "state" / "root-oca")[:2] == before[:2]


def test_an_existing_output_refuses_before_the_hsm_is_touched(tmp_path, hsm_token):
    work = workspace(tmp_path, "B")
    (work / "out").mkdir()
    (work / "out" / "root-dca.pem").write_text("an earlier ceremony's certificate")
    refused = smki("ceremony", "run", str(work / "ceremonies" / "root-dca.yaml"), *SOURCES, check=False)
    assert refused.returncode == 5 and "already exists" in refused.stderr
    assert (work / "out" / "root-dca.pem").read_text() == "an earlier ceremony's certificate"
    assert "T-ROOT-DCA-B" not in smki("hsm", "list").stdout, "no token was created"
    assert not (work / "shares").exists() and not (work / "transcripts").exists()


def test_a_failed_root_ceremony_leaves_no_token(tmp_path, hsm_token):
    work = workspace(tmp_path, "C")
    ceremony = work / "ceremonies" / "root-dca.yaml"
    ceremony.write_text(ceremony.read_text().replace('  not_before: "2026-01-01"', '  not_before: "2026-01-01"\n  not_after: "2099-01-01"'))
    refused = smki("ceremony", "run", str(ceremony), *SOURCES, check=False)
    assert refused.returncode == 1 and "6.3.2 validity" in refused.stderr
    assert "T-ROOT-DCA-C" not in smki("hsm", "list").stdout
    assert not (work / "shares").exists() and not (work / "out").exists()


def test_custody_comes_from_the_policy(tmp_path, hsm_token):
    work = workspace(tmp_path, "D")
    ceremony = work / "ceremonies" / "root-dca.yaml"
    ceremony.write_text(ceremony.read_text().replace("names: [alice, bob, carol, dave, erin]", "names: [alice, bob, carol]"))
    refused = smki("ceremony", "run", str(ceremony), *SOURCES, check=False)
    assert refused.returncode == 1 and "requires 5 custodians" in refused.stderr


def test_check_shows_the_plan_and_touches_nothing(tmp_path):
    work = workspace(tmp_path, "E")
    plan = json.loads(smki("ceremony", "check", str(work / "ceremonies" / "root-oca.yaml"), "--json").stdout)
    assert plan["custody"] == {"threshold": 3, "custodians": 5} and plan["token"] == "T-ROOT-OCA-E"
    assert not (work / "state").exists()


def test_shares_combine_only_with_the_threshold(pki):
    # The library's own check, against the real share files a ceremony wrote.
    work, _ = pki
    shares = [activation.CustodianShare.load(work / "shares" / "root-oca" / f"{name}.share.json") for name in CUSTODIANS]
    passphrase = {name: PASSPHRASES[f"CEREMONY_PASS_{name}"] for name in CUSTODIANS}
    secret, _ = activation.recover_secret("root-oca", [(s, passphrase[s.custodian]) for s in shares[:3]])
    assert secret == activation.recover_secret("root-oca", [(s, passphrase[s.custodian]) for s in shares[2:]])[0]
    with pytest.raises(RefusedError, match="2 of 3"):
        activation.recover_secret("root-oca", [(s, passphrase[s.custodian]) for s in shares[:2]])


def test_a_compressed_public_key_is_refused_before_the_root_signs(pki):
    work, _ = pki
    from cryptography.hazmat.primitives.asymmetric import ec
    import base64
    import csr_factory
    compressed = csr_factory.spki(ec.generate_private_key(ec.SECP256R1()), PublicFormat.CompressedPoint)
    (work / "requests" / "compressed.pub.pem").write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(compressed) + b"-----END PUBLIC KEY-----\n")
    ceremony = work / "ceremonies" / "bad-compressed.yaml"
    ceremony.write_text((work / "ceremonies" / "issuing-oca.yaml").read_text().replace("issuing-oca.pub.pem", "compressed.pub.pem")
                        .replace("../out/issuing-oca.pem", "../out/bad-compressed.pem").replace("issuing-oca-certificate.json", "bad-compressed.json"))
    refused = smki("ceremony", "run", str(ceremony), *SOURCES, check=False)
    assert refused.returncode == 3 and "not uncompressed" in refused.stderr, refused.stderr
    assert not out(work, "bad-compressed.pem").exists()


def test_a_malformed_passphrase_source_is_a_usage_error(tmp_path):
    work = workspace(tmp_path, "F")
    refused = smki("ceremony", "run", str(work / "ceremonies" / "root-dca.yaml"), "--passphrase-source", "alice", check=False)
    assert refused.returncode == 3 and "give CUSTODIAN=SOURCE" in refused.stderr
    assert not (work / "shares").exists() and not (work / "state").exists()
