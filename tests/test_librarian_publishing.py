"""The Librarian lodges CRLs and ARLs (checked first), publishes the repository atomically, and writes bulk files.

The PKI is smki.testing's (`smki_pki`), its CA keys on the kit's SoftHSM token; published CRLs are read back with openssl and
over HTTP from the repository web service.
"""

import base64
import gzip
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import openssl
from conftest import smki as run_cli
from smki.audit.verify import rows_from_database
from smki.librarian.bulk import write_bulk_files
from smki.librarian.crl_lodging import lodge_crl
from smki.librarian.lodging import lodge_certificate
from smki.librarian import publishing
from smki.librarian.publishing import TEMP_SUFFIX, publish_repository
from smki.librarian.repository_service import RepositoryService
from smki.web.server import serve_repository
from smki.errors import EXIT_BAD_INPUT, EXIT_CONFLICT, EXIT_REFUSED, ConflictError, RefusedError
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles import (IssuingCaCertificateParams, OrganisationCertificateParams, RootCertificateParams, Validity, ca_name,
                           issuing_ca_certificate, organisation_certificate, root_certificate, sign_certificate)
from smki.profiles import der
from smki.profiles.crl import ECDSA_WITH_SHA256, RevokedEntry, build_crl
from smki.profiles.describe import describe
from smki.store import open_database

pytest_plugins = ["postgres_server"]  # the `database_target` fixture: each library-level test runs on SQLite and PostgreSQL

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
POLICY = "1.2.826.0.1.8641679.1.2.1.4"
API_KEY = "publishing-test-key"


class Pki:
    """A Root OCA, an Issuing OCA and three Organisation Certificates (supplier, KA), with the CAs' SoftHSM signers."""

    def __init__(self, root_signer, issuing_signer, root, issuing, orgs):
        self.root_signer, self.issuing_signer = root_signer, issuing_signer
        self.root, self.issuing, self.orgs = root, issuing, orgs

    @classmethod
    def of_test_pki(cls, test_pki):
        """The test PKI's Organisation hierarchy (smki.testing), its CAs signing with their keys on the kit's token."""
        signer = test_pki.token.signer
        orgs = [test_pki.organisation_certificate(f"90B3D51F3001000{i}", usage="KA").certificate for i in range(3)]
        return cls(signer(test_pki.key("root-oca")), signer(test_pki.key("issuing-oca")), test_pki.root_oca_certificate,
                   test_pki.issuing_oca_certificate, orgs)

    @classmethod
    def impostor(cls, root_signer, issuing_signer, root_name="ZA"):
        """Made by hand: the test PKI's names (and the lists it signs) under other keys."""
        root = sign_certificate(root_certificate(RootCertificateParams(
            ca_name([("OU", "00"), ("CN", root_name)]), (POLICY,), Validity(START, START.replace(year=2056))), root_signer.public_key), root_signer)
        issuing = sign_certificate(issuing_ca_certificate(IssuingCaCertificateParams(
            ca_name([("OU", "07"), ("CN", "Z1")]), (POLICY,), Validity(START, START.replace(year=2051))), issuing_signer.public_key, root), root_signer)
        orgs = [sign_certificate(organisation_certificate(OrganisationCertificateParams(
            RemotePartyRole.SUPPLIER, EUI64.parse(f"90B3D51F3001000{i}"), KeyUsage.KEY_AGREEMENT, POLICY, Validity(START, START.replace(year=2036))),
            ec.generate_private_key(ec.SECP256R1()).public_key(), issuing), issuing_signer) for i in range(3)]
        return cls(root_signer, issuing_signer, root, issuing, orgs)

    @staticmethod
    def ski(certificate) -> str:
        return describe(certificate).subject_key_id.hex().upper()


@pytest.fixture(scope="module")
def pki(smki_pki):
    return Pki.of_test_pki(smki_pki)


@pytest.fixture(scope="module")
def other_pki(new_hsm_key):
    """Same names, other keys: its lists must never be taken for the real authority's."""
    return Pki.impostor(new_hsm_key()[1], new_hsm_key()[1])


def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


def make_crl(issuer, signer, number, *, revoked=(), this_update=None, next_update=None) -> bytes:
    this_update = this_update or now() - timedelta(minutes=1)
    entries = [RevokedEntry(serial, this_update, "keyCompromise") for serial in revoked]
    return build_crl(issuer, signer, crl_number=number, this_update_utc=this_update,
                     next_update_utc=next_update or this_update + timedelta(hours=24), entries=entries).public_bytes(Encoding.DER)


def crl_without_number(issuer, signer) -> bytes:
    """A correctly signed list that breaks the profile: no cRLNumber (smki.crl.crl_number)."""
    aki = der.sequence(bytes.fromhex("0603551d23"), der.tlv(0x04, der.sequence(der.tlv(0x80, describe(issuer).subject_key_id))))
    this_update = now() - timedelta(minutes=1)
    tbs = der.sequence(der.integer(1), ECDSA_WITH_SHA256, issuer.subject.public_bytes(), der.time(this_update),
                       der.time(this_update + timedelta(hours=24)), der.tlv(0xA0, der.sequence(aki)))
    return der.sequence(tbs, ECDSA_WITH_SHA256, der.tlv(0x03, b"\x00" + signer.sign(tbs)))


def with_bad_signature(crl_der: bytes) -> bytes:
    # The last octet is inside the signature's s INTEGER: the DER still parses, the signature no longer verifies.
    return crl_der[:-1] + bytes((crl_der[-1] ^ 0x01,))


@pytest.fixture
def repo(database_target, pki):
    """A repository holding the PKI's certificates (the root trusted explicitly)."""
    connection = open_database(database_target, create=True)
    lodge_certificate(connection, pki.root, trust_root=True)
    for certificate in (pki.issuing, *pki.orgs):
        lodge_certificate(connection, certificate)
    return connection


def published_names(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def status_of(connection, certificate) -> str:
    return connection.execute("SELECT status FROM certificates WHERE serial_hex = ?", (f"{certificate.serial_number:032X}",)).fetchone()[0]


@pytest.fixture
def served(tmp_path, database_target, repo):
    """The repository web service over the published directory, on loopback."""
    published = tmp_path / "published"
    server = serve_repository(RepositoryService(lambda: open_database(database_target), {API_KEY}, published))

    def get(path):
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        connection.request("GET", f"{path}?apikey={API_KEY}")
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, body

    yield published, get
    server.shutdown()


# -- lodging and publishing ------------------------------------------------------------------------------------


def test_crl_and_arl_are_lodged_and_published(tmp_path, pki, repo, served):
    published, get = served
    arl = make_crl(pki.root, pki.root_signer, 1)
    crl = make_crl(pki.issuing, pki.issuing_signer, 7, revoked=[pki.orgs[0].serial_number])
    arl_lodged, crl_lodged = lodge_crl(repo, arl, actor="lib-op"), lodge_crl(repo, crl, actor="lib-op")
    assert (arl_lodged.crl.kind, arl_lodged.crl.number, arl_lodged.newly_revoked) == ("arl", 1, [])
    assert (crl_lodged.crl.kind, crl_lodged.crl.number) == ("crl", 7)
    assert crl_lodged.newly_revoked == [f"{pki.orgs[0].serial_number:032X}"]
    assert status_of(repo, pki.orgs[0]) == "R" and status_of(repo, pki.orgs[1]) == "I"

    publication = publish_repository(repo, published)
    root_ski, issuing_ski = Pki.ski(pki.root), Pki.ski(pki.issuing)
    assert (published / "crl" / f"{root_ski}.crl").read_bytes() == arl
    assert (published / "crl" / f"{issuing_ski}.crl").read_bytes() == crl
    for certificate in (pki.root, pki.issuing, *pki.orgs):
        issuer = describe(certificate).authority_key_id or describe(certificate).subject_key_id
        path = published / "certificates" / issuer.hex().upper() / f"{certificate.serial_number:032X}.cer"
        assert path.read_bytes() == certificate.public_bytes(Encoding.DER)
    assert len(published_names(published)) == 5 + 2 + 1  # certificates, lists, index: no temporary file left
    index = json.loads((published / "index.json").read_text())
    assert index["format"] == "smki-repository/1" and index["certificates"]["count"] == 5 == publication.certificates
    assert index["certificates"]["by_issuer"] == {root_ski: 2, issuing_ski: 3}
    assert {(c["issuer_key_id"], c["kind"], c["crl_number"], c["path"]) for c in index["crls"]} == {
        (root_ski, "arl", 1, f"crl/{root_ski}.crl"), (issuing_ski, "crl", 7, f"crl/{issuing_ski}.crl")}

    text = openssl("crl", "-inform", "DER", "-in", str(published / "crl" / f"{issuing_ski}.crl"), "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert f"Serial Number: {pki.orgs[0].serial_number:032X}" in text.stdout.decode() and "Key Compromise" in text.stdout.decode()
    assert openssl("crl", "-inform", "DER", "-in", str(published / "crl" / f"{root_ski}.crl"), "-noout", "-text").returncode == 0

    assert get(f"/crl/{issuing_ski}.crl") == (200, crl)
    assert get(f"/crl/{root_ski}.crl") == (200, arl)
    assert json.loads(get("/index.json")[1]) == index
    assert get(f"/certificates/{issuing_ski}/{pki.orgs[1].serial_number:032X}.cer") == (200, pki.orgs[1].public_bytes(Encoding.DER))
    assert get(f"/certificates/{root_ski}/{pki.orgs[1].serial_number:032X}.cer")[0] == 402  # right serial, wrong issuer

    entries, _ = rows_from_database(repo)
    assert [(e["operation"], e["outcome"]) for e in entries[-2:]] == [("arl.lodge", "success"), ("crl.lodge", "success")]
    assert json.loads(entries[-1]["details"])["newly_revoked"] == crl_lodged.newly_revoked


def test_a_higher_number_replaces_the_published_list(tmp_path, pki, repo):
    first, second = make_crl(pki.issuing, pki.issuing_signer, 1), make_crl(pki.issuing, pki.issuing_signer, 2)
    lodge_crl(repo, first)
    publish_repository(repo, tmp_path / "pub")
    lodge_crl(repo, second)
    publication = publish_repository(repo, tmp_path / "pub")
    assert (tmp_path / "pub" / "crl" / f"{Pki.ski(pki.issuing)}.crl").read_bytes() == second
    assert publication.files_written == 2  # the list and the index: unchanged certificates are not rewritten


REFUSALS = {
    "bad signature": (lambda pki, other: with_bad_signature(make_crl(pki.issuing, pki.issuing_signer, 2)), "bad signature"),
    "unknown issuer": (lambda pki, other: make_crl(other.issuing, other.issuing_signer, 2), "issuer unknown"),
    "number not increasing": (lambda pki, other: make_crl(pki.issuing, pki.issuing_signer, 1, revoked=[pki.orgs[2].serial_number]),
                              "cRLNumber 1 is not greater than 1"),
    "number going back": (lambda pki, other: make_crl(pki.issuing, pki.issuing_signer, 0), "cRLNumber 0 is not greater than 1"),
    "stale nextUpdate": (lambda pki, other: make_crl(pki.issuing, pki.issuing_signer, 2, this_update=now() - timedelta(days=2),
                                                     next_update=now() - timedelta(seconds=1)), "stale: nextUpdate"),
    "lint error": (lambda pki, other: crl_without_number(pki.issuing, pki.issuing_signer), "lint error: smki.crl.crl_number"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_list_leaves_the_published_one_in_place(tmp_path, pki, other_pki, repo, served, case):
    published, get = served
    make, message = REFUSALS[case]
    good = make_crl(pki.issuing, pki.issuing_signer, 1)
    lodge_crl(repo, good)
    publish_repository(repo, published)
    before = published_names(published)

    with pytest.raises(RefusedError, match=message):
        lodge_crl(repo, make(pki, other_pki), actor="lib-op")
    publish_repository(repo, published)

    assert (published / "crl" / f"{Pki.ski(pki.issuing)}.crl").read_bytes() == good
    assert published_names(published) == before  # nothing new: the other issuer's list is not published either
    assert get(f"/crl/{Pki.ski(pki.issuing)}.crl") == (200, good)
    assert status_of(repo, pki.orgs[2]) == "I"  # a refused list revokes nothing
    assert repo.execute("SELECT COUNT(*) FROM lodged_crls").fetchone()[0] == 1
    last = rows_from_database(repo)[0][-1]
    assert (last["operation"], last["outcome"], last["actor"]) == ("crl.lodge", "refused", "lib-op")
    assert message in json.loads(last["details"])["reason"]


def test_the_same_list_twice_is_a_conflict(pki, repo):
    crl = make_crl(pki.issuing, pki.issuing_signer, 1)
    lodge_crl(repo, crl)
    with pytest.raises(ConflictError, match="already lodged"):
        lodge_crl(repo, crl)


def test_an_end_entity_key_is_no_crl_issuer(pki, repo, new_hsm_key):
    """A list whose AKI names a lodged end-entity certificate is refused: only CA certificates issue lists."""
    _, signer = new_hsm_key()
    org = sign_certificate(organisation_certificate(OrganisationCertificateParams(
        RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F300100AA"), KeyUsage.DIGITAL_SIGNATURE, POLICY,
        Validity(pki.issuing.not_valid_before_utc, pki.issuing.not_valid_before_utc.replace(year=2036))),
        signer.public_key, pki.issuing), pki.issuing_signer)
    lodge_certificate(repo, org)
    with pytest.raises(RefusedError, match="no lodged CA certificate"):
        lodge_crl(repo, make_crl(org, signer, 1))


# -- atomic publication -----------------------------------------------------------------------------------------


def test_readers_only_ever_see_complete_files(tmp_path, pki, repo):
    """While lists are lodged and republished, a reader sees the old or the new bytes of each file, never a part."""
    directory = tmp_path / "pub"
    issuing_ski = Pki.ski(pki.issuing)
    revoked = range(1, 5001)  # ~200 KB lists: a torn write would be visible
    versions = {make_crl(pki.issuing, pki.issuing_signer, 1, revoked=revoked)}
    lodge_crl(repo, next(iter(versions)))
    publish_repository(repo, directory)
    stop, seen, torn = threading.Event(), set(), []

    def read():
        while not stop.is_set():
            data = (directory / "crl" / f"{issuing_ski}.crl").read_bytes()
            if data in versions:
                seen.add(data)
            else:
                torn.append(f"{len(data)}-byte list")
            try:
                json.loads((directory / "index.json").read_bytes())
            except ValueError:
                torn.append("index")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for number in range(2, 8):
            crl = make_crl(pki.issuing, pki.issuing_signer, number, revoked=revoked)
            versions.add(crl)
            lodge_crl(repo, crl)
            publish_repository(repo, directory)
    finally:
        stop.set()
        reader.join()
    assert torn == [] and len(seen) >= 1
    assert not list(directory.rglob(f"*{TEMP_SUFFIX}"))


def test_a_failed_publication_keeps_the_old_file_and_leaves_no_temporary(tmp_path, pki, repo, monkeypatch):
    directory = tmp_path / "pub"
    first = make_crl(pki.issuing, pki.issuing_signer, 1)
    lodge_crl(repo, first)
    publish_repository(repo, directory)
    index_before = (directory / "index.json").read_bytes()
    lodge_crl(repo, make_crl(pki.issuing, pki.issuing_signer, 2))

    def crash(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publishing.os, "replace", crash)
    with pytest.raises(OSError):
        publish_repository(repo, directory)
    monkeypatch.undo()
    assert (directory / "crl" / f"{Pki.ski(pki.issuing)}.crl").read_bytes() == first
    assert (directory / "index.json").read_bytes() == index_before
    assert not list(directory.rglob(f"*{TEMP_SUFFIX}"))


def test_leftovers_of_a_crashed_run_are_removed(tmp_path, repo):
    directory = tmp_path / "pub"
    (directory / "crl").mkdir(parents=True)
    leftover = directory / "crl" / f".ABC.crl.x1y2{TEMP_SUFFIX}"
    leftover.write_bytes(b"half a list")
    publish_repository(repo, directory)
    assert not leftover.exists()


# -- bulk files -------------------------------------------------------------------------------------------------


def read_bulk(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def test_bulk_full_and_delta_files(tmp_path, pki, repo):
    # The root, the Issuing CA and orgs[0] were lodged long ago; orgs[1] and orgs[2] today.
    old = [f"{c.serial_number:032X}" for c in (pki.root, pki.issuing, pki.orgs[0])]
    repo.executemany("UPDATE certificates SET issued_at = '2026-01-02T00:00:00+00:00' WHERE serial_hex = ?", [(s,) for s in old])
    lodge_crl(repo, make_crl(pki.issuing, pki.issuing_signer, 1, revoked=[pki.orgs[0].serial_number]))  # orgs[0]: status R today
    today = now()
    files = write_bulk_files(repo, tmp_path / "bulk", since=today - timedelta(hours=1), now=today)
    assert [(f.bulk_kind, f.certificates, f.path.name) for f in files] == [
        ("full", 5, f"smki-full-{today:%Y-%m-%d}.jsonl.gz"), ("delta", 3, f"smki-delta-{today:%Y-%m-%d}.jsonl.gz")]

    full = {line["serial"]: line for line in read_bulk(files[0].path)}
    assert set(full) == {f"{c.serial_number:032X}" for c in (pki.root, pki.issuing, *pki.orgs)}
    org = full[f"{pki.orgs[1].serial_number:032X}"]
    assert base64.b64decode(org["der"]) == pki.orgs[1].public_bytes(Encoding.DER)
    assert {k: org[k] for k in ("issuer_key_id", "type", "eui64", "role", "usage", "status")} == {
        "issuer_key_id": Pki.ski(pki.issuing), "type": "organisation", "eui64": "90B3D51F30010001", "role": "02", "usage": "KA", "status": "I"}
    issued = pki.orgs[1]  # the test PKI's: valid from the day it was made, for ten years less a second
    assert org["not_before"] == issued.not_valid_before_utc.isoformat() and org["not_after"] == issued.not_valid_after_utc.isoformat()
    assert full[f"{pki.root.serial_number:032X}"]["type"] == "root"

    delta = {line["serial"]: (line["changes"], line["status"]) for line in read_bulk(files[1].path)}
    assert delta == {f"{pki.orgs[0].serial_number:032X}": (["status"], "R"),
                     f"{pki.orgs[1].serial_number:032X}": (["lodged"], "I"),
                     f"{pki.orgs[2].serial_number:032X}": (["lodged"], "I")}
    assert files[0].sha256 == hashlib.sha256(files[0].path.read_bytes()).hexdigest()

    before = files[0].path.read_bytes()
    with pytest.raises(ConflictError, match="already exists"):
        write_bulk_files(repo, tmp_path / "bulk", now=today)
    assert files[0].path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "bulk").iterdir()) == sorted(f.path.name for f in files)  # no temporary left


# -- the command line -------------------------------------------------------------------------------------------


def smki(*args, env=None):
    return run_cli(*args, check=False, env=env)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_cli_lodge_crl_publish_serve_and_bulk(tmp_path, pki, other_pki):
    db, pub = str(tmp_path / "repo.db"), tmp_path / "pub"
    certificates = [write(tmp_path / f"c{i}.pem", c.public_bytes(Encoding.PEM)) for i, c in enumerate((pki.root, pki.issuing, *pki.orgs))]
    lodged = smki("librarian", "lodge", "--db", db, "--trust-root", *certificates, "--publish", str(pub), "--json")
    assert lodged.returncode == 0, lodged.stderr
    assert json.loads(lodged.stdout)["published"]["certificates"] == 5 and (pub / "index.json").exists()

    issuing_ski = Pki.ski(pki.issuing)
    crl = make_crl(pki.issuing, pki.issuing_signer, 3, revoked=[pki.orgs[0].serial_number])
    pem = b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(crl) + b"-----END X509 CRL-----\n"
    arl_file = write(tmp_path / "arl.der", make_crl(pki.root, pki.root_signer, 1))
    result = smki("librarian", "lodge-crl", "--db", db, arl_file, write(tmp_path / "crl.pem", pem), "--publish", str(pub), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [(r["kind"], r["crl_number"]) for r in answer["lodged"]] == [("arl", 1), ("crl", 3)]
    assert answer["lodged"][1]["newly_revoked"] == [f"{pki.orgs[0].serial_number:032X}"]
    assert (pub / "crl" / f"{issuing_ski}.crl").read_bytes() == crl  # the PEM's DER, byte for byte

    refusals = [
        (write(tmp_path / "bad-sig.crl", with_bad_signature(make_crl(pki.issuing, pki.issuing_signer, 4))), EXIT_REFUSED, "bad signature"),
        (write(tmp_path / "unknown.crl", make_crl(other_pki.issuing, other_pki.issuing_signer, 4)), EXIT_REFUSED, "issuer unknown"),
        (write(tmp_path / "old.crl", make_crl(pki.issuing, pki.issuing_signer, 2)), EXIT_REFUSED, "not greater than 3"),
        (write(tmp_path / "junk.crl", b"not a CRL"), EXIT_BAD_INPUT, "not a DER or PEM CRL"),
        (str(tmp_path / "missing.crl"), EXIT_BAD_INPUT, "No such file"),
    ]
    again = smki("librarian", "lodge-crl", "--db", db, str(tmp_path / "crl.pem"), "--publish", str(pub))
    assert again.returncode == 0 and again.stdout.startswith(f"already lodged {tmp_path / 'crl.pem'}  CRL number 3"), again.stderr
    for path, code, fragment in refusals:
        refused = smki("librarian", "lodge-crl", "--db", db, path, "--publish", str(pub))
        assert refused.returncode == code, (path, refused.stderr)
        assert refused.stderr.startswith(f"smki: error: {path}: ") and fragment in refused.stderr and refused.stderr.count("\n") == 1
        assert (pub / "crl" / f"{issuing_ski}.crl").read_bytes() == crl

    published = smki("librarian", "publish", "--db", db, "--dir", str(pub), "--json")
    assert published.returncode == 0, published.stderr
    assert {c["crl_number"] for c in json.loads(published.stdout)["crls"]} == {1, 3}
    text = openssl("crl", "-inform", "DER", "-in", str(pub / "crl" / f"{issuing_ski}.crl"), "-noout", "-text")
    assert text.returncode == 0 and b"Key Compromise" in text.stdout

    server = subprocess.Popen([sys.executable, "-m", "smki.cli.main", "librarian", "serve", "--db", db, "--port", "0",
                               "--api-key-source", "env:REPO_KEY", "--published", str(pub)],
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "REPO_KEY": API_KEY})
    try:
        address = server.stderr.readline().split("http://", 1)[1].split("/", 1)[0]
        host, port = address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", f"/crl/{issuing_ski}.crl?apikey={API_KEY}")
        response = connection.getresponse()
        assert (response.status, response.getheader("Content-Type"), response.read()) == (200, "application/pkix-crl", crl)
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=10)

    since = (now() - timedelta(hours=1)).isoformat()
    bulk = smki("librarian", "bulk", "--db", db, "--out", str(tmp_path / "bulk"), "--since", since, "--json")
    assert bulk.returncode == 0, bulk.stderr
    assert [(f["kind"], f["certificates"]) for f in json.loads(bulk.stdout)] == [("full", 5), ("delta", 5)]
    again = smki("librarian", "bulk", "--db", db, "--out", str(tmp_path / "bulk"))
    assert again.returncode == EXIT_CONFLICT and "already exists" in again.stderr
    bad = smki("librarian", "bulk", "--db", db, "--out", str(tmp_path / "bulk2"), "--since", "yesterday")
    assert bad.returncode == EXIT_BAD_INPUT and "--since" in bad.stderr
