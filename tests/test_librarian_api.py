"""The Certificate Librarian through its library API (smki.librarian.Librarian): every public method,
the refusals a library caller gets (the same error classes and messages as `smki librarian`), nothing
half-written after a refusal, and the repository web service (smki.web) over its `web_application` on loopback.

CA keys are SoftHSM keys (tests/conftest.py); the lodging tests run on SQLite and PostgreSQL.
"""

import http.client
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import smki
from test_librarian_publishing import API_KEY, POLICY, Pki, make_crl, now
from smki.audit.verify import rows_from_database, verify_trail
from smki.errors import BadInputError, ConflictError, RefusedError, SmkiError
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.librarian import Librarian
from smki.librarian.crl_lodging import CrlLodgement
from smki.librarian.lodging import Lodgement
from smki.librarian.repository_service import RepositoryService
from smki.profiles import OrganisationCertificateParams, Validity, organisation_certificate, sign_certificate
from smki.store import open_database
from smki.store.certificates import RepositoryStatus
from smki.web.server import serve_repository

pytest_plugins = ["postgres_server"]  # `database_target`: SQLite and PostgreSQL


@pytest.fixture(scope="module")
def pki(smki_pki_2026):
    """The Organisation hierarchy of the test PKI from 2026-01-01 (the certificates made by hand below start then), with its CAs' signers."""
    return Pki.of_test_pki(smki_pki_2026)


@pytest.fixture(scope="module")
def other_pki(new_hsm_key):
    """Same names, other keys: nothing it signed chains to `pki`."""
    return Pki.impostor(new_hsm_key()[1], new_hsm_key()[1])


def pem(certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def serial_of(certificate) -> str:
    return f"{certificate.serial_number:X}".zfill(32)


def state_of(target) -> dict:
    """What a refusal must leave as it was: every table a lodging writes, and the trail's last entry."""
    connection = open_database(target)
    try:
        count = lambda table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: E731
        last = connection.execute("SELECT operation, outcome FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
        return {"certificates": count("certificates"), "lodged_crls": count("lodged_crls"), "listed": count("listed_serials"),
                "changes": count("certificate_status_changes"), "entries": count("audit_entries"),
                "last": tuple(last) if last else None}
    finally:
        connection.close()


@pytest.fixture
def librarian(database_target, pki):
    """A repository holding the PKI's root (trusted explicitly) and Issuing OCA, lodged through the library."""
    with Librarian(database_target, actor="api-test") as librarian:
        librarian.lodge(pem(pki.root), trust_root=True)
        librarian.lodge(pki.issuing)
        yield librarian


def tampered(certificate) -> x509.Certificate:
    # The last octet is inside the signature's s INTEGER: it still parses, the signature no longer verifies.
    der = certificate.public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(der[:-1] + bytes((der[-1] ^ 0x01,)))


def twin_of(pki, monkeypatch) -> x509.Certificate:
    """Another Organisation Certificate with orgs[0]'s issuer and serial."""
    monkeypatch.setattr("smki.profiles.certificates.new_serial_number", lambda: pki.orgs[0].serial_number)
    twin = sign_certificate(organisation_certificate(OrganisationCertificateParams(
        RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), KeyUsage.KEY_AGREEMENT, POLICY, Validity(pki.orgs[0].not_valid_before_utc, pki.orgs[0].not_valid_after_utc)),
        ec.generate_private_key(ec.SECP256R1()).public_key(), pki.issuing), pki.issuing_signer)
    assert twin.serial_number == pki.orgs[0].serial_number and twin != pki.orgs[0]
    return twin


def cli_refusal(*args: str) -> tuple[int, str]:
    """Exit code and one-line message of a refused `smki` command."""
    result = smki(*args, check=False)
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    return result.returncode, result.stderr.removeprefix("smki: error: ").rstrip("\n")


# -- lodge ----------------------------------------------------------------------------------------------------

def test_lodge_takes_a_parsed_certificate_bytes_or_a_file_and_reports_a_repetition(librarian, pki, tmp_path, database_target):
    first = librarian.lodge(pki.orgs[0])
    assert first == Lodgement(serial_of(pki.orgs[0])) and first.summary() == {"serial": serial_of(pki.orgs[0]), "already_lodged": False}
    from_file = librarian.lodge(write(tmp_path / "org1.der", pki.orgs[1].public_bytes(Encoding.DER)))
    assert from_file.file == tmp_path / "org1.der" and not from_file.already_lodged
    again = librarian.lodge(pem(pki.orgs[0]))
    assert again.already_lodged and again.serial_hex == serial_of(pki.orgs[0])
    # The repetition changed nothing but the trail, which records it as refused.
    assert state_of(database_target)["certificates"] == 4 and state_of(database_target)["last"] == ("certificate.lodge", "refused")


@pytest.mark.parametrize("case", ["no lodged issuer", "bad signature", "conflicting serial", "untrusted root", "not a certificate"])
def test_lodge_refusals_leave_nothing_half_written(librarian, pki, other_pki, monkeypatch, database_target, case):
    librarian.lodge(pki.orgs[0])
    offending, error, fragment = {
        "no lodged issuer": (other_pki.orgs[0], RefusedError, "issuer unknown: no lodged certificate has subjectKeyIdentifier"),
        "bad signature": (tampered(pki.orgs[1]), RefusedError, "not validly signed by its issuer"),
        "conflicting serial": (twin_of(pki, monkeypatch), ConflictError, "another certificate with serial"),
        "untrusted root": (other_pki.root, RefusedError, "lodged only when the operator trusts it explicitly"),
        "not a certificate": (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", BadInputError, "certificate"),
    }[case]
    before = state_of(database_target)
    with pytest.raises(error, match=fragment):
        librarian.lodge(offending)
    after = state_of(database_target)
    assert after["certificates"] == before["certificates"] == 3
    if error is not BadInputError:  # a check refused it: audited, and nothing else changed
        assert after["last"] == ("certificate.lodge", "refused") and after["entries"] == before["entries"] + 1


@pytest.mark.parametrize("case", ["no lodged issuer", "bad signature", "conflicting serial"])
def test_the_library_refuses_a_certificate_as_the_cli_does(pki, other_pki, monkeypatch, tmp_path, case):
    offending = {"no lodged issuer": other_pki.orgs[0], "bad signature": tampered(pki.orgs[1]),
                 "conflicting serial": twin_of(pki, monkeypatch)}[case]
    lodged = [write(tmp_path / name, pem(c)) for name, c in (("root.pem", pki.root), ("issuing.pem", pki.issuing), ("org0.pem", pki.orgs[0]))]
    offending_file = write(tmp_path / "offending.pem", pem(offending))
    smki("librarian", "lodge", "--db", str(tmp_path / "cli.db"), "--trust-root", *map(str, lodged))
    code, message = cli_refusal("librarian", "lodge", "--db", str(tmp_path / "cli.db"), str(offending_file))

    with Librarian(tmp_path / "api.db") as librarian:
        librarian.lodge_many(lodged, trust_root=True)
        with pytest.raises(SmkiError) as refused:
            librarian.lodge_many([offending_file])
    assert (refused.value.exit_code, str(refused.value)) == (code, message)


def test_lodge_many_stops_at_the_first_refusal_and_still_publishes(database_target, pki, other_pki, tmp_path):
    files = [write(tmp_path / f"{name}.pem", pem(c)) for name, c in
             (("root", pki.root), ("issuing", pki.issuing), ("org0", pki.orgs[0]), ("stranger", other_pki.orgs[0]), ("org1", pki.orgs[1]))]
    with Librarian(database_target) as librarian:
        with pytest.raises(RefusedError) as refused:
            librarian.lodge_many(files, trust_root=True, publish_to=tmp_path / "pub")
        assert str(refused.value).startswith(f"{files[3]}: issuer unknown")
        assert str(refused.value).endswith(f"; the repository was published to {tmp_path / 'pub'} all the same")
        assert json.loads((tmp_path / "pub" / "index.json").read_text())["certificates"]["count"] == 3

        # Repeating without the stranger completes the run: what was lodged before is reported, not refused.
        lodged, publication = librarian.lodge_many([files[i] for i in (0, 1, 2, 4)], trust_root=True, publish_to=tmp_path / "pub")
    assert [row.already_lodged for row in lodged] == [True, True, True, False]
    assert [row.summary()["file"] for row in lodged] == [str(files[i]) for i in (0, 1, 2, 4)]
    assert publication.certificates == 4 and publication.summary()["directory"] == str(tmp_path / "pub")


# -- lodge_crl ------------------------------------------------------------------------------------------------

def test_lodge_crl_takes_bytes_a_file_or_a_parsed_list_and_revokes(librarian, pki, tmp_path):
    librarian.lodge(pki.orgs[0])
    assert librarian.status_of(pki.orgs[0].serial_number) is RepositoryStatus.IN_USE
    first = librarian.lodge_crl(make_crl(pki.issuing, pki.issuing_signer, 1))
    assert isinstance(first, CrlLodgement) and (first.crl.kind, first.crl.number, first.newly_revoked) == ("crl", 1, [])
    second = write(tmp_path / "crl-2.crl", make_crl(pki.issuing, pki.issuing_signer, 2, revoked=[pki.orgs[0].serial_number]))
    lodged = librarian.lodge_crl(second)
    assert lodged.newly_revoked == [serial_of(pki.orgs[0])] and lodged.summary()["file"] == str(second)
    assert librarian.status_of(serial_of(pki.orgs[0])) is RepositoryStatus.REVOKED
    again = librarian.lodge_crl(x509.load_der_x509_crl(second.read_bytes()))
    assert again.already_lodged and again.crl.number == 2 and again.file is None
    arl = librarian.lodge_crl(make_crl(pki.root, pki.root_signer, 1))
    assert arl.crl.kind == "arl"


@pytest.mark.parametrize("case", ["unknown issuer", "lower cRLNumber", "stale", "not a CRL"])
def test_lodge_crl_refusals_leave_nothing_half_written(librarian, pki, other_pki, database_target, case):
    librarian.lodge(pki.orgs[0])
    librarian.lodge_crl(make_crl(pki.issuing, pki.issuing_signer, 5))
    earlier = now() - timedelta(days=2)
    offending, error, fragment = {
        "unknown issuer": (make_crl(other_pki.issuing, other_pki.issuing_signer, 6, revoked=[pki.orgs[0].serial_number]),
                           RefusedError, "issuer unknown: no lodged CA certificate has subjectKeyIdentifier"),
        "lower cRLNumber": (make_crl(pki.issuing, pki.issuing_signer, 4, revoked=[pki.orgs[0].serial_number]),
                            RefusedError, "cRLNumber 4 is not greater than 5"),
        "stale": (make_crl(pki.issuing, pki.issuing_signer, 6, revoked=[pki.orgs[0].serial_number], this_update=earlier,
                           next_update=earlier + timedelta(hours=1)), RefusedError, "stale: nextUpdate"),
        "not a CRL": (b"not a list", BadInputError, "not a DER or PEM CRL"),
    }[case]
    before = state_of(database_target)
    with pytest.raises(error, match=fragment):
        librarian.lodge_crl(offending)
    after = state_of(database_target)
    assert {k: after[k] for k in ("certificates", "lodged_crls", "listed", "changes")} == \
           {k: before[k] for k in ("certificates", "lodged_crls", "listed", "changes")}
    assert librarian.status_of(pki.orgs[0].serial_number) is RepositoryStatus.IN_USE
    if error is RefusedError:
        assert after["last"][1] == "refused" and after["entries"] == before["entries"] + 1


@pytest.mark.parametrize("case", ["unknown issuer", "lower cRLNumber"])
def test_the_library_refuses_a_crl_as_the_cli_does(pki, other_pki, tmp_path, case):
    certificates = [write(tmp_path / name, pem(c)) for name, c in (("root.pem", pki.root), ("issuing.pem", pki.issuing))]
    lodged = write(tmp_path / "crl-5.crl", make_crl(pki.issuing, pki.issuing_signer, 5))
    offending = write(tmp_path / "offending.crl", make_crl(other_pki.issuing, other_pki.issuing_signer, 6) if case == "unknown issuer"
                      else make_crl(pki.issuing, pki.issuing_signer, 4))
    db = str(tmp_path / "cli.db")
    smki("librarian", "lodge", "--db", db, "--trust-root", *map(str, certificates))
    smki("librarian", "lodge-crl", "--db", db, str(lodged))
    code, message = cli_refusal("librarian", "lodge-crl", "--db", db, str(offending))

    with Librarian(tmp_path / "api.db") as librarian:
        librarian.lodge_many(certificates, trust_root=True)
        librarian.lodge_crls([lodged])
        with pytest.raises(RefusedError) as refused:
            librarian.lodge_crls([offending])
    assert (refused.value.exit_code, str(refused.value)) == (code, message)


def test_lodge_crls_publishes_after_a_refusal(librarian, pki, other_pki, tmp_path):
    lists = [make_crl(pki.issuing, pki.issuing_signer, 1), make_crl(other_pki.issuing, other_pki.issuing_signer, 2),
             make_crl(pki.issuing, pki.issuing_signer, 3)]
    with pytest.raises(RefusedError, match="all the same$"):
        librarian.lodge_crls(lists, publish_to=tmp_path / "pub")
    index = json.loads((tmp_path / "pub" / "index.json").read_text())
    assert [c["crl_number"] for c in index["crls"]] == [1]
    lodged, publication = librarian.lodge_crls([lists[0], lists[2]])
    assert [(row.already_lodged, row.crl.number) for row in lodged] == [(True, 1), (False, 3)] and publication is None


# -- publish and bulk files -----------------------------------------------------------------------------------

def test_publish_writes_the_repository_and_audits_it(librarian, pki, tmp_path, database_target):
    librarian.lodge(pki.orgs[0])
    librarian.lodge_crl(make_crl(pki.issuing, pki.issuing_signer, 1))
    publication = librarian.publish(tmp_path / "pub")
    assert (publication.certificates, len(publication.crls)) == (3, 1)
    assert (tmp_path / "pub" / "certificates" / Pki.ski(pki.issuing) / f"{serial_of(pki.orgs[0])}.cer").read_bytes() == \
        pki.orgs[0].public_bytes(Encoding.DER)
    assert state_of(database_target)["last"] == ("repository.publish", "success")
    assert librarian.publish(str(tmp_path / "pub")).files_written == 1  # only the index: nothing else changed


def test_a_publish_that_fails_is_audited(librarian, tmp_path, database_target):
    blocker = write(tmp_path / "not-a-directory", b"")
    with pytest.raises(BadInputError, match="is not a directory"):
        librarian.publish(blocker)
    assert state_of(database_target)["last"] == ("repository.publish", "refused")


def test_write_bulk_files_and_its_since_value(librarian, pki, tmp_path):
    librarian.lodge(pki.orgs[0])
    files = librarian.write_bulk_files(tmp_path / "bulk", since=(now() - timedelta(hours=1)).isoformat())
    assert [(f.bulk_kind, f.certificates) for f in files] == [("full", 3), ("delta", 3)]
    later = librarian.write_bulk_files(tmp_path / "later", since=now() + timedelta(hours=1))
    assert [(f.bulk_kind, f.certificates) for f in later] == [("full", 3), ("delta", 0)]
    with pytest.raises(ConflictError, match="already exists"):
        librarian.write_bulk_files(tmp_path / "bulk")
    with pytest.raises(BadInputError) as bad:
        librarian.write_bulk_files(tmp_path / "bad", since="yesterday")
    assert not (tmp_path / "bad").exists()
    code, message = cli_refusal("librarian", "bulk", "--db", str(librarian.database), "--out", str(tmp_path / "bad"), "--since", "yesterday")
    assert (code, message) == (bad.value.exit_code, str(bad.value))


# -- find and status_of ---------------------------------------------------------------------------------------

def test_find_by_each_filter_in_its_typed_and_plain_forms(librarian, pki):
    for certificate in pki.orgs:
        librarian.lodge(certificate)
    org = pki.orgs[1]
    assert [r.serial_hex for r in librarian.find(serial=org.serial_number)] == [serial_of(org)]
    assert [r.serial_hex for r in librarian.find(serial=serial_of(org).lower())] == [serial_of(org)]
    assert [r.serial_hex for r in librarian.find(eui64="90-B3-D5-1F-30-01-00-01")] == [serial_of(org)]
    assert [r.serial_hex for r in librarian.find(eui64=EUI64.parse("90B3D51F30010001"))] == [serial_of(org)]
    assert [r.serial_hex for r in librarian.find(ski=Pki.ski(org).lower())] == [serial_of(org)]
    for role in ("supplier", "02", RemotePartyRole.SUPPLIER, 2):
        assert len(librarian.find(role=role)) == 3
    for usage in ("KA", KeyUsage.KEY_AGREEMENT):
        assert len(librarian.find(usage=usage)) == 3
    assert len(librarian.find(usage="DS")) == 0
    assert len(librarian.find(status="I")) == 5 and len(librarian.find(status=RepositoryStatus.REVOKED)) == 0
    assert len(librarian.find(limit=2)) == 2


@pytest.mark.parametrize("option, value, library_filter, fragment", [
    ("--ski", "zz", {"ski": "zz"}, "--ski: 'zz' is not hexadecimal"),
    ("--eui64", "90B3", {"eui64": "90B3"}, "malformed EUI-64"),
    ("--role", "plumber", {"role": "plumber"}, "unknown RemotePartyRole"),
    ("--usage", "XX", {"usage": "XX"}, "unknown key usage"),
    ("--serial", "xyz", {"serial": "xyz"}, "is not hexadecimal"),
])
def test_a_bad_search_value_is_refused_as_the_cli_refuses_it(librarian, tmp_path, option, value, library_filter, fragment):
    with pytest.raises(BadInputError, match=fragment) as refused:
        librarian.find(**library_filter)
    db = tmp_path / "cli.db"
    open_database(db, create=True).close()
    code, message = cli_refusal("librarian", "find", "--db", str(db), option, value)
    assert (code, message) == (refused.value.exit_code, str(refused.value))


def test_values_only_the_library_checks(librarian):
    with pytest.raises(BadInputError, match="not a repository status"):
        librarian.find(status="X")
    with pytest.raises(BadInputError, match="limit"):
        librarian.find(limit=0)
    with pytest.raises(BadInputError, match="unknown RemotePartyRole"):
        librarian.find(role=0x55)
    with pytest.raises(BadInputError, match="no certificate with serial"):
        librarian.status_of("0BADC0DE")
    with pytest.raises(BadInputError, match="not negative"):
        librarian.status_of(-1)


# -- the web application and the server -----------------------------------------------------------------------

def test_web_application_needs_an_api_key(librarian):
    with pytest.raises(BadInputError, match="at least one API key"):
        librarian.web_application(api_key=None)
    assert isinstance(librarian.web_application(api_key=API_KEY), RepositoryService)


def get(server, path: str) -> tuple[int, bytes]:
    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_serve_answers_on_loopback_until_shut_down(tmp_path, pki):
    with Librarian(tmp_path / "repo.db") as librarian:
        librarian.lodge_many([pem(pki.root), pki.issuing, pki.orgs[0]], trust_root=True)
        crl = make_crl(pki.issuing, pki.issuing_signer, 1)
        librarian.lodge_crl(crl)
        librarian.publish(tmp_path / "pub")
        server = serve_repository(librarian.web_application(api_key=API_KEY, published=tmp_path / "pub"))
    try:
        assert server.url == f"http://127.0.0.1:{server.address[1]}" and server.address[1] != 0
        assert get(server, f"/certificates/{serial_of(pki.orgs[0])}.cer?apikey={API_KEY}") == (200, pki.orgs[0].public_bytes(Encoding.DER))
        assert get(server, f"/crl/{Pki.ski(pki.issuing)}.crl?apikey={API_KEY}") == (200, crl)
        assert get(server, f"/certificates/{serial_of(pki.orgs[0])}.cer?apikey=wrong")[0] == 403
        host, port = server.address
        connection = http.client.HTTPConnection(host, port, timeout=10)
        body = b"<CertificateSearchRequest><CertificateSubjectName>90B3D51F30010000</CertificateSubjectName></CertificateSearchRequest>"
        connection.request("POST", f"/services/certificatesearch?apikey={API_KEY}", body, {"Content-Type": "application/xml"})
        response = connection.getresponse()
        assert response.status == 200 and serial_of(pki.orgs[0]).encode() in response.read()
        connection.close()
    finally:
        server.shutdown()
    with pytest.raises(OSError):
        get(server, "/index.json")


# -- the audit key ----------------------------------------------------------------------------------------------

def test_with_an_audit_key_each_operation_ends_with_a_signed_checkpoint(tmp_path, pki, new_hsm_key, hsm_token):
    audit_key, audit_signer = new_hsm_key()
    with Librarian(tmp_path / "repo.db", audit_key=audit_key, audit_pin=hsm_token.pin) as librarian:
        librarian.lodge(pki.root, trust_root=True)
        with pytest.raises(RefusedError):
            librarian.lodge(pki.orgs[0])  # its issuer is not lodged
        librarian.publish(tmp_path / "pub")
    connection = open_database(tmp_path / "repo.db")
    entries, checkpoints = rows_from_database(connection)
    report = verify_trail(entries, checkpoints, audit_signer.public_key, require_signed_head=True)
    assert report.ok and report.entries == 3 and report.checkpoints == 3 and report.last_signed_seq == 3
    assert [(e["operation"], e["outcome"]) for e in entries] == [
        ("certificate.lodge", "success"), ("certificate.lodge", "refused"), ("repository.publish", "success")]
