"""The Foundation commands through the real CLI: happy paths and every bad input of issue 2."""

import json
import os
import subprocess
import sys

import pytest
from cryptography import x509

from smki.errors import EXIT_BAD_INPUT, EXIT_CONFLICT, EXIT_HSM, EXIT_REFUSED

from pathlib import Path

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
ORG_POLICY = ["--policy", str(POLICIES / "organisation.yaml"), "--environment", "test"]
DEVICE_POLICY = ["--policy", str(POLICIES / "device.yaml"), "--environment", "test"]
PIN = ["--pin-source", "env:SMKI_TEST_PIN"]
STATE: list[str] = []  # set by the `ca` fixture: ["--state", <the test authority's state directory>]


def one_line_error(result, code, *fragments):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smki: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# Kept by hand, not smki.testing: this set-up is CLI under test (policy adopt, hsm keygen, cert root, cert issuing-ca into one
# state), and test_issuance_and_key_generation_are_recorded_and_audited asserts on the records and audit entries it leaves.
@pytest.fixture(scope="module")
def ca(tmp_path_factory, hsm_token, new_hsm_key):
    """A CLI-made root and Issuing OCA/DCA in the test token, plus subscriber keys made by openssl."""
    from conftest import openssl
    import os, sys
    directory = tmp_path_factory.mktemp("cli-ca")
    STATE[:] = ["--state", str(directory / "state")]
    run = lambda *a: subprocess.run([sys.executable, "-m", "smki.cli.main", *a], capture_output=True, text=True, env=os.environ.copy())
    assert run("policy", "adopt", ORG_POLICY[1], *STATE).returncode == 0
    for label, key_id in (("cli-root", "c1"), ("cli-issuing", "c2")):
        assert run("hsm", "keygen", "--token", hsm_token.label, "--key-label", label, "--key-id", key_id, *PIN, *STATE).returncode == 0
    root, issuing = directory / "root.pem", directory / "issuing.pem"
    result = run("cert", "root", "--token", hsm_token.label, "--key-label", "cli-root", "--key-id", "c1", *PIN, *STATE,
                 *ORG_POLICY, "--not-before", "2026-01-01", "--out", str(root))
    assert result.returncode == 0, result.stderr
    assert run("hsm", "pubkey", "--token", hsm_token.label, "--key-label", "cli-issuing", "--key-id", "c2", "--out", str(directory / "issuing.pub")).returncode == 0
    result = run("cert", "issuing-ca", "--token", hsm_token.label, "--key-label", "cli-root", "--key-id", "c1", *PIN, *STATE,
                 "--issuer-cert", str(root), "--public-key", str(directory / "issuing.pub"),
                 *ORG_POLICY, "--not-before", "2026-01-01", "--out", str(issuing))
    assert result.returncode == 0, result.stderr
    for name, curve, form in (("good", "prime256v1", "uncompressed"), ("compressed", "prime256v1", "compressed"), ("p384", "secp384r1", "uncompressed")):
        assert openssl("ecparam", "-name", curve, "-genkey", "-noout", "-out", str(directory / f"{name}.key")).returncode == 0
        assert openssl("ec", "-in", str(directory / f"{name}.key"), "-pubout", "-conv_form", form, "-out", str(directory / f"{name}.pub")).returncode == 0
    return directory


def org_args(ca, out, **overrides):
    values = {"--token": None, "--key-label": "cli-issuing", "--key-id": "c2", "--issuer-cert": str(ca / "issuing.pem"),
              "--public-key": str(ca / "good.pub"), "--role": "supplier", "--entity-id": "90-B3-D5-1F-30-01-00-00",
              "--usage": "DS", "--policy": ORG_POLICY[1], "--environment": "test", "--not-before": "2026-02-01", "--out": str(out)}
    values.update(overrides)
    return values


def as_argv(values):
    argv = []
    for option, value in values.items():
        argv += [option, value]
    return argv + STATE + PIN


def test_cli_issues_an_organisation_certificate(run_smki, ca, hsm_token, tmp_path):
    out = tmp_path / "org.pem"
    result = run_smki("cert", "organisation", *as_argv(org_args(ca, out, **{"--token": hsm_token.label})), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    certificate = x509.load_pem_x509_certificate(out.read_bytes())
    assert report["serial"] == f"{certificate.serial_number:032X}"
    assert certificate.issuer == x509.load_pem_x509_certificate((ca / "issuing.pem").read_bytes()).subject


@pytest.mark.parametrize("override, code, fragments", [
    ({"--entity-id": "90-B3-D5-1F-30-01-00"}, EXIT_BAD_INPUT, ["malformed EUI-64", "expected 16 hex digits"]),
    ({"--entity-id": "90B3D51F3001000X"}, EXIT_BAD_INPUT, ["malformed EUI-64", "not hexadecimal"]),
    ({"--role": "plumber"}, EXIT_BAD_INPUT, ["unknown RemotePartyRole 'plumber'"]),
    ({"--usage": "XX"}, EXIT_BAD_INPUT, ["unknown key usage 'XX'"]),
    ({"--public-key": "compressed.pub"}, EXIT_BAD_INPUT, ["compressed.pub", "not uncompressed"]),
    ({"--public-key": "p384.pub"}, EXIT_BAD_INPUT, ["p384.pub", "not P-256"]),
    ({"--key-label": "no-such-key"}, EXIT_HSM, ["no private key with label 'no-such-key'"]),
    ({"--key-label": "cli-root", "--key-id": "c1"}, EXIT_BAD_INPUT, ["does not match the issuer certificate"]),
    ({"--token": "NO-SUCH-TOKEN"}, EXIT_HSM, ["token 'NO-SUCH-TOKEN' not found"]),
    ({"--requester": "networkOperator"}, EXIT_REFUSED, ["policy 4.1 eligibility", "networkOperator may not request certificates for role supplier"]),
    ({"--environment": "staging"}, EXIT_BAD_INPUT, ["unknown environment 'staging'"]),
    ({"--policy": str(POLICIES / "device.yaml")}, EXIT_CONFLICT, ["no device policy adopted"]),
])
def test_bad_inputs_give_one_line_and_write_nothing(run_smki, ca, hsm_token, tmp_path, override, code, fragments):
    override = {k: (str(ca / v) if k == "--public-key" else v) for k, v in override.items()}
    values = org_args(ca, tmp_path / "org.pem", **{"--token": hsm_token.label, **override})
    one_line_error(run_smki("cert", "organisation", *as_argv(values)), code, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_unknown_device_type(run_smki, ca, hsm_token, tmp_path):
    result = run_smki("cert", "device", "--token", hsm_token.label, "--key-label", "cli-issuing", "--key-id", "c2", *PIN, *STATE,
                      "--issuer-cert", str(ca / "issuing.pem"), "--public-key", str(ca / "good.pub"), "--device-id", "00DB1234567890A0",
                      "--device-type", "TOASTER", "--requester", "supplier", "--usage", "KA", *DEVICE_POLICY, "--out", str(tmp_path / "d.pem"))
    one_line_error(result, EXIT_CONFLICT, "no device policy adopted")  # the state adopted only the organisation policy
    assert not (tmp_path / "d.pem").exists()


def test_wrong_pin(run_smki, ca, hsm_token, tmp_path):
    values = org_args(ca, tmp_path / "org.pem", **{"--token": hsm_token.label})
    argv = as_argv(values)[:-2] + ["--pin-source", "env:WRONG_PIN"]
    line = one_line_error(run_smki("cert", "organisation", *argv, env={"WRONG_PIN": "00000000"}), EXIT_HSM, "PIN incorrect")
    assert "00000000" not in line
    assert not (tmp_path / "org.pem").exists()


def test_wrong_module_path(run_smki, hsm_token):
    one_line_error(run_smki("hsm", "list", "--module", "/nonexistent/libpkcs11.so"), EXIT_HSM, "cannot load PKCS#11 module /nonexistent/libpkcs11.so")
    one_line_error(run_smki("hsm", "list", "--token", hsm_token.label, "--module", "/usr/lib/x86_64-linux-gnu/libc.so.6"), EXIT_HSM, "cannot load PKCS#11 module")


def test_ambiguous_key_label(run_smki, hsm_token):
    """smki keygen refuses duplicates, but another tool may have made two keys with one label and id."""
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters
    from smki.hsm.keys import P256_OID
    from smki.hsm.session import open_session
    session = open_session(hsm_token.module, hsm_token.label, hsm_token.pin, rw=True)
    for _ in range(2):
        params = session.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256_OID)}, local=True)
        params.generate_keypair(store=True, label="dup-cli", id=b"\xa1")
    one_line_error(run_smki("hsm", "pubkey", "--key-uri", f"pkcs11:token={hsm_token.label};object=dup-cli;id=%a1"),
                   EXIT_HSM, "2 public keys match label 'dup-cli', id a1", "ambiguous")
    one_line_error(run_smki("hsm", "pubkey", "--key-uri", f"pkcs11:token={hsm_token.label};object=dup-cli"),
                   EXIT_BAD_INPUT, "no CKA_ID")
    # A listing shows what the token holds, both twins included, with each one's own attributes.
    listed = run_smki("hsm", "list", "--token", hsm_token.label, *PIN, "--json")
    assert listed.returncode == 0, listed.stderr
    twins = [key for key in json.loads(listed.stdout)["keys"] if key["label"] == "dup-cli"]
    assert sorted(key["class"] for key in twins) == ["private", "private", "public", "public"]
    assert len({key["subject_key_identifier"] for key in twins if key["class"] == "public"}) == 2


def test_pin_never_accepted_on_the_command_line(run_smki, hsm_token, tmp_path):
    one_line_error(run_smki("hsm", "keygen", "--token", hsm_token.label, "--key-label", "x", "--key-id", "99", "--pin-source", "1234", "--state", str(tmp_path)),
                   EXIT_BAD_INPUT, "a PIN itself is never accepted")


def test_output_is_never_overwritten(run_smki, ca, hsm_token, tmp_path):
    out = tmp_path / "org.pem"
    out.write_text("precious")
    one_line_error(run_smki("cert", "organisation", *as_argv(org_args(ca, out, **{"--token": hsm_token.label}))), EXIT_CONFLICT, "already exists")
    assert out.read_text() == "precious"


def test_init_token_keygen_and_list(run_smki, tmp_path):
    result = run_smki("hsm", "init-token", "--label", "cli-made", "--so-pin-source", "env:SMKI_TEST_SO_PIN", "--pin-source", "env:SMKI_TEST_PIN")
    assert result.returncode == 0, result.stderr
    one_line_error(run_smki("hsm", "init-token", "--label", "cli-made", "--so-pin-source", "env:SMKI_TEST_SO_PIN", "--pin-source", "env:SMKI_TEST_PIN"),
                   EXIT_CONFLICT, "already exists")
    result = run_smki("hsm", "keygen", "--token", "cli-made", "--key-label", "root-oca", "--key-id", "01", *PIN, "--state", str(tmp_path), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["violations"] == []
    listing = json.loads(run_smki("hsm", "list", "--token", "cli-made", *PIN, "--json").stdout)
    private = [k for k in listing["keys"] if k["class"] == "private"]
    assert private[0]["attributes"]["never_extractable"] is True and private[0]["attributes"]["extractable"] is False
    assert "cli-made" in [t["label"] for t in json.loads(run_smki("hsm", "list", "--json").stdout)["tokens"]]


def test_issuance_and_key_generation_are_recorded_and_audited(run_smki, ca, hsm_token, tmp_path):
    """Every CLI operation above wrote its record and audit entry into the authority's state; refusals too."""
    from smki.store import open_database
    assert run_smki("cert", "organisation", *as_argv(org_args(ca, tmp_path / "bad.pem", **{"--token": hsm_token.label, "--entity-id": "XYZ"}))).returncode == EXIT_BAD_INPUT
    connection = open_database(ca / "state" / "smki.db")
    operations = [(row["operation"], row["outcome"]) for row in connection.execute("SELECT operation, outcome FROM audit_entries ORDER BY seq")]
    assert operations[:5] == [("policy.adopt", "success"), ("key.generate", "success"), ("key.generate", "success"),
                              ("certificate.issue.root", "success"), ("certificate.issue.issuing-ca", "success")]
    policies = {row[0] for row in connection.execute("SELECT policy_sha256 FROM certificates")}
    from smki.policy import load_policy
    assert policies == {load_policy(POLICIES / "organisation.yaml").sha256}  # every record names the policy that allowed it
    assert ("certificate.issue.organisation", "refused") in operations
    unadopted = [row["details"] for row in connection.execute("SELECT details FROM audit_entries WHERE outcome = 'refused'")]
    assert any("no device policy adopted" in details for details in unadopted)  # refused before any key was touched
    refused = connection.execute("SELECT details FROM audit_entries WHERE outcome = 'refused' ORDER BY seq DESC LIMIT 1").fetchone()[0]
    assert "malformed EUI-64" in refused and os.environ["SMKI_TEST_PIN"] not in refused
    types = {row[0] for row in connection.execute("SELECT certificate_type FROM certificates")}
    assert {"root", "issuing-ca"} <= types
    result = run_smki("audit", "verify", "--db", str(ca / "state" / "smki.db"))
    assert result.returncode == 0 and "audit chain intact" in result.stdout


def test_an_operation_with_an_audit_key_ends_with_a_signed_checkpoint(run_smki, ca, hsm_token, new_hsm_key, tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    audit_key, audit_signer = new_hsm_key("cli-audit")
    state = tmp_path / "signed-state"
    assert run_smki("policy", "adopt", ORG_POLICY[1], "--state", str(state)).returncode == 0
    values = org_args(ca, tmp_path / "org.pem", **{"--token": hsm_token.label})
    argv = as_argv(values)
    argv[argv.index("--state") + 1] = str(state)
    result = run_smki("cert", "organisation", *argv, "--audit-key-uri", audit_key.uri, "--audit-pin-source", "env:SMKI_TEST_PIN")
    assert result.returncode == 0, result.stderr
    (tmp_path / "audit.pub").write_bytes(audit_signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    report = json.loads(run_smki("audit", "verify", "--db", str(state / "smki.db"), "--public-key", str(tmp_path / "audit.pub"), "--json").stdout)
    assert report["ok"] and report["checkpoints"] == 1 and report["last_signed_seq"] == report["entries"] == 2  # adoption + issuance


# The `smki` command ends with os._exit once a command has returned (smki.cli.main.run): what a normal exit does
# that matters must still happen.
FAST_EXIT = """
import atexit, sys
marker = sys.argv.pop(1)
atexit.register(lambda: open(marker, "w").write("exit handlers ran"))
sys.argv[0] = "smki"
from smki.cli.main import run
run()
"""


def test_the_command_runs_exit_handlers_flushes_its_output_and_keeps_its_status(tmp_path):
    marker = tmp_path / "marker"
    helped = subprocess.run([sys.executable, "-c", FAST_EXIT, str(marker), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and marker.read_text() == "exit handlers ran"
    assert helped.stdout.rstrip().endswith(subprocess.run([sys.executable, "-m", "smki.cli.main", "--help"], capture_output=True,
                                                           text=True, timeout=60).stdout.rstrip().splitlines()[-1])
    marker.unlink()
    refused = subprocess.run([sys.executable, "-c", FAST_EXIT, str(marker), "hsm", "list", "--module", "/nonexistent/libpkcs11.so"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == EXIT_HSM and refused.stderr.startswith("smki: error: cannot load PKCS#11 module") and marker.exists()

