"""The Root Authority through the library: every public method of `RootAuthority` and `generate_key`,
and its refusals, with the CLI's error classes and messages, leaving nothing half-written."""

import itertools
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import smki as run_cli
from smki.errors import BadInputError, ConflictError, SmkiError
from smki.hsm.pins import PinSource
from smki.operations.keys import GeneratedKey, generate_key
from smki.operations.results import IssuedCertificate, IssuedCrl, Revocation
from smki.policy import PolicyRefusal
from smki.root.authority import RootAuthority
from smki.store import find_certificate, open_database
from test_ceremony import PASSPHRASES, workspace

REPO = Path(__file__).resolve().parents[1]
ORG_POLICY = REPO / "smki" / "data" / "policies" / "organisation.yaml"
_key_ids = itertools.count(0xA001)


def new_key(token, label: str):
    """A KeyRef not yet in the test token (ids from a range no other test file uses)."""
    number = next(_key_ids)
    return token.key_ref(f"{label}-{number:X}", number.to_bytes(2, "big"))


def audit_rows(state: Path) -> list[dict]:
    with sqlite3.connect(state / "smki.db") as connection:
        rows = connection.execute("SELECT operation, outcome, subject, details FROM audit_entries ORDER BY seq").fetchall()
    return [{"operation": o, "outcome": r, "subject": json.loads(s), "details": json.loads(d)} for o, r, s, d in rows]


def record_count(state: Path) -> int:
    with sqlite3.connect(state / "smki.db") as connection:
        return connection.execute("SELECT count(*) FROM certificates").fetchone()[0]


def software_request(private_key=None, *, break_signature: bool = False) -> bytes:
    """A PKCS#10 request (PEM) for an Issuing Authority's key; optionally with its signature broken."""
    private_key = private_key or ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Issuing Authority")]))
               .sign(private_key, hashes.SHA256()))
    der = bytearray(request.public_bytes(Encoding.DER))
    if break_signature:
        der[-1] ^= 0x01
    return bytes(der)


@pytest.fixture(scope="module")
def root(tmp_path_factory, hsm_token):
    """A Root OCA made through the library: key generated and audited, policy adopted, self-signed."""
    directory = tmp_path_factory.mktemp("root-authority")
    state, key = directory / "state", new_key(hsm_token, "ra-root")
    generated = generate_key(state, key, hsm_token.pin, actor="tester")
    authority = RootAuthority(state, key=key, pin=hsm_token.pin, policy=ORG_POLICY, environment="test", actor="tester")
    adoption = authority.adopt_policy()
    issued = authority.self_sign(not_before="2026-01-01", out=directory / "root.pem")
    yield {"directory": directory, "state": state, "key": key, "generated": generated, "authority": authority,
           "adoption": adoption, "root": issued}
    authority.close()


def certified_issuing_ca(root, hsm_token) -> IssuedCertificate:
    """A fresh Issuing OCA certificate from the root (for a software key: only the root signs here)."""
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return root["authority"].certify_issuing_authority(public_key, not_before="2026-01-02")


# -- generate_key -------------------------------------------------------------------------------------
def test_generate_key_makes_an_audited_key_with_the_required_attributes(root, hsm_token):
    generated = root["generated"]
    assert isinstance(generated, GeneratedKey)
    summary = generated.summary()
    assert summary["key_uri"] == root["key"].uri and summary["violations"] == [] and generated.violations == ()
    assert summary["attributes"]["sensitive"] is True and summary["attributes"]["extractable"] is False
    exported = run_cli("hsm", "pubkey", "--key-uri", root["key"].uri).stdout.encode()
    assert exported == generated.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    first = audit_rows(root["state"])[0]
    assert (first["operation"], first["outcome"]) == ("key.generate", "success")
    assert first["subject"] == {"key_uri": root["key"].uri, "subject_key_identifier": generated.subject_key_identifier}
    assert first["details"]["violations"] == [] and first["details"]["attributes"] == summary["attributes"]


def test_a_generated_audit_key_signs_its_own_generation(tmp_path, hsm_token):
    key = new_key(hsm_token, "ra-audit")
    generate_key(tmp_path / "state", key, PinSource.parse("env:SMKI_TEST_PIN"), actor="tester", audit_key=key,
                 audit_pin=hsm_token.pin)
    with sqlite3.connect(tmp_path / "state" / "smki.db") as connection:
        assert connection.execute("SELECT seq FROM audit_checkpoints").fetchall() == [(1,)]


def test_generate_key_refuses_a_label_in_use_and_audits_the_refusal(root, hsm_token, tmp_path):
    with pytest.raises(SmkiError) as refused:
        generate_key(tmp_path / "state", root["key"], hsm_token.pin, actor="tester")
    rows = audit_rows(tmp_path / "state")
    assert [(r["operation"], r["outcome"]) for r in rows] == [("key.generate", "refused")]
    assert rows[0]["details"]["reason"] == str(refused.value) and hsm_token.pin not in json.dumps(rows)


# -- self_sign, certify_issuing_authority ---------------------------------------------------------------
def test_self_sign_records_audits_and_writes_the_root(root):
    issued, directory = root["root"], root["directory"]
    certificate = issued.certificate
    certificate.verify_directly_issued_by(certificate)
    assert (directory / "root.pem").read_bytes() == issued.pem and issued.file == directory / "root.pem"
    assert root["adoption"]["kind"] == "organisation" and root["adoption"]["replaces"] is None
    [record] = find_certificate(open_database(root["state"] / "smki.db", read_only=True), issued.serial_hex)
    assert record.certificate_type == "root" and record.der == issued.der and record.policy_sha256 == issued.policy_identity["sha256"]
    operations = [(r["operation"], r["outcome"]) for r in audit_rows(root["state"])]
    assert operations[:3] == [("key.generate", "success"), ("policy.adopt", "success"), ("certificate.issue.root", "success")]
    summary = issued.summary()
    assert summary["serial"] == issued.serial_hex and summary["issuer"] == summary["subject"] and summary["file"] == str(issued.file)


@pytest.mark.parametrize("form", ["key", "request object", "request bytes", "request file", "public key file"])
def test_certify_issuing_authority_from_a_key_or_a_request(root, tmp_path, form):
    private_key = ec.generate_private_key(ec.SECP256R1())
    request = software_request(private_key)
    given = {"key": private_key.public_key(), "request object": x509.load_der_x509_csr(request), "request bytes": request}.get(form)
    if form == "request file":
        given = tmp_path / "issuing.csr"
        given.write_bytes(x509.load_der_x509_csr(request).public_bytes(Encoding.PEM))
    elif form == "public key file":
        given = tmp_path / "issuing.pub.pem"
        given.write_bytes(private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    issued = root["authority"].certify_issuing_authority(given, not_before="2026-01-02", out=tmp_path / "issuing.pem")
    issued.certificate.verify_directly_issued_by(root["root"].certificate)
    assert issued.certificate.public_key().public_numbers() == private_key.public_key().public_numbers()
    assert issued.record.certificate_type == "issuing-ca" and (tmp_path / "issuing.pem").read_bytes() == issued.pem
    last = audit_rows(root["state"])[-1]
    assert (last["operation"], last["outcome"], last["subject"]["serial"]) == ("certificate.issue.issuing-ca", "success", issued.serial_hex)


def test_a_request_whose_signature_does_not_verify_is_refused(root, tmp_path):
    before = record_count(root["state"])
    with pytest.raises(BadInputError, match="the request's signature does not verify"):
        root["authority"].certify_issuing_authority(software_request(break_signature=True), out=tmp_path / "issuing.pem")
    assert record_count(root["state"]) == before and not (tmp_path / "issuing.pem").exists()
    assert audit_rows(root["state"])[-1]["outcome"] == "refused"


# -- revoke, issue_arl --------------------------------------------------------------------------------
def test_revoke_then_issue_arl(root, hsm_token, tmp_path):
    authority = root["authority"]
    issuing = certified_issuing_ca(root, hsm_token)
    revocation = authority.revoke(int(issuing.serial_hex, 16), "keyCompromise")
    assert isinstance(revocation, Revocation)
    assert (revocation.serial_hex, revocation.method, revocation.reason) == (issuing.serial_hex, "arl", "keyCompromise")
    assert revocation.summary()["serial"] == issuing.serial_hex
    revoked = audit_rows(root["state"])[-1]
    assert (revoked["operation"], revoked["outcome"], revoked["subject"]["type"]) == ("certificate.revoke", "success", "issuing-ca")
    first = authority.issue_arl(out=tmp_path / "arl-1.pem")
    second = authority.issue_arl()
    assert isinstance(first, IssuedCrl) and first.list_type == "arl" and second.number == first.number + 1
    assert (tmp_path / "arl-1.pem").read_bytes() == first.pem and second.file is None
    assert first.crl.is_signature_valid(root["root"].certificate.public_key())
    assert first.crl.get_revoked_certificate_by_serial_number(int(issuing.serial_hex, 16)) is not None
    assert first.summary()["type"] == "arl" and first.summary()["entries"] == first.entries >= 1
    shown = run_cli("lint", "--environment", "test", "--json", str(tmp_path / "arl-1.pem"))
    assert all(not result["findings"] for result in json.loads(shown.stdout))
    last = audit_rows(root["state"])[-1]
    assert (last["operation"], last["outcome"], last["subject"]["crl_number"]) == ("arl.issue", "success", second.number)


# -- refusals: the CLI's classes and messages, nothing half-written ------------------------------------
def _refused(root, call, error, fragment):
    """Run `call`, which must raise `error` with `fragment`; the state holds no new record, the trail a refusal."""
    before = record_count(root["state"])
    with pytest.raises(error) as raised:
        call()
    assert fragment in str(raised.value), str(raised.value)
    assert record_count(root["state"]) == before
    last = audit_rows(root["state"])[-1]
    assert last["outcome"] == "refused" and last["details"]["reason"] == str(raised.value)
    return str(raised.value)


def test_a_serial_this_root_never_issued_is_refused(root):
    _refused(root, lambda: root["authority"].revoke("0123456789ABCDEF", "keyCompromise"), BadInputError,
             "this root has no record of issuing serial 0123456789ABCDEF")


def test_an_already_revoked_serial_is_refused(root, hsm_token):
    issuing = certified_issuing_ca(root, hsm_token)
    root["authority"].revoke(issuing.serial_hex, "superseded")
    _refused(root, lambda: root["authority"].revoke(issuing.serial_hex.lower(), "keyCompromise"), ConflictError,
             f"serial {issuing.serial_hex} is already revoked")


def test_a_reason_the_policy_forbids_is_refused(root, hsm_token):
    issuing = certified_issuing_ca(root, hsm_token)
    message = _refused(root, lambda: root["authority"].revoke(issuing.serial_hex, "becauseISaySo"), PolicyRefusal, "4.9 reasons")
    assert "'becauseISaySo' is not allowed" in message
    with sqlite3.connect(root["state"] / "smki.db") as connection:
        assert connection.execute("SELECT count(*) FROM revocations WHERE serial_hex = ?", (issuing.serial_hex,)).fetchone() == (0,)


def test_an_existing_output_is_refused_before_anything_is_signed(root, tmp_path):
    existing = tmp_path / "exists.pem"
    existing.write_bytes(b"keep me")
    _refused(root, lambda: root["authority"].self_sign(out=existing), ConflictError, f"{existing} already exists")
    _refused(root, lambda: root["authority"].certify_issuing_authority(ec.generate_private_key(ec.SECP256R1()).public_key(), out=existing),
             ConflictError, "already exists; not overwriting it")
    number_before = root["authority"].issue_arl().number
    _refused(root, lambda: root["authority"].issue_arl(out=existing), ConflictError, "already exists")
    assert existing.read_bytes() == b"keep me"
    assert root["authority"].issue_arl().number == number_before + 1, "a refused ARL takes no cRLNumber"


def test_a_key_that_is_not_the_certificate_key_is_refused_as_the_cli_refuses_it(root, hsm_token, tmp_path):
    other = new_key(hsm_token, "ra-other")
    generate_key(tmp_path / "keygen-state", other, hsm_token.pin, actor="tester")
    public_key = tmp_path / "issuing.pub.pem"
    public_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    wrong = RootAuthority(root["state"], certificate=root["directory"] / "root.pem", key=other, pin=hsm_token.pin,
                          policy=ORG_POLICY, environment="test", actor="tester")
    with wrong:
        message = _refused(root, lambda: wrong.certify_issuing_authority(public_key, out=tmp_path / "library.pem"), BadInputError,
                           "does not match the issuer certificate's public key; nothing signed")
        _refused(root, lambda: wrong.issue_arl(out=tmp_path / "library-arl.pem"), BadInputError, message)
    cli = run_cli("cert", "issuing-ca", "--key-uri", other.uri, "--pin-source", "env:SMKI_TEST_PIN", "--state", str(root["state"]),
                  "--policy", str(ORG_POLICY), "--environment", "test", "--issuer-cert", str(root["directory"] / "root.pem"),
                  "--public-key", str(public_key), "--out", str(tmp_path / "cli.pem"), check=False)
    assert cli.returncode == BadInputError.exit_code and cli.stderr.strip() == f"smki: error: {message}"
    assert not any((tmp_path / name).exists() for name in ("library.pem", "library-arl.pem", "cli.pem"))


def test_missing_parts_and_bad_values_are_refused_by_name(root, tmp_path):
    with RootAuthority(root["state"], policy=ORG_POLICY, environment="test") as bare:
        with pytest.raises(BadInputError, match="no key given"):
            bare.self_sign()
        with pytest.raises(BadInputError, match="no root certificate given"):
            bare.revoke("01", "keyCompromise")
    with RootAuthority(tmp_path / "state", key=root["key"], policy=ORG_POLICY, environment="staging") as staging:
        with pytest.raises(BadInputError, match="unknown environment 'staging'"):
            staging.self_sign()
    with RootAuthority(tmp_path / "state", key=root["key"], policy=ORG_POLICY, environment="test") as unadopted:
        with pytest.raises(ConflictError, match="no organisation policy adopted"):
            unadopted.self_sign()
    assert [r["outcome"] for r in audit_rows(tmp_path / "state")] == ["refused"] * 2


# -- ceremonies ---------------------------------------------------------------------------------------
def test_check_ceremony_and_run_ceremony(tmp_path, hsm_token):
    work = workspace(tmp_path, "RA")
    ceremony_file = work / "ceremonies" / "root-dca.yaml"
    plan = RootAuthority.check_ceremony(ceremony_file)
    assert plan["ceremony"] == "root-key" and plan["token"] == "T-ROOT-DCA-RA" and len(plan["custodians"]) == 5
    assert not (work / "out").exists(), "a check writes nothing"
    # A root-key ceremony creates its token, which a process sees only if it loads the PKCS#11 module
    # afterwards (SoftHSM reads its store once): so this library call runs in a fresh process.
    script = (
        "import json, sys\n"
        "from smki.root.authority import RootAuthority\n"
        "passphrases = json.loads(sys.argv[2])\n"
        "transcript = RootAuthority.run_ceremony(sys.argv[1], operator='library', passphrase=passphrases)\n"
        "print(json.dumps({'transcript': transcript, 'files': [str(f) for f in transcript.files], 'summary': transcript.summary()}))\n")
    passphrases = {name.removeprefix("CEREMONY_PASS_"): passphrase for name, passphrase in PASSPHRASES.items()}
    ran = subprocess.run([sys.executable, "-c", script, str(ceremony_file), json.dumps(passphrases)], capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    transcript, (json_file, text_file) = result["transcript"], map(Path, result["files"])
    assert transcript == json.loads(json_file.read_text()) == result["summary"] and text_file.exists()
    assert transcript["operator"] == "library" and transcript["ceremony"]["type"] == "root-key"
    for passphrase in passphrases.values():
        assert passphrase not in ran.stdout + ran.stderr + text_file.read_text()
    with pytest.raises(ConflictError, match="already exists"):
        RootAuthority.check_ceremony(ceremony_file)
    with pytest.raises(ConflictError, match="already exists"):
        RootAuthority.run_ceremony(ceremony_file, passphrase=passphrases)
