"""What smki ships inside its package (smki/data): the policies named builtin:NAME, the ceremony examples
`smki ceremony examples` writes out, the SoftHSM template; and psycopg as the optional smki[postgres] extra.

Every command here runs from a directory outside the checkout, as an installed smki would be run.
(scripts/wheel_check.sh does the same from a built wheel in a fresh virtualenv.)"""

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from smki.errors import EXIT_BAD_INPUT, EXIT_CONFLICT

CHECKOUT = Path(__file__).resolve().parents[1]
DATA = CHECKOUT / "smki" / "data"
POLICY_FILES = {"builtin:organisation": DATA / "policies" / "organisation.yaml", "builtin:device": DATA / "policies" / "device.yaml"}
KNOWN = "known: builtin:organisation, builtin:device"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(result, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smki: error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_the_shipped_files_have_one_home_inside_the_package():
    for shipped in ("policies/organisation.yaml", "policies/device.yaml", "policies/policy.schema.json",
                    "ceremonies/ceremony.schema.json", "ceremonies/root-oca.yaml", "softhsm/softhsm2.conf.template"):
        assert (DATA / shipped).is_file(), shipped
    for old_home in ("policies", "ceremonies", "hsm-config/softhsm2.conf.template"):
        assert not (CHECKOUT / old_home).exists(), f"{old_home}: a second copy beside smki/data"


def test_builtin_policies_are_the_shipped_files_byte_for_byte(run_smki, tmp_path):
    checked = json.loads(run_smki("policy", "check", *POLICY_FILES, "--json", cwd=tmp_path).stdout)
    assert [(row["file"], row["kind"], row["sha256"]) for row in checked] == [
        ("builtin:organisation", "organisation", sha256(POLICY_FILES["builtin:organisation"])),
        ("builtin:device", "device", sha256(POLICY_FILES["builtin:device"]))]
    same = run_smki("policy", "diff", "builtin:device", str(POLICY_FILES["builtin:device"]), cwd=tmp_path)
    assert same.returncode == 0 and same.stdout.strip() == "no change"
    shown = json.loads(run_smki("policy", "show", "builtin:device", "--environment", "test", "--json", cwd=tmp_path).stdout)
    assert shown["file"] == "builtin:device" and shown["sha256"] == sha256(POLICY_FILES["builtin:device"])
    assert "builtin:organisation" in run_smki("policy", "check", "--help").stdout


def test_an_unknown_builtin_policy_is_one_line_naming_the_known_ones(run_smki, tmp_path):
    for argv in (["policy", "check", "builtin:organisation", "builtin:nope"], ["policy", "show", "builtin:Organisation"],
                 ["policy", "adopt", "builtin:", "--state", str(tmp_path / "state")],
                 ["ca", "revoke", "--state", str(tmp_path / "state"), "--policy", "builtin:device.yaml", "01", "--reason", "keyCompromise"]):
        line = one_line_error(run_smki(*argv, cwd=tmp_path), EXIT_BAD_INPUT)
        assert "unknown built-in policy" in line and KNOWN in line, argv
    assert not (tmp_path / "state").exists(), "refused before any state is made"



def test_a_file_called_builtin_is_reached_as_a_relative_path(run_smki, tmp_path):
    """`./builtin:device` names a file, though click's Path and pathlib drop the "./" that says so."""
    local = (DATA / "policies" / "device.yaml").read_text().replace("name: SMKI Device Certificate Policy", "name: A Local Device Policy")
    (tmp_path / "builtin:device").write_text(local)
    shown = run_smki("policy", "show", "./builtin:device", "--environment", "test", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("A Local Device Policy"), shown.stdout + shown.stderr
    assert run_smki("policy", "show", "builtin:device", "--environment", "test", cwd=tmp_path).stdout.startswith("SMKI Device Certificate Policy")

def test_a_builtin_policy_is_adopted_by_the_digest_of_the_shipped_file(run_smki, tmp_path):
    state = tmp_path / "state"
    adopted = json.loads(run_smki("policy", "adopt", "builtin:organisation", "--state", str(state), "--json", cwd=tmp_path).stdout)
    assert adopted["sha256"] == sha256(POLICY_FILES["builtin:organisation"])
    with sqlite3.connect(state / "smki.db") as connection:
        subjects = [json.loads(s) for (s,) in connection.execute("SELECT subject FROM audit_entries WHERE operation = 'policy.adopt'")]
    assert subjects == [{"kind": "organisation", "file": "builtin:organisation"}]
    # The same bytes given as a file are the adopted policy (the revocation gets past the policy to the serial);
    # an edited copy is not.
    revoke = ["ca", "revoke", "--state", str(state), "01", "--reason", "keyCompromise", "--policy"]
    same = one_line_error(run_smki(*revoke, str(POLICY_FILES["builtin:organisation"]), cwd=tmp_path), EXIT_BAD_INPUT)
    assert "no certificate with serial 01" in same
    edited = tmp_path / "organisation.yaml"
    edited.write_text(POLICY_FILES["builtin:organisation"].read_text() + "# a local note: same policy, other bytes\n")
    assert "is not the adopted organisation policy" in one_line_error(run_smki(*revoke, str(edited), cwd=tmp_path), EXIT_CONFLICT)


def test_ceremony_examples_are_written_out_and_check_from_anywhere(run_smki, tmp_path):
    shipped = sorted(path for path in (DATA / "ceremonies").glob("*.yaml"))
    assert len(shipped) == 7
    target = tmp_path / "work" / "ceremonies"
    written = json.loads(run_smki("ceremony", "examples", str(target), "--json", cwd=tmp_path).stdout)
    assert [Path(row["file"]).name for row in written] == [path.name for path in shipped]
    for row, source in zip(written, shipped):
        copy = Path(row["file"])
        assert copy.parent == target and copy.read_bytes() == source.read_bytes() and row["sha256"] == sha256(source)
        assert yaml.safe_load(copy.read_text())["policy"] in POLICY_FILES, "an example names a shipped policy, found from anywhere"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for copy in sorted(target.iterdir()):
        plan = json.loads(run_smki("ceremony", "check", str(copy), "--json", cwd=elsewhere).stdout)
        assert all(Path(output).is_relative_to(tmp_path / "work") for output in plan["outputs"]), "paths are relative to the file"
    assert "relative to" in run_smki("ceremony", "examples", "--help").stdout


def test_ceremony_examples_never_overwrite_and_write_nothing_when_refused(run_smki, tmp_path):
    target = tmp_path / "ceremonies"
    target.mkdir()
    (target / "root-oca.yaml").write_text("mine\n")
    line = one_line_error(run_smki("ceremony", "examples", str(target), cwd=tmp_path), EXIT_CONFLICT)
    assert "root-oca.yaml already exists" in line
    assert [path.name for path in target.iterdir()] == ["root-oca.yaml"] and (target / "root-oca.yaml").read_text() == "mine\n"
    (tmp_path / "a-file").write_text("")
    assert "not a directory" in one_line_error(run_smki("ceremony", "examples", str(tmp_path / "a-file"), cwd=tmp_path), EXIT_BAD_INPUT)
    assert "directory name" in one_line_error(run_smki("ceremony", "examples", "", cwd=tmp_path), EXIT_BAD_INPUT)


def test_a_ceremony_file_naming_an_unknown_builtin_policy_is_refused_at_its_line(run_smki, tmp_path):
    ceremony = tmp_path / "root-oca.yaml"
    ceremony.write_text((DATA / "ceremonies" / "root-oca.yaml").read_text().replace("policy: builtin:organisation", "policy: builtin:oca"))
    line_number = next(n for n, line in enumerate(ceremony.read_text().splitlines(), start=1) if line.startswith("policy:"))
    line = one_line_error(run_smki("ceremony", "check", str(ceremony), cwd=tmp_path), EXIT_BAD_INPUT)
    assert line.startswith(f"smki: error: {ceremony}:{line_number}: policy: unknown built-in policy 'builtin:oca'") and KNOWN in line
    # A policy file that is not there is refused at the same line, with the path it was looked for at.
    ceremony.write_text(ceremony.read_text().replace("policy: builtin:oca", "policy: ../policies/none.yaml"))
    line = one_line_error(run_smki("ceremony", "check", str(ceremony), cwd=tmp_path), EXIT_BAD_INPUT)
    assert line == f"smki: error: {ceremony}:{line_number}: policy: {tmp_path.parent.resolve() / 'policies' / 'none.yaml'}: no such file"


def test_softhsm_conf_is_written_from_the_shipped_template(run_smki, tmp_path):
    result = run_smki("hsm", "softhsm-conf", "hsm", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    template = (DATA / "softhsm" / "softhsm2.conf.template").read_text()
    tokens = (tmp_path / "hsm" / "tokens").resolve()
    assert (tmp_path / "hsm" / "softhsm2.conf").read_text() == template.replace("@TOKENDIR@", str(tokens))
    assert f"directories.tokendir = {tokens}\n" in template.replace("@TOKENDIR@", str(tokens)) and tokens.is_dir()


# psycopg made unimportable, as in an install without the smki[postgres] extra.
WITHOUT_PSYCOPG = "import sys; sys.modules['psycopg'] = None\nfrom smki.cli.main import main\nsys.argv[0] = 'smki'\nmain()\n"


def test_a_postgresql_url_without_psycopg_names_the_extra(tmp_path):
    url = "postgresql://smki:s3cret@/smki?host=/nonexistent-smki-socket-dir&port=1"
    for argv in (["librarian", "find", "--db", url, "--serial", "01"], ["audit", "show", "--db", url]):
        result = subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        line = one_line_error(result, EXIT_BAD_INPUT)
        assert "pip install 'smki[postgres]'" in line and "s3cret" not in result.stderr + result.stdout, argv
