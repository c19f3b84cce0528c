"""The second hostile review of the actors (issue 13): each defect it found, driven through the library.

Each test failed before its fix: a library caller must get the CLI's refusals, before anything is
signed, and never a hang, a raw Python exception or a secret in a repr.
"""

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smki.errors import BadInputError, ConflictError
from smki.issuing import IssuingAuthority
from smki.librarian import Librarian
from test_testing_kit import fresh_environment


def count(state: Path, table: str) -> int:
    connection = sqlite3.connect(state / "smki.db")
    try:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        connection.close()


def last_outcome(state: Path) -> tuple[str, str]:
    connection = sqlite3.connect(state / "smki.db")
    try:
        return connection.execute("SELECT operation, outcome FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        connection.close()


def authority(pki, name: str, state: Path | None = None, **overrides) -> IssuingAuthority:
    hierarchy = "organisation" if name == "issuing-oca" else "device"
    parts = dict(certificate=pki.certificate_file(name), key=pki.key(name), pin=pki.token.pin,
                 policy=pki.policy_file(hierarchy), environment="test", actor="reviewer")
    return IssuingAuthority(state or pki.state(name), **{**parts, **overrides})


def test_a_dangling_symlink_as_output_is_refused_before_anything_is_signed(smki_pki, tmp_path):
    """A link to nowhere passed `exists()`; the write then failed after the certificate was committed."""
    link = tmp_path / "link.pem"
    link.symlink_to(tmp_path / "nowhere.pem")
    state = smki_pki.state("issuing-oca")
    before = count(state, "certificates"), count(state, "crl_numbers")
    with authority(smki_pki, "issuing-oca") as oca:
        request = smki_pki.organisation_csr("90-B3-D5-1F-30-0A-00-01")
        with pytest.raises(ConflictError, match="already exists"):
            oca.issue_organisation(request.der, requester="supplier", out=link)
        assert count(state, "certificates") == before[0] and last_outcome(state) == ("certificate.issue.organisation", "refused")
        with pytest.raises(ConflictError, match="already exists"):
            oca.issue_crl(out=link)
    assert (count(state, "certificates"), count(state, "crl_numbers")) == before  # no cRLNumber used up
    assert not link.exists() and link.is_symlink()


def test_a_certificate_under_another_environment_than_its_issuer_is_refused(smki_pki):
    """The test Issuing OCA signed a certificate carrying the production policy OID: one that can never validate."""
    state = smki_pki.state("issuing-oca")
    before = count(state, "certificates")
    with authority(smki_pki, "issuing-oca", environment="production") as oca:
        request = smki_pki.organisation_csr("90-B3-D5-1F-30-0A-00-02")
        with pytest.raises(BadInputError, match="issuer certificate is not under policy .*environment"):
            oca.issue_organisation(request.der, requester="supplier")
    assert count(state, "certificates") == before


def test_a_refusal_on_a_state_that_is_not_there_does_not_make_one(smki_pki, tmp_path):
    ghost = tmp_path / "ghost" / "state"
    with authority(smki_pki, "issuing-oca", state=ghost) as oca:
        with pytest.raises(BadInputError, match="no smki database here"):
            oca.issue_crl()
    assert not ghost.exists()


def test_wrong_kinds_of_value_are_refused_as_bad_input(smki_pki):
    with authority(smki_pki, "issuing-oca") as oca:
        with pytest.raises(BadInputError, match="a request is bytes"):
            oca.issue_organisation(None, requester="supplier")
        request = smki_pki.organisation_csr("90-B3-D5-1F-30-0A-00-03")
        with pytest.raises(BadInputError, match="--not-before: give a datetime"):
            oca.issue_organisation(request.der, requester="supplier", not_before=5)
        with pytest.raises(BadInputError, match="'bogus' is not a repository status"):
            oca.list(status="bogus")
        with pytest.raises(BadInputError, match="unknown certificate type 'bogus'"):
            oca.list(certificate_type="bogus")
    assert last_outcome(smki_pki.state("issuing-oca"))[1] == "refused"  # a refusal, not a failure


def test_a_request_given_as_pem_text_is_a_request_not_a_file_name(smki_pki):
    request = smki_pki.organisation_csr("90-B3-D5-1F-30-0A-00-04")
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = x509.load_der_x509_csr(request.der).public_bytes(Encoding.PEM).decode()
    with authority(smki_pki, "issuing-oca") as oca:
        issued = oca.issue_organisation(pem, requester="supplier")
    assert issued.record.entity_id == "90B3D51F300A0004"


def test_a_pin_given_as_text_stays_out_of_every_repr(smki_pki):
    with authority(smki_pki, "issuing-oca", audit_pin=smki_pki.token.pin) as oca:
        held = repr(vars(oca))
    assert smki_pki.token.pin not in held and "PinSource" in held


def test_publishing_into_a_file_is_bad_input(smki_pki, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    with Librarian(tmp_path / "repository.db") as librarian:
        librarian.lodge(smki_pki.root_oca_certificate, trust_root=True)
        with pytest.raises(BadInputError, match="is not a directory"):
            librarian.publish(not_a_directory)
        with pytest.raises(BadInputError, match="is not a directory"):
            librarian.write_bulk_files(not_a_directory)


def test_a_test_pki_left_unclosed_removes_its_directory_when_the_process_ends(tmp_path):
    script = "import smki.testing\nprint(smki.testing.TestPKI.create().directory)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=fresh_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert not Path(result.stdout.strip()).exists()


def test_a_script_that_calls_issue_batch_without_a_main_guard_stops_instead_of_hanging(tmp_path):
    """Spawned workers re-run an unguarded script, die while starting, and were replaced for ever."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""\
        import zipfile, smki.testing
        pki = smki.testing.TestPKI.create()
        with zipfile.ZipFile({str(tmp_path / 'batch.zip')!r}, "w") as batch:
            for n in range(4):
                batch.writestr(f"{{n}}.csr", pki.device_csr(f"00DB12345678{{n:04X}}").der)
        pki.issuing_dca.issue_batch({str(tmp_path / 'batch.zip')!r}, response={str(tmp_path / 'r.zip')!r},
                                    status={str(tmp_path / 's.csv')!r}, requester="supplier", device_type="ESME", workers=1)
        """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=fresh_environment(),
                            timeout=400, cwd=tmp_path)
    assert result.returncode != 0 and 'if __name__ == "__main__":' in result.stderr
    assert not (tmp_path / "r.zip").exists()


def test_a_softhsm_configuration_that_was_never_there_is_named_as_such(tmp_path):
    """It was reported as a store 'gone (was its directory removed?)', which sent the tester looking for a deletion."""
    env = {**fresh_environment(), "SOFTHSM2_CONF": str(tmp_path / "missing" / "softhsm2.conf")}
    result = subprocess.run([sys.executable, "-c", "import smki.testing; smki.testing.SoftHsmStore.for_process()"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and "$SOFTHSM2_CONF names" in result.stderr and "is gone" not in result.stderr


# -- the CLI parity review: where the refactor had changed what the CLI did ------------------------------------

def test_a_lodging_run_signs_one_checkpoint_not_one_per_file(smki_pki, tmp_path):
    """Each lodged file had come to sign its own checkpoint: N HSM signatures per run instead of one."""
    audit_key, _ = smki_pki.token.new_key("librarian-audit")
    certificates = [smki_pki.organisation_certificate(f"90-B3-D5-1F-30-0B-00-0{n}").issued.certificate for n in range(3)]
    with Librarian(tmp_path / "repository.db", audit_key=audit_key, audit_pin=smki_pki.token.pin) as librarian:
        librarian.lodge_many([smki_pki.root_oca_certificate], trust_root=True)
        librarian.lodge_many([smki_pki.issuing_oca_certificate, *certificates], publish_to=tmp_path / "www")
    connection = sqlite3.connect(tmp_path / "repository.db")
    contexts = [row[0] for row in connection.execute("SELECT context FROM audit_checkpoints ORDER BY seq")]
    entries = connection.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0]
    connection.close()
    assert contexts == ["lodge of 1 file(s)", "lodge of 4 file(s)"] and entries == 6  # 5 lodgings and the publication


def test_an_empty_not_before_is_the_default_as_it_was(smki_pki):
    """`--not-before "$UNSET"` had come to be refused; it means today, as before the actors."""
    with authority(smki_pki, "issuing-oca") as oca:
        issued = oca.issue_organisation(smki_pki.organisation_csr("90-B3-D5-1F-30-0A-00-05").der, requester="supplier", not_before="")
    assert issued.certificate.not_valid_before_utc.time().isoformat() == "00:00:00"
