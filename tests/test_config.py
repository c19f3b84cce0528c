"""Configuration files (smki.config) and `--config` on every command: the override rule, SMKI_CONFIG,
`smki config show`'s sources, every bad-input refusal as `FILE:LINE: field: ...` (exit 3, no secret echoed),
and an issuance through a configuration file on a real SoftHSM token."""

import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509

import csr_factory as f
from conftest import openssl, smki
from smki.testing import Hierarchy, TestPKI
from test_batch_issuance import START

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
SECRET = "S3cr3t-4711"  # a PIN someone wrote where it must never be: no message may repeat it


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def show(*args: str, env: dict | None = None, check: bool = True) -> dict:
    result = smki("config", "show", "--json", *args, env=env, check=check)
    return json.loads(result.stdout)


def options_of(shown: dict) -> dict:
    return {row["option"]: row for row in shown["options"]}


def refused(result, fragment: str) -> str:
    """The one line a refusal prints, checked: exit 3, no traceback, `fragment` in it, the secret never."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0], lines[0]
    assert SECRET not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def oca_config(tmp_path):
    """A complete Issuing OCA configuration, its inputs in a directory of their own (paths relative to the file)."""
    (tmp_path / "oca.pem").write_text("a certificate\n")
    shutil.copy(POLICIES / "organisation.yaml", tmp_path / "organisation.yaml")
    return write(tmp_path / "issuing-oca.yaml", """\
kind: issuing-oca
hsm:
  token: SMKI-ISSUING-OCA
  key: {label: issuing-oca, id: "01"}
  pin_source: env:OCA_PIN
state: state/issuing-oca
policy: organisation.yaml
environment: test
issuer_certificate: oca.pem
audit:
  token: SMKI-ISSUING-OCA
  key: {label: issuing-oca-audit, id: "02"}
  pin_source: fd:5
defaults:
  actor: alice
  workers: 3
""")


# -- the override rule and where each value came from --------------------------------------------------------------


def test_the_file_gives_the_defaults_and_the_command_line_overrides_them(oca_config, tmp_path):
    shown = show("--config", str(oca_config), "ca", "issue-org", "--token", "OTHER-TOKEN", "--requester", "supplier", "x.csr")
    options = options_of(shown)
    assert options["--token"]["value"] == "OTHER-TOKEN" and options["--token"]["source"] == "command line"
    assert options["--key-label"] == {"option": "--key-label", "value": "issuing-oca", "source": f"{oca_config}:4", "setting": "hsm.key.label"}
    assert options["--pin-source"]["value"] == "env:OCA_PIN" and options["--pin-source"]["source"] == f"{oca_config}:5"
    assert options["--audit-pin-source"]["value"] == "fd:5" and options["--audit-pin-source"]["source"] == f"{oca_config}:13"
    # Relative paths are relative to the file, wherever the command runs.
    assert options["--state"]["value"] == str(tmp_path / "state" / "issuing-oca") and options["--state"]["source"] == f"{oca_config}:6"
    assert options["--issuer-cert"]["value"] == str(tmp_path / "oca.pem")
    assert options["--audit-key-uri"]["value"] == "pkcs11:token=SMKI-ISSUING-OCA;object=issuing-oca-audit;id=%02"
    assert options["--out"].get("missing") and options["--not-before"]["source"] == "default"
    assert shown["overridden"] == [{"setting": "hsm.token", "source": f"{oca_config}:3"}]
    assert {row["setting"] for row in shown["not_used"]} == {"defaults.workers"}  # issue-org has no --workers


def test_a_key_uri_on_the_command_line_replaces_the_files_token_and_key(oca_config):
    options = options_of(show("--config", str(oca_config), "ca", "crl", "--key-uri", "pkcs11:token=T;object=k;id=%01"))
    assert options["--key-uri"]["source"] == "command line"
    assert all(options[name]["value"] is None and options[name]["source"] == "default" for name in ("--token", "--key-label", "--key-id"))
    assert options["--pin-source"]["source"] == f"{oca_config}:5"  # the PIN source still comes from the file


def test_pin_source_is_mapped_by_what_it_means(oca_config, tmp_path):
    """--pin-source is the signing key's PIN where a command names a signing key, the audit key's on the Librarian's
    commands and `audit verify`, and nothing the file gives on `hsm init-token` (the new token's user PIN)."""
    # (a file without `kind`, which every group takes: the Librarian's commands refuse an issuing-oca file)
    kindless = write(tmp_path / "kindless.yaml", oca_config.read_text().replace("kind: issuing-oca\n", ""))
    assert options_of(show("--config", str(kindless), "librarian", "lodge", "x.pem"))["--pin-source"]["value"] == "fd:5"
    assert options_of(show("--config", str(oca_config), "audit", "verify"))["--pin-source"]["value"] == "fd:5"
    init = options_of(show("--config", str(oca_config), "hsm", "init-token", "--label", "NEW"))
    assert init["--pin-source"]["value"] == "prompt" and init["--pin-source"]["source"] == "default"
    assert options_of(show("--config", str(oca_config), "ca", "issue-batch", "x.zip"))["--workers"]["value"] == 3


def test_config_show_never_repeats_a_malformed_secret_source_given_on_the_command_line(oca_config):
    result = smki("config", "show", "--json", "--config", str(oca_config), "ca", "issue-org", "--pin-source", SECRET, "x.csr")
    pin = options_of(json.loads(result.stdout))["--pin-source"]
    assert pin["source"] == "command line" and SECRET not in result.stdout + result.stderr


def test_smki_config_names_the_file_and_config_overrides_it(oca_config, tmp_path):
    other = write(tmp_path / "other.yaml", "environment: production\n")
    by_environment = show("ca", "issue-org", "x.csr", env={"SMKI_CONFIG": str(oca_config)})
    assert by_environment["named_by"] == "$SMKI_CONFIG" and options_of(by_environment)["--environment"]["value"] == "test"
    by_option = show("--config", str(other), "ca", "issue-org", "x.csr", env={"SMKI_CONFIG": str(oca_config)})
    assert by_option["named_by"] == "--config" and options_of(by_option)["--environment"] == {
        "option": "--environment", "value": "production", "source": f"{other}:1", "setting": "environment"}
    # The command's own --config (after its name) names the file too.
    inner = show("ca", "issue-org", "--config", str(other), "x.csr", env={"SMKI_CONFIG": str(oca_config)})
    assert options_of(inner)["--environment"]["value"] == "production"


def test_config_show_without_a_command_lists_the_files_settings(oca_config):
    shown = show("--config", str(oca_config))
    settings = {row["setting"]: row for row in shown["settings"]}
    assert shown["kind"] == "issuing-oca" and settings["defaults.workers"] == {"setting": "defaults.workers", "value": 3, "source": f"{oca_config}:16"}
    assert settings["audit.key"]["source"] == f"{oca_config}:11"
    text = smki("config", "show", "--config", str(oca_config)).stdout
    assert "hsm.pin_source" in text and "env:OCA_PIN" in text and f"{oca_config}:5" in text
    nothing = smki("config", "show", check=False, env={"SMKI_CONFIG": ""})
    assert nothing.returncode == 2 and "--config" in nothing.stderr


def test_a_required_option_the_file_supplies_is_no_longer_missing_but_stays_required_without(oca_config, tmp_path):
    missing = smki("ca", "revoke", "--config", str(oca_config), "01", check=False)
    assert missing.returncode == 2 and "--reason" in missing.stderr and "--state" not in missing.stderr
    bare = smki("ca", "revoke", "01", "--reason", "keyCompromise", check=False, env={"SMKI_CONFIG": ""})
    assert bare.returncode == 2 and "--state" in bare.stderr


def test_a_builtin_policy_is_passed_on_as_written(tmp_path):
    config = write(tmp_path / "c.yaml", "policy: builtin:organisation\n")
    assert options_of(show("--config", str(config), "ca", "revoke", "01"))["--policy"]["value"] == "builtin:organisation"
    assert options_of(show("--config", str(config), "policy", "adopt"))["POLICY_FILE"]["value"] == "builtin:organisation"


# -- bad input: FILE:LINE: field: what is wrong, exit 3, nothing secret repeated ----------------------------------------


@pytest.mark.parametrize("text, where", [
    ("hsm:\n  token: T\n  labell: x\n", ":3: hsm.labell: unknown key"),
    ("stat: s\n", ":1: stat: unknown key"),
    ("defaults:\n  workers: two\n", ":2: defaults.workers: 'two' is not of type 'integer'"),
    ("environment: staging\n", ":1: environment: 'staging' is not one of"),
    ("hsm:\n  key: {label: k}\n", ":2: hsm.key: 'id' is a required property"),
    ("hsm:\n  key: {label: k, id: zz}\n", ":2: hsm.key.id: key id 'zz' is not hexadecimal"),
    ("hsm:\n  token: T\n  key_uri: 'pkcs11:token=T;object=k;id=%01'\n", ":3: hsm.key_uri: give the key either as key_uri or as token and key"),
    ("audit:\n  token: T\n", ":1: audit: name the audit key with key_uri, or with both token and key"),
    ("audit:\n  key_uri: 'pkcs11:token=T;object=k;id=%01?pin-value=1'\n", ":2: audit.key_uri: pkcs11 URI carries pin-value"),
    ("- a list\n", ":1: (document): a configuration file is a mapping"),
    ("state: a\nstate: b\n", ":2: (yaml): key 'state' given twice"),
])
def test_a_malformed_file_is_one_line_naming_file_line_and_field(tmp_path, text, where):
    config = write(tmp_path / "bad.yaml", text)
    refused(smki("config", "show", "--config", str(config), check=False), f"{config}{where}")


@pytest.mark.parametrize("text, where", [
    (f"hsm:\n  token: T\n  pin: {SECRET}\n", ":3: hsm.pin: a secret is never written in a configuration file"),
    (f"hsm:\n  so_pin: '{SECRET}'\n", ":2: hsm.so_pin: a secret is never written"),
    (f"password: {SECRET}\n", ":1: password: a secret is never written"),
    (f"api_key: {SECRET}\n", ":1: api_key: a secret is never written"),
    (f"audit:\n  passphrase: [{SECRET}]\n", ":2: audit.passphrase: a secret is never written"),
    (f"hsm:\n  pin_source: {SECRET}\n", ":2: hsm.pin_source: not a secret source: give env:NAME, fd:N or prompt"),
    (f"audit:\n  pin_source: env:{SECRET}\n", ":2: audit.pin_source: not a secret source"),
    (f"audit:\n  pin_source: [{SECRET}]\n", ":2: audit.pin_source: not a secret source"),
    ("hsm:\n  pin_source: 4711\n", ":2: hsm.pin_source: not a secret source"),
    (f"database: postgresql://smki:{SECRET}@db.example/smki\n", ":1: database: a password is never written in a configuration file"),
])
def test_a_secret_written_in_the_file_is_refused_and_never_repeated(tmp_path, text, where):
    config = write(tmp_path / "secret.yaml", text)
    refused(smki("config", "show", "--config", str(config), check=False), f"{config}{where}")
    # Every command refuses it the same way, before doing anything.
    refused(smki("ca", "list", "--config", str(config), check=False), f"{config}{where}")


@pytest.mark.parametrize("text, where", [
    ("hsm:\n  module: no-such-module.so\n", ":2: hsm.module: {dir}/no-such-module.so: no such file"),
    ("policy: policies/none.yaml\n", ":1: policy: {dir}/policies/none.yaml: no such file"),
    ("state: s\nissuer_certificate: oca.pem\n", ":2: issuer_certificate: {dir}/oca.pem: no such file"),
    ("issuer_certificate: .\n", ":1: issuer_certificate: {dir}: not a file"),
    ("state: s\npolicy: builtin:nothing\n", ":2: policy: unknown built-in policy 'builtin:nothing' (known: builtin:organisation, builtin:device)"),
])
def test_an_input_that_does_not_exist_is_refused_relative_to_the_file(tmp_path, text, where):
    config = write(tmp_path / "paths.yaml", text)
    refused(smki("config", "show", "--config", str(config), check=False), f"{config}{where.format(dir=tmp_path)}")


def test_a_value_the_option_refuses_is_refused_at_its_line(tmp_path):
    config = write(tmp_path / "c.yaml", "state: s\ndefaults:\n  workers: 1000\n")
    required = ["--policy", "p.yaml", "--environment", "test", "--issuer-cert", "c.pem", "--requester", "supplier", "--device-type", "ESME",
                "--response", "r.zip", "--status", "s.csv"]
    line = refused(smki("ca", "issue-batch", "--config", str(config), *required, "x.zip", check=False), f"{config}:3: defaults.workers: ")
    assert "1000 is not in the range" in line


def test_a_value_an_smki_option_type_refuses_is_refused_at_its_line(tmp_path):
    # Too long for --actor (a control character would be refused before, by the file's own check: test_i14_review).
    config = write(tmp_path / "c.yaml", f'state: s\ndefaults:\n  actor: "{"an actor " * 20}"\n')
    refused(smki("ca", "adopt-state", "--config", str(config), check=False), f"{config}:3: defaults.actor: --actor: give a name of printable text")


def test_a_missing_configuration_file_is_bad_input(tmp_path):
    refused(smki("ca", "list", "--config", str(tmp_path / "none.yaml"), check=False), f"{tmp_path / 'none.yaml'}:0: (file): configuration file not found")
    refused(smki("ca", "list", check=False, env={"SMKI_CONFIG": str(tmp_path / "none.yaml")}), "configuration file not found")


@pytest.mark.parametrize("kind", ["issuing-oca", "issuing-dca", "librarian", "auditor"])
def test_every_template_is_a_valid_configuration(tmp_path, kind):
    config = write(tmp_path / f"{kind}.yaml", smki("config", "template", kind).stdout)
    (tmp_path / f"{kind}.pem").write_text("its certificate\n")
    shown = show("--config", str(config))
    assert shown["kind"] == kind and shown["settings"]


# -- an issuance through a configuration file, on a real SoftHSM token -------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory, hsm_token):
    with TestPKI.create(tmp_path_factory.mktemp("config-pki"), token=hsm_token, not_before=START) as pki:
        yield pki


def test_an_organisation_certificate_issued_through_a_configuration_file(pki, tmp_path):
    key = pki.key("issuing-oca")
    config = write(tmp_path / "issuing-oca.yaml", f"""\
kind: issuing-oca
hsm:
  token: {key.token_label}
  key: {{label: {key.key_label}, id: "{key.key_id.hex()}"}}
  pin_source: env:SMKI_TEST_PIN
state: {os.path.relpath(pki.state("issuing-oca"), tmp_path)}
policy: {pki.policy_file(Hierarchy.ORGANISATION)}
environment: test
issuer_certificate: {os.path.relpath(pki.certificate_file("issuing-oca"), tmp_path)}
""")
    (tmp_path / "org.csr").write_bytes(f.organisation_csr(eui64="90B3D51F300100C0"))
    issued = json.loads(smki("ca", "issue-org", "--config", str(config), "--requester", "supplier", "--not-before", "2026-02-01",
                             "--out", str(tmp_path / "org.pem"), "--json", str(tmp_path / "org.csr")).stdout)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.certificate_file("root-oca").read_bytes() + pki.certificate_file("issuing-oca").read_bytes())
    verified = openssl("verify", "-CAfile", str(chain), str(tmp_path / "org.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    certificate = x509.load_pem_x509_certificate((tmp_path / "org.pem").read_bytes())
    assert f"{certificate.serial_number:X}".lstrip("0") == issued["serial"].replace(":", "").lstrip("0")
    # The record is in the state the file names: read with the file too (`ca show` takes only --state from it).
    record = json.loads(smki("ca", "show", "--config", str(config), f"{certificate.serial_number:x}", "--json").stdout)[0]
    assert record["certificate_type"] == "organisation"

    # A flag overrides the file for real: the same file, the Issuing DCA's key named on the command line, is refused
    # (the key does not match the Issuing OCA certificate), and nothing is written.
    (tmp_path / "org2.csr").write_bytes(f.organisation_csr(eui64="90B3D51F300100C1"))
    wrong = smki("ca", "issue-org", "--config", str(config), "--key-uri", pki.key("issuing-dca").uri, "--requester", "supplier",
                 "--not-before", "2026-02-01", "--out", str(tmp_path / "org2.pem"), str(tmp_path / "org2.csr"), check=False)
    assert wrong.returncode != 0 and not (tmp_path / "org2.pem").exists(), wrong.stderr


def test_a_file_for_another_authority_is_refused_by_the_commands_it_is_not_for(tmp_path):
    librarian = write(tmp_path / "librarian.yaml", "# the Librarian's\nkind: librarian\ndatabase: repository.db\n")
    for command in (["ca", "issue-org", "--requester", "supplier", "x.csr"], ["cert", "device", "--help"]):
        refused(smki(*command, "--config", str(librarian), check=False),
                f"{librarian}:2: kind: this librarian configuration is not for `smki {command[0]}` commands")
    assert not (tmp_path / "repository.db").exists()
    # `config show` says so too; the Librarian's own commands, and groups that serve every kind, take it.
    refused(smki("config", "show", "--config", str(librarian), "ca", "list", check=False), f"{librarian}:2: kind:")
    smki("librarian", "find", "--config", str(librarian), "--help")
    oca = write(tmp_path / "oca.yaml", "kind: issuing-oca\nstate: state\n")
    refused(smki("librarian", "find", "--config", str(oca), check=False),
            f"{oca}:1: kind: this issuing-oca configuration is not for `smki librarian` commands (they take librarian)")
    smki("hsm", "list", "--config", str(oca))
