"""Issue 14 under a hostile review: what the review found, each pinned by a test that failed before its fix.

- `smki config show` repeated a PIN typed into a key URI (`--key-uri pkcs11:...?pin-value=...`) that the
  command itself refuses;
- `smki hsm init-token` created tokens no command could name again (a label of blanks, blanks at an end,
  control characters), and called an empty label an HSM problem (exit 4) rather than bad input;
- a Ctrl-C after a root-key ceremony committed its results, before its shares were written, deleted the
  new token and left a state that records a root key nobody can use;
- a root ceremony whose audit head could not be anchored in the token, after its results were committed,
  deleted the token (or gave a taken-over one back) and wrote no shares: the state records a root key
  that no longer exists;
- a second Ctrl-C while a failed take-over ceremony gave its token back stopped that half-way: the
  token kept the ceremony's keys and a PIN nobody holds;
- a take-over ceremony refused for a wrong vendor PIN (or a token not empty) had already written the root's
  state: its database, the policy adopted, and the refusal;
- a database password in a URL's query was taken from a configuration file, and `config show` printed it;
- `hsm init-token --json` gave an empty serial for a SoftHSM token (softhsm2-util), the one it names it by;
- a YAML key that is a list or mapping (`? [a, b]`), and a NUL written as "\\0" in a value (a path), were
  internal errors (exit 70) in configuration, ceremony and policy files; a configuration value with a
  terminal control sequence was taken and printed by `config show`;
- a missing $SMKI_CONFIG stopped even the commands that use nothing of it (`config template` among them).
"""

import json
import os
import subprocess
import sys

import pytest

import csr_factory as f
from smki.testing import Hierarchy, TestPKI
from test_batch_issuance import START, issuing_options
from test_ceremony import PASSPHRASES, SOURCES, workspace
from test_token_takeover import VENDOR, failing_take_over, logs_in, smki, take_over, vendor_token

SECRET = "S3cr3t-9931"  # a PIN typed where it must never be: no output may repeat it


def one_line(result, code: int) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and len(lines) == 1 and "Traceback" not in result.stderr, (result.returncode, result.stderr)
    return lines[0]


# -- a PIN in a key URI is never shown ------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--key-uri", "--audit-key-uri"])
def test_config_show_never_repeats_a_pin_written_into_a_key_uri(tmp_path, option):
    uri = f"pkcs11:token=T;object=k;id=%01?pin-value={SECRET}"
    for as_json in ([], ["--json"]):
        shown = smki("config", "show", *as_json, "ca", "issue-org", option, uri)
        assert SECRET not in shown.stdout + shown.stderr
        assert "refused" in shown.stdout
    refused = smki("ca", "issue-org", option, uri, "--state", str(tmp_path / "s"), "--policy", "builtin:organisation",
                   "--environment", "test", "--issuer-cert", str(tmp_path / "c.pem"), "--requester", "supplier",
                   "--out", str(tmp_path / "o.pem"), str(tmp_path / "r.csr"), check=False)
    assert "pin-value" in one_line(refused, 3) and SECRET not in refused.stderr
    assert not (tmp_path / "s").exists()


def test_audit_verify_checks_its_anchor_key_uri_with_the_command_line():
    refused = smki("audit", "verify", "--db", "none.db", "--public-key", "none.pem", "--anchor-key-uri",
                   f"pkcs11:token=T;object=k?pin-value={SECRET}", check=False)
    assert "pin-value" in one_line(refused, 3) and SECRET not in refused.stderr


# -- a new token's label is one PKCS#11 can keep and give back -------------------------------------------------------


def labels() -> list[str]:
    return [token["label"] for token in json.loads(smki("hsm", "list", "--json").stdout)["tokens"]]


@pytest.mark.parametrize("label", ["", " ", "   ", "T-PADDED ", " T-LEADING", "T-\tTAB", "T-\x1b[31mRED"])
def test_init_token_refuses_a_label_no_command_could_name_again(label):
    before = labels()
    refused = smki("hsm", "init-token", "--label", label, "--so-pin-source", "env:VENDOR_SO_PIN", "--pin-source", "env:VENDOR_PIN",
                   check=False)
    assert "token label" in one_line(refused, 3)
    assert labels() == before, "no token was created"


# -- Ctrl-C once a root-key ceremony has committed ---------------------------------------------------------------------

def interrupted_after(module: str, function: str) -> str:
    """A script running the real `smki`, interrupted (SIGINT to itself, as a terminal's Ctrl-C) the moment
    `module.function` returns."""
    return f"""
import os, signal, sys
import {module} as patched
from smki.cli.main import main
original = patched.{function}
def then_interrupt(*args, **kwargs):
    result = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
    return result
patched.{function} = then_interrupt
sys.argv[0] = "smki"
main()
"""


# The moment the ceremony's records are committed.
INTERRUPTED_AT_COMMIT = interrupted_after("smki.root.ceremony", "_record")


def test_ctrl_c_after_a_root_ceremony_commits_finishes_it_outputs_and_token_included(tmp_path, hsm_token):
    work = workspace(tmp_path, "IC")
    ceremony = work / "ceremonies" / "root-dca.yaml"
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_COMMIT, "ceremony", "run", str(ceremony), *SOURCES, "--json"],
                            capture_output=True, text=True, env={**os.environ, **PASSPHRASES}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Ctrl-C came while ceremony" in result.stderr and "held back" in result.stderr
    shares = sorted(path.name for path in (work / "shares" / "root-dca").iterdir())
    assert shares == [f"{name}.share.json" for name in ("alice", "bob", "carol", "dave", "erin")]
    assert (work / "out" / "root-dca.pem").exists() and (work / "transcripts" / "root-dca-key.txt").exists()
    assert json.loads(result.stdout)["authority"] == "root-dca"
    assert "T-ROOT-DCA-IC" in labels(), "the committed ceremony's token is kept"


# -- a database password is never written in a configuration file, nor shown ------------------------------------------


@pytest.mark.parametrize("url", [f"postgresql://db.example/smki?password={SECRET}", f"postgresql://db.example/smki?user=ca&sslpassword={SECRET}",
                                 f"postgres://ca:{SECRET}@db.example/smki"])
def test_a_database_password_in_a_configuration_file_is_refused_at_its_line(tmp_path, url):
    config = tmp_path / "librarian.yaml"
    config.write_text(f'kind: librarian\ndefaults:\n  actor: librarian\ndatabase: "{url}"\n')
    refused = smki("config", "show", "--config", str(config), check=False)
    assert one_line(refused, 3).startswith(f"smki: error: {config}:4: database: a password is never written") and SECRET not in refused.stderr


def test_config_show_never_repeats_a_database_password_given_on_the_command_line():
    for as_json in ([], ["--json"]):
        shown = smki("config", "show", *as_json, "librarian", "lodge", "--db", f"postgresql://ca:{SECRET}@db.example/smki?password={SECRET}")
        assert SECRET not in shown.stdout + shown.stderr and "postgresql://ca:***@db.example/smki?password=***" in shown.stdout



def test_a_malformed_database_url_never_repeats_its_password_nor_crashes(tmp_path):
    """urlsplit cannot parse an unclosed [ in the host: the password check, `config show` and the connection's
    error (libpq quotes the URL it was given) must still hold the password back, and nothing may crash (exit 70)."""
    malformed = f"postgresql://ca:{SECRET}@[db/smki"
    config = tmp_path / "librarian.yaml"
    config.write_text(f'kind: librarian\ndatabase: "{malformed}"\n')
    refused = smki("config", "show", "--config", str(config), check=False)
    assert one_line(refused, 3).startswith(f"smki: error: {config}:2: database: a password is never written") and SECRET not in refused.stderr
    for command in (["config", "show", "librarian", "find", "--db", malformed], ["librarian", "find", "--db", malformed]):
        result = smki(*command, check=False)
        assert result.returncode in (0, 3) and "Traceback" not in result.stderr and SECRET not in result.stdout + result.stderr, result.stderr
    without_password = tmp_path / "no-password.yaml"
    without_password.write_text('kind: librarian\ndatabase: "postgresql://ca@[db/smki"\n')
    shown = smki("config", "show", "--config", str(without_password))
    assert "postgresql://(a malformed URL, not shown)" in shown.stdout

# -- $SMKI_CONFIG is read by the commands that take a setting from it ------------------------------------------------


def test_a_missing_smki_config_does_not_stop_the_commands_that_use_none_of_it(tmp_path):
    env = {"SMKI_CONFIG": str(tmp_path / "missing.yaml")}
    template = smki("config", "template", "issuing-oca", env=env)  # the way to write the missing file
    assert template.stdout.startswith("# smki configuration")
    smki("ceremony", "examples", str(tmp_path / "examples"), env=env)
    smki("policy", "check", "builtin:device", env=env)
    for used in (["ca", "list"], ["config", "show"], ["hsm", "list"]):
        assert "missing.yaml:0: (file): configuration file not found" in one_line(smki(*used, check=False, env=env), 3)


# -- a take-over refused for its vendor PIN, or for a token not empty, writes nothing ---------------------------------


@pytest.mark.parametrize("case", ["wrong PIN", "PIN unset", "not empty"])
def test_a_refused_take_over_writes_nothing_not_even_the_state(tmp_path, hsm_token, case):
    work = workspace(tmp_path, "RW")
    label = f"T-RW-{case.split()[0].upper()}-{case.split()[1].upper()}"
    vendor_token(label)
    if case == "not empty":
        smki("hsm", "keygen", "--token", label, "--key-label", "left-over", "--key-id", "09", "--pin-source", "env:VENDOR_PIN",
             "--state", str(tmp_path / "keygen-state"))
    source = {"wrong PIN": "env:WRONG", "PIN unset": "env:UNSET_VENDOR_PIN", "not empty": "env:VENDOR_PIN"}[case]
    refused = smki("ceremony", "run", str(take_over(work, "root-dca", label)), *SOURCES, "--vendor-pin-source", source, check=False,
                   env={"WRONG": SECRET})
    one_line(refused, {"wrong PIN": 4, "PIN unset": 3, "not empty": 5}[case])
    assert SECRET not in refused.stderr
    assert sorted(path.name for path in work.iterdir()) == ["ceremonies"], "no state, shares, outputs or transcripts"
    assert logs_in(label, VENDOR["VENDOR_PIN"]) == ("2" if case == "not empty" else "0"), "the token is as the vendor left it"


def test_init_token_reports_the_serial_of_a_softhsm_token_too():
    made = json.loads(smki("hsm", "init-token", "--label", "T-RW-SERIAL", "--so-pin-source", "env:VENDOR_SO_PIN", "--pin-source",
                           "env:VENDOR_PIN", "--json").stdout)
    listed = next(t for t in json.loads(smki("hsm", "list", "--json").stdout)["tokens"] if t["label"] == "T-RW-SERIAL")
    assert made["method"] == "softhsm2-util" and made["serial"] and made["serial"] == listed["serial"]


# -- YAML a hostile file can hold: one line at its FILE:LINE, exit 3 ------------------------------------------------------


@pytest.mark.parametrize("text, line, fragment", [
    ("hsm:\n  ? [a, b]\n  : 1\n", 2, "(yaml): a key must be a plain value"),
    ("hsm:\n  ? {pin: 1}\n  : 1\n", 2, "(yaml): a key must be a plain value"),
    ('kind: issuing-oca\nstate: "st\\0ate"\n', 2, "(yaml): a value holds a NUL character"),
    ('kind: issuing-oca\nissuer_certificate: "a\\x00b"\n', 2, "(yaml): a value holds a NUL character"),
    ('kind: issuing-oca\nauthority: "oca\\e[2J"\n', 2, "authority: holds a control character"),
    ('state: s\ndefaults:\n  actor: "x"\nhsm:\n  token: "T\\x07"\n', 5, "hsm.token: holds a control character"),
    ("hsm:\n  token: T\n  token_serial: 0123456789abcdef0\n", 3, "hsm.token_serial: the token serial number is longer than 16"),
    ("hsm: {token: T}\n---\nhsm: {token: U}\n", 2, "(yaml): a second YAML document begins here: the file holds one"),
    ("base: &b {token: T}\nhsm:\n  <<: *b\n", 3, "(yaml): a merge key (<<) is not taken: write each setting out"),
])
def test_a_configuration_file_with_hostile_yaml_is_one_line_at_its_line(tmp_path, text, line, fragment):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    for args in (["config", "show", "--config", str(config)], ["ca", "list", "--config", str(config)]):
        assert one_line(smki(*args, check=False), 3).startswith(f"smki: error: {config}:{line}: {fragment}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("field", ["state", "transcript", "policy"])
def test_a_nul_in_a_ceremony_files_path_is_bad_input_not_a_crash(tmp_path, field):
    work = workspace(tmp_path, "NUL")
    ceremony = work / "ceremonies" / "root-dca.yaml"
    text = ceremony.read_text()
    lines = text.splitlines()
    number = next(i for i, row in enumerate(lines, 1) if row.startswith(f"{field}:"))
    lines[number - 1] = f'{field}: "../a\\0b"'
    ceremony.write_text("\n".join(lines) + "\n")
    assert one_line(smki("ceremony", "check", str(ceremony), check=False), 3).startswith(
        f"smki: error: {ceremony}:{number}: (yaml): a value holds a NUL character")


# -- Ctrl-C between a certificate's record and its file ---------------------------------------------------------------

INTERRUPTED_AT_RECORD = interrupted_after("smki.operations.release", "insert_certificate")


@pytest.fixture(scope="module")
def pki(tmp_path_factory, hsm_token):
    with TestPKI.create(tmp_path_factory.mktemp("review-pki"), token=hsm_token, not_before=START) as made:
        yield made


def test_ctrl_c_once_a_certificate_is_recorded_still_writes_it(pki, tmp_path):
    (tmp_path / "org.csr").write_bytes(f.organisation_csr(eui64="90B3D51F3001C0DE"))
    out = tmp_path / "org.pem"
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_RECORD, "ca", "issue-org", *issuing_options(pki, Hierarchy.ORGANISATION),
                             "--environment", "test", "--requester", "supplier", "--not-before", "2026-02-01", "--out", str(out), "--json",
                             str(tmp_path / "org.csr")], capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.returncode == 0 and "Ctrl-C came while certificate" in result.stderr, result.stderr
    issued = json.loads(result.stdout)
    shown = json.loads(smki("ca", "show", "--state", str(pki.state("issuing-oca")), issued["serial"], "--json").stdout)[0]
    assert out.exists() and shown["certificate_type"] == "organisation", "what is on record is what was written"


# -- a failure after a ceremony is on record does not undo it ------------------------------------------------------------

ANCHOR_FAILS = """
import sys
import smki.hsm.anchor as anchor
from smki.errors import HsmError
from smki.cli.main import main
def refused(*args, **kwargs):
    raise HsmError("the token refused the anchor object (simulated)")
anchor.TokenHeadAnchor.store = refused
sys.argv[0] = "smki"
main()
"""


def test_a_root_ceremony_whose_anchor_fails_after_the_commit_keeps_its_token_and_writes_its_shares(tmp_path, hsm_token):
    work = workspace(tmp_path, "AF")
    result = subprocess.run([sys.executable, "-c", ANCHOR_FAILS, "ceremony", "run", str(work / "ceremonies" / "root-dca.yaml"), *SOURCES],
                            capture_output=True, text=True, env={**os.environ, **PASSPHRASES}, timeout=600)
    line = one_line(result, 4)
    assert "the ceremony is recorded and its outputs written" in line and "simulated" in line
    assert len(list((work / "shares" / "root-dca").iterdir())) == 5 and (work / "out" / "root-dca.pem").exists()
    assert (work / "transcripts" / "root-dca-key.json").exists()
    assert "T-ROOT-DCA-AF" in labels(), "the token holding the recorded root key is kept"
    # The record stands: the trail verifies, and ends with the ceremony's success, not a refusal after it.
    verified = json.loads(smki("audit", "verify", "--db", str(work / "state" / "root-dca" / "smki.db"), "--json").stdout)
    assert verified["ok"] is True and verified["entries"] == 2 and verified["last_signed_seq"] == 2
    smki("audit", "export", "--db", str(work / "state" / "root-dca" / "smki.db"), "--out", str(tmp_path / "trail.json"))
    entries = json.loads((tmp_path / "trail.json").read_text())["entries"]
    assert [(e["operation"], e["outcome"]) for e in entries] == [("policy.adopt", "success"), ("ceremony.root-key", "success")]


# -- a second Ctrl-C while a failed ceremony is undone ------------------------------------------------------------------

INTERRUPTED_WHILE_GIVING_BACK = """
import os, signal, sys
import smki.root.ceremony as ceremony
from smki.cli.main import main
destroy = ceremony.destroy_token_objects
def interrupt_then_destroy(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # the operator presses Ctrl-C again, while the token is given back
    return destroy(*args, **kwargs)
ceremony.destroy_token_objects = interrupt_then_destroy
sys.argv[0] = "smki"
main()
"""


def test_a_second_ctrl_c_does_not_stop_a_taken_over_token_being_given_back(tmp_path, hsm_token):
    work = workspace(tmp_path, "GB")
    label = "T-RW-GIVE-BACK"
    ceremony = failing_take_over(work, label)  # refused after C_SetPIN: the token must be given back
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_WHILE_GIVING_BACK, "ceremony", "run", str(ceremony), *SOURCES,
                             "--vendor-pin-source", "env:VENDOR_PIN"], capture_output=True, text=True,
                            env={**os.environ, **PASSPHRASES, **VENDOR}, timeout=600)
    assert result.returncode == 1 and "6.3.2 validity" in result.stderr and "held back" in result.stderr, result.stderr
    assert logs_in(label, VENDOR["VENDOR_PIN"]) == "0", "the vendor's PIN is back and the ceremony's keys are gone"
    assert not (work / "shares").exists() and not (work / "out").exists()


def test_keygen_takes_a_builtin_policy_as_every_policy_option_does(tmp_path, hsm_token):
    refused = smki("hsm", "keygen", "--token", hsm_token.label, "--key-label", "never", "--key-id", "7f", "--pin-source", "env:SMKI_TEST_PIN",
                   "--state", str(tmp_path / "state"), "--policy", "builtin:nope", check=False)
    assert one_line(refused, 3) == ("smki: error: --policy: unknown built-in policy 'builtin:nope' "
                                    "(known: builtin:organisation, builtin:device)")
    assert not (tmp_path / "state").exists()
    assert "builtin:organisation" in smki("hsm", "keygen", "--help").stdout
