"""Second review of issue 12's state fixes: the adopted policy reconciled with the audit trail (finding A),
stores read from read-only media without writing beside them (finding B), and a repeated multi-file lodge
completing what an earlier run began (finding C)."""

import hashlib
import json
import sqlite3
from pathlib import Path

import csr_factory
from conftest import smki
from test_audit_hardening import copy_state, one_line, org_authority, tamper  # noqa: F401 (org_authority: a fixture)

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"


# -- finding A: the adopted_policies table is reconciled with the policy.adopt entries ----------------------
def evil_policy(tmp_path: Path) -> Path:
    """The organisation policy edited so that a Network Operator may request supplier certificates."""
    text = (POLICIES / "organisation.yaml").read_text()
    edited = text.replace("    networkOperator: [networkOperator]\n", "    networkOperator: [networkOperator, supplier]\n")
    assert edited != text
    path = tmp_path / "evil.yaml"
    path.write_text(edited)
    return path


def forge_adoption(state: Path, policy: Path) -> None:
    tamper(state, ("UPDATE adopted_policies SET sha256 = ?", (hashlib.sha256(policy.read_bytes()).hexdigest(),)))


def issue_org_args(org_authority, state: Path, policy: Path, out: Path) -> list[str]:
    d, _, crl_args, _ = org_authority
    issuing_key = crl_args[2:10]  # --token T --key-label L --key-id I --pin-source S
    (out.parent / "supplier.csr").write_bytes(csr_factory.organisation_csr(eui64="90B3D51F300200C1"))
    return ["ca", "issue-org", *issuing_key, "--state", str(state), "--policy", str(policy), "--environment", "test",
            "--issuer-cert", str(d / "issuing.pem"), "--requester", "networkOperator", "--not-before", "2026-02-01",
            "--out", str(out), str(out.parent / "supplier.csr")]


def test_an_adoption_row_edited_to_an_evil_policy_issues_nothing(org_authority, tmp_path):
    """Finding A as reported: the row names evil.yaml's sha256, no policy.adopt entry does."""
    state = copy_state(org_authority[0], tmp_path)
    evil = evil_policy(tmp_path)
    forge_adoption(state, evil)
    out = tmp_path / "supplier.pem"
    result = smki(*issue_org_args(org_authority, state, evil, out), check=False)
    one_line(result, 1)
    assert "adopted organisation policy" in result.stderr and "audit trail" in result.stderr, result.stderr
    assert not out.exists()
    with sqlite3.connect(state / "smki.db") as raw:
        last = raw.execute("SELECT operation, outcome FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
        organisation_certificates = raw.execute("SELECT COUNT(*) FROM certificates WHERE certificate_type = 'organisation'").fetchone()[0]
    assert last == ("certificate.issue.organisation", "refused") and organisation_certificates == 2


def test_the_genuine_policy_is_refused_too_while_the_row_is_edited(org_authority, tmp_path):
    state = copy_state(org_authority[0], tmp_path)
    forge_adoption(state, evil_policy(tmp_path))
    result = smki(*issue_org_args(org_authority, state, POLICIES / "organisation.yaml", tmp_path / "o.pem"), check=False)
    one_line(result, 1)
    assert "in the state but" in result.stderr


def test_the_evil_policy_adopted_openly_is_audited(org_authority, tmp_path):
    """The control: adopting evil.yaml through `smki policy adopt` is allowed, and the trail then says so."""
    state = copy_state(org_authority[0], tmp_path)
    evil = evil_policy(tmp_path)
    smki("policy", "adopt", str(evil), "--state", str(state))
    smki(*issue_org_args(org_authority, state, evil, tmp_path / "o.pem"))
    report = json.loads(smki("ca", "reconcile", "--state", str(state), "--json").stdout)
    assert report["agree"] is True and report["policies"] == {}


def test_reconcile_reports_an_edited_or_deleted_adoption(org_authority, tmp_path):
    state = copy_state(org_authority[0], tmp_path)
    forge_adoption(state, evil_policy(tmp_path))
    edited = smki("ca", "reconcile", "--state", str(state), check=False)
    assert edited.returncode == 1 and "policy organisation: DIFFERS" in edited.stdout and "in the audit trail" in edited.stdout
    report = json.loads(smki("ca", "reconcile", "--state", str(state), "--json", check=False).stdout)
    assert report["agree"] is False and list(report["policies"]) == ["organisation"]
    tamper(state, ("DELETE FROM adopted_policies",))
    deleted = smki("ca", "reconcile", "--state", str(state), check=False)
    assert deleted.returncode == 1 and "is missing from the state" in deleted.stdout


# -- finding B: a store read from read-only media, and nothing created beside the evidence -----------------
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / /mnt 2>/dev/null || mount --bind -o ro /tmp /tmp"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


read_only_mounts = pytest.mark.skipif(not _can_mount_read_only(), reason="needs `unshare -m` and a bind mount (root, or user namespaces)")


def smki_on_read_only(directories: list[Path], *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a private mount namespace where each of `directories` is bind-mounted read-only onto itself."""
    mounts = "; ".join(f"mount --bind -o ro {shlex.quote(str(d))} {shlex.quote(str(d))}" for d in directories)
    command = " ".join(shlex.quote(part) for part in (sys.executable, "-m", "smki.cli.main", *args))
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{mounts} && exec {command}"], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def public_key_file(tmp_path: Path) -> Path:
    """Any P-256 public key: an export names the audit key it is to be verified with."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    path = tmp_path / "audit-key.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def store(tmp_path: Path) -> Path:
    """A small authority state: the organisation policy adopted (one audit entry)."""
    state = tmp_path / "evidence"
    smki("policy", "adopt", str(POLICIES / "organisation.yaml"), "--state", str(state))
    return state


def store_with_a_log(tmp_path: Path, with_shm: bool) -> Path:
    """A copy of a store taken while its write-ahead log held a committed adoption (as a crash or a live copy leaves it)."""
    live = store(tmp_path / "live")
    holder = sqlite3.connect(live / "smki.db")  # keeps the log from being checkpointed away when smki closes
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute("SELECT COUNT(*) FROM audit_entries").fetchone()
    smki("policy", "adopt", str(POLICIES / "device.yaml"), "--state", str(live))
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    for suffix in ("", "-wal", *(("-shm",) if with_shm else ())):
        shutil.copyfile(live / f"smki.db{suffix}", evidence / f"smki.db{suffix}")
    holder.close()
    assert (evidence / "smki.db-wal").stat().st_size > 0
    return evidence


@read_only_mounts
def test_audit_verify_export_and_list_read_a_store_on_read_only_media(tmp_path):
    """Finding B as reported: a store on a read-only mount verifies, exports and lists (it was "holds no smki store", exit 3)."""
    state = store(tmp_path)
    verified = smki_on_read_only([state], "audit", "verify", "--db", str(state / "smki.db"))
    assert verified.returncode == 0 and "audit chain intact: 1 entries" in verified.stdout, verified.stderr
    exported = smki_on_read_only([state], "audit", "export", "--db", str(state / "smki.db"), "--out", str(tmp_path / "export.json"),
                                  "--public-key", str(public_key_file(tmp_path)))
    assert exported.returncode == 0, exported.stderr
    listed = smki_on_read_only([state], "ca", "list", "--state", str(state))
    assert listed.returncode == 0, listed.stderr


@read_only_mounts
def test_a_read_only_store_with_a_full_log_is_read_whole(tmp_path):
    """The committed entries still in the write-ahead log are read too: through a private copy when the -shm
    is missing, through the -shm when a copy (or a crashed writer) left one."""
    state = store_with_a_log(tmp_path, with_shm=True)
    (state / "smki.db-shm").rename(tmp_path / "saved-shm")
    for shm in (None, tmp_path / "saved-shm"):
        if shm is not None:
            shm.rename(state / "smki.db-shm")
        before = sorted(os.listdir(state))
        verified = smki_on_read_only([state], "audit", "verify", "--db", str(state / "smki.db"))
        assert verified.returncode == 0 and "audit chain intact: 2 entries" in verified.stdout, verified.stderr
        assert sorted(os.listdir(state)) == before


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _can_run_as_nobody() -> bool:
    if shutil.which("setpriv") is None:
        return False
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import smki.cli.main"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_run_as_nobody(), reason="needs setpriv and a Python that user nobody can run")
def test_an_auditor_without_write_permission_reads_the_store_and_is_told_what_is_wrong():
    """Finding B with permissions: an auditor who may only read the store verifies it; a file the auditor may not
    read is reported as such, not as "holds no smki store"."""
    top = Path(tempfile.mkdtemp(prefix="smki-state-hardening-"))  # outside pytest's 0700 directories: nobody must reach it
    try:
        top.chmod(0o755)
        state = store(top)
        state.chmod(0o755)
        (state / "smki.db").chmod(0o644)
        before = sorted(os.listdir(state))
        run = [*NOBODY, sys.executable, "-m", "smki.cli.main", "audit", "verify", "--db", str(state / "smki.db")]
        readable = subprocess.run(run, capture_output=True, text=True, timeout=300)
        assert readable.returncode == 0 and "audit chain intact: 1 entries" in readable.stdout, readable.stderr
        assert sorted(os.listdir(state)) == before
        (state / "smki.db").chmod(0o600)  # (audit verify's --db refuses it already, exit 2; ca list opens it itself)
        unreadable = subprocess.run([*NOBODY, sys.executable, "-m", "smki.cli.main", "ca", "list", "--state", str(state)],
                                    capture_output=True, text=True, timeout=300)
        one_line(unreadable, 3)
        assert "permission denied" in unreadable.stderr and "holds no smki store" not in unreadable.stderr, unreadable.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("with_log", [False, True], ids=["no-log", "log-without-shm"])
def test_reading_a_store_creates_nothing_beside_it(tmp_path, with_log):
    """On writable storage too: no -wal or -shm left beside the evidence by verify, export, list or reconcile."""
    state = store_with_a_log(tmp_path, with_shm=False) if with_log else store(tmp_path)
    before = sorted(os.listdir(state))
    db, scratch = str(state / "smki.db"), tmp_path / "scratch"
    scratch.mkdir()
    for args in (("audit", "verify", "--db", db),
                 ("audit", "export", "--db", db, "--out", str(tmp_path / "e.json"), "--public-key", str(public_key_file(tmp_path))),
                 ("ca", "list", "--state", str(state)), ("ca", "reconcile", "--state", str(state))):
        smki(*args, env={"TMPDIR": str(scratch)})
        (tmp_path / "e.json").unlink(missing_ok=True)
        assert sorted(os.listdir(state)) == before, args
    assert list(scratch.iterdir()) == []  # the private copies are removed


# -- finding C: repeating a multi-file lodge lodges what the earlier run did not --------------------------
from test_librarian_publishing import Pki, make_crl  # noqa: E402


@pytest.fixture(scope="module")
def lodging_pki(smki_pki_2026):
    """The Organisation hierarchy of the test PKI from 2026-01-01 (a twin below is signed by hand from that date)."""
    return Pki.of_test_pki(smki_pki_2026)


def pem_file(path: Path, certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    return str(path)


def lodge_outcomes(db: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as raw:
        return [(operation, outcome, json.loads(details).get("reason", "")) for operation, outcome, details in
                raw.execute("SELECT operation, outcome, details FROM audit_entries WHERE operation LIKE '%.lodge' ORDER BY seq")]


def test_a_repeated_crl_lodge_lodges_the_rest(tmp_path, lodging_pki):
    """Finding C as reported: organisation-crl-1 lodged alone, then crl-1, the ARL and crl-2 together."""
    pki, db, pub = lodging_pki, str(tmp_path / "repo.db"), tmp_path / "pub"
    smki("librarian", "lodge", "--db", db, "--trust-root", pem_file(tmp_path / "root.pem", pki.root),
            pem_file(tmp_path / "issuing.pem", pki.issuing), pem_file(tmp_path / "org.pem", pki.orgs[0]))
    (tmp_path / "crl-1.crl").write_bytes(make_crl(pki.issuing, pki.issuing_signer, 1))
    (tmp_path / "arl-1.crl").write_bytes(make_crl(pki.root, pki.root_signer, 1))
    (tmp_path / "crl-2.crl").write_bytes(make_crl(pki.issuing, pki.issuing_signer, 2, revoked=[pki.orgs[0].serial_number]))
    lists = [str(tmp_path / name) for name in ("crl-1.crl", "arl-1.crl", "crl-2.crl")]
    smki("librarian", "lodge-crl", "--db", db, lists[0])

    repeated = smki("librarian", "lodge-crl", "--db", db, *lists, "--publish", str(pub), check=False)
    assert repeated.returncode == 0, repeated.stderr
    lines = repeated.stdout.splitlines()
    assert lines[0].startswith(f"already lodged {lists[0]}  CRL number 1") and lines[1].startswith(f"lodged {lists[1]}  ARL number 1")
    assert lines[2].startswith(f"lodged {lists[2]}  CRL number 2") and "1 certificate(s) now revoked" in lines[2]
    index = json.loads((pub / "index.json").read_text())
    assert sorted((c["kind"], c["crl_number"]) for c in index["crls"]) == [("arl", 1), ("crl", 2)]
    assert lodge_outcomes(db)[-3:] == [("crl.lodge", "refused", f"this CRL (number 1) from issuer {Pki.ski(pki.issuing)} is already lodged"),
                                       ("arl.lodge", "success", ""), ("crl.lodge", "success", "")]

    # Every file lodged already, by this run or an earlier one: exit 0, each said per file (crl-1 is no longer the last).
    again = json.loads(smki("librarian", "lodge-crl", "--db", db, *lists, "--json").stdout)
    assert [(r["file"], r["already_lodged"], r["crl_number"]) for r in again["lodged"]] == [(lists[0], True, 1), (lists[1], True, 1), (lists[2], True, 2)]

    # A different list with a lodged cRLNumber is no repetition: still refused (exit 1), and nothing after it lodged.
    (tmp_path / "other-2.crl").write_bytes(make_crl(pki.issuing, pki.issuing_signer, 2, revoked=[pki.orgs[1].serial_number]))
    (tmp_path / "crl-3.crl").write_bytes(make_crl(pki.issuing, pki.issuing_signer, 3))
    refused = smki("librarian", "lodge-crl", "--db", db, lists[2], str(tmp_path / "other-2.crl"), str(tmp_path / "crl-3.crl"), check=False)
    one_line(refused, 1)
    assert f"{tmp_path / 'other-2.crl'}: cRLNumber 2 is not greater than 2" in refused.stderr
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT MAX(crl_number) FROM lodged_crls WHERE kind = 'crl'").fetchone()[0] == f"{2:040X}"


def test_a_repeated_certificate_lodge_lodges_the_rest(tmp_path, lodging_pki):
    pki, db = lodging_pki, str(tmp_path / "repo.db")
    files = [pem_file(tmp_path / "root.pem", pki.root), pem_file(tmp_path / "issuing.pem", pki.issuing),
             *(pem_file(tmp_path / f"org{i}.pem", certificate) for i, certificate in enumerate(pki.orgs))]
    smki("librarian", "lodge", "--db", db, "--trust-root", *files[:3])
    repeated = smki("librarian", "lodge", "--db", db, "--trust-root", *files, check=False)
    assert repeated.returncode == 0, repeated.stderr
    said = [line.split("  ")[0] for line in repeated.stdout.splitlines()]
    assert said == [*(f"already lodged {f}" for f in files[:3]), *(f"lodged {f}" for f in files[3:])]
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 5
    assert [outcome for _, outcome, _ in lodge_outcomes(db)][-5:] == ["refused", "refused", "refused", "success", "success"]
    # The root, already lodged, needs no new --trust-root decision; everything lodged before: exit 0.
    again = json.loads(smki("librarian", "lodge", "--db", db, *files, "--json").stdout)
    assert all(row["already_lodged"] for row in again) and len(again) == 5


def test_another_certificate_with_a_lodged_serial_stays_a_conflict(tmp_path, lodging_pki, monkeypatch):
    """Same issuer, same serial, other bytes: not "the same file again", so exit 5 and nothing after it lodged."""
    from test_librarian_publishing import POLICY, START
    from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
    from smki.profiles import OrganisationCertificateParams, Validity, organisation_certificate, sign_certificate
    from cryptography.hazmat.primitives.asymmetric import ec

    pki, db = lodging_pki, str(tmp_path / "repo.db")
    monkeypatch.setattr("smki.profiles.certificates.new_serial_number", lambda: pki.orgs[0].serial_number)
    twin = sign_certificate(organisation_certificate(OrganisationCertificateParams(
        RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), KeyUsage.KEY_AGREEMENT, POLICY, Validity(START, START.replace(year=2036))),
        ec.generate_private_key(ec.SECP256R1()).public_key(), pki.issuing), pki.issuing_signer)
    assert twin.serial_number == pki.orgs[0].serial_number and twin != pki.orgs[0]
    smki("librarian", "lodge", "--db", db, "--trust-root", pem_file(tmp_path / "root.pem", pki.root),
            pem_file(tmp_path / "issuing.pem", pki.issuing), pem_file(tmp_path / "org0.pem", pki.orgs[0]))
    refused = smki("librarian", "lodge", "--db", db, pem_file(tmp_path / "twin.pem", twin), pem_file(tmp_path / "org1.pem", pki.orgs[1]), check=False)
    one_line(refused, 5)
    assert "another certificate with serial" in refused.stderr
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 3
