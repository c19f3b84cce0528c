"""Librarian hardening (issue 12): repository status whatever the lodging order, the web service
under malformed and hostile requests, publishing repeated after a crash, CRL names in any case.

CA keys are SoftHSM keys; the web service runs on loopback and is spoken to with raw sockets
where a well-behaved client library would not send what an attacker sends.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, strategies as st

from conftest import smki as run_cli
from smki.authorities.bulk import full_lines
from smki.authorities.crl_lodging import lodge_crl
from smki.authorities.lodging import lodge_certificate
from smki.authorities.repository_service import RepositoryService, make_server
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles import OrganisationCertificateParams, Validity, organisation_certificate, sign_certificate
from smki.profiles.serials import serial_hex
from smki.store import find_certificate, list_certificates, open_database, search_certificates
from smki.store.lodged_crls import _serial_hex as store_serial_hex
from test_librarian_publishing import POLICY, START, Pki, make_crl

pytest_plugins = ["postgres_server"]  # `database_target`: the status tests run on SQLite and PostgreSQL

API_KEY = "hardening-test-key"


@pytest.fixture(scope="module")
def pki(new_hsm_key):
    return Pki(new_hsm_key()[1], new_hsm_key()[1])


def organisation(pki, eui64: str, *, days: int = 3650):
    """An Organisation Certificate of the PKI's Issuing CA, valid `days` from 2026-01-01 (30: expired by now)."""
    return sign_certificate(organisation_certificate(OrganisationCertificateParams(
        RemotePartyRole.SUPPLIER, EUI64.parse(eui64), KeyUsage.DIGITAL_SIGNATURE, POLICY, Validity(START, START + timedelta(days=days))),
        ec.generate_private_key(ec.SECP256R1()).public_key(), pki.issuing), pki.issuing_signer)


def serial_of(certificate) -> str:
    return serial_hex(certificate.serial_number)


def status_of(connection, certificate) -> str:
    [record] = find_certificate(connection, serial_of(certificate))
    return record.status


@pytest.fixture(scope="module")
def leaves(pki):
    """revoked-before-lodging, dropped-from-the-later-list, live, expired, expired-and-revoked."""
    return {"revoked": organisation(pki, "90B3D51F300200A1"), "dropped": organisation(pki, "90B3D51F300200A2"),
            "live": organisation(pki, "90B3D51F300200A3"), "expired": organisation(pki, "90B3D51F300200A4", days=30),
            "expired-revoked": organisation(pki, "90B3D51F300200A5", days=30)}


# -- item 1: repository status follows the lodged lists and validity, whatever the order -------------------------


def lodge_lists_then_certificates(connection, pki, leaves):
    """Every list first, every certificate after: the order that used to leave revoked certificates 'in use'."""
    lodge_certificate(connection, pki.root, trust_root=True)
    lodge_crl(connection, make_crl(pki.root, pki.root_signer, 1, revoked=[pki.issuing.serial_number]))  # ARL names the Issuing CA
    # The Issuing CA must be lodged before its own lists can be checked; its ARL entry was lodged before it.
    lodge_certificate(connection, pki.issuing)
    first = [leaves[name].serial_number for name in ("revoked", "dropped", "expired-revoked")]
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 1, revoked=first))
    # A later list from the same issuer that no longer names "dropped" (an entry may leave a list): still revoked.
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 2, revoked=[leaves["revoked"].serial_number]))
    for certificate in leaves.values():
        lodge_certificate(connection, certificate)


EXPECTED = {"revoked": "R", "dropped": "R", "live": "I", "expired": "E", "expired-revoked": "R"}


def test_certificates_lodged_after_their_lists_are_revoked(database_target, pki, leaves):
    connection = open_database(database_target, create=True)
    lodge_lists_then_certificates(connection, pki, leaves)
    assert {name: status_of(connection, c) for name, c in leaves.items()} == EXPECTED
    assert status_of(connection, pki.issuing) == "R"  # the ARL lodged before the Issuing CA certificate
    assert status_of(connection, pki.root) == "I"
    revoked = {r.serial_hex for r in list_certificates(connection, status="R")}
    assert revoked == {serial_of(leaves[n]) for n in ("revoked", "dropped", "expired-revoked")} | {serial_of(pki.issuing)}
    assert {r.serial_hex for r in list_certificates(connection, status="E")} == {serial_of(leaves["expired"])}
    found = search_certificates(connection, entity_id="90B3D51F300200A1", certificate_type="organisation", status="R")
    assert [r.serial_hex for r in found] == [serial_of(leaves["revoked"])]
    assert search_certificates(connection, entity_id="90B3D51F300200A1", certificate_type="organisation", status="I") == []
    bulk = {line["serial"]: line["status"] for line in map(json.loads, full_lines(connection))}
    assert {name: bulk[serial_of(c)] for name, c in leaves.items()} == EXPECTED


def test_status_is_the_same_in_either_order(database_target, pki, leaves):
    """Certificates first, lists after: the same statuses as lists first."""
    connection = open_database(database_target, create=True)
    lodge_certificate(connection, pki.root, trust_root=True)
    lodge_certificate(connection, pki.issuing)
    for certificate in leaves.values():
        lodge_certificate(connection, certificate)
    lodge_crl(connection, make_crl(pki.root, pki.root_signer, 1, revoked=[pki.issuing.serial_number]))
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 1,
                                   revoked=[leaves[n].serial_number for n in ("revoked", "dropped", "expired-revoked")]))
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 2, revoked=[leaves["revoked"].serial_number]))
    assert {name: status_of(connection, c) for name, c in leaves.items()} == EXPECTED
    assert status_of(connection, pki.issuing) == "R"


def test_lists_lodged_before_the_upgrade_still_revoke(tmp_path, pki, leaves):
    """A database whose lists were lodged before serials were indexed (schema 6): the migration indexes them."""
    path = tmp_path / "repo.db"
    connection = open_database(path, create=True)
    lodge_certificate(connection, pki.root, trust_root=True)
    lodge_certificate(connection, pki.issuing)
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 1, revoked=[leaves["revoked"].serial_number]))
    connection.execute("DROP TABLE listed_serials")
    connection.execute("DELETE FROM schema_migrations WHERE version = 7")
    connection.close()
    connection = open_database(path)
    lodge_certificate(connection, leaves["revoked"])
    lodge_certificate(connection, leaves["live"])
    assert (status_of(connection, leaves["revoked"]), status_of(connection, leaves["live"])) == ("R", "I")


@given(st.integers(min_value=1, max_value=(1 << 160) - 1))
def test_the_store_writes_serials_as_the_profiles_do(number):
    assert store_serial_hex(number) == serial_hex(number)


def post(address, path, body: bytes) -> tuple[int, ET.Element]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    connection.request("POST", f"{path}?apikey={API_KEY}", body=body, headers={"Content-Type": "application/xml"})
    response = connection.getresponse()
    answer = response.status, ET.fromstring(response.read())
    connection.close()
    return answer


@pytest.fixture
def lodged_repository(tmp_path, pki, leaves):
    path = tmp_path / "repo.db"
    lodge_lists_then_certificates(open_database(path, create=True), pki, leaves)
    return path


def test_the_web_service_and_find_say_revoked(lodged_repository, leaves, run_smki):
    """As a DCC client asks: a search with status R finds the certificate, and retrieve says R."""
    server = make_server(RepositoryService(lambda: open_database(lodged_repository), {API_KEY}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        search = b"<CertificateSearchRequest><CertificateSubjectName>90-B3-D5-1F-30-02-00-A1</CertificateSubjectName>" \
                 b"<CertificateStatus>R</CertificateStatus></CertificateSearchRequest>"
        status, answer = post(server.server_address, "/services/certificatesearch", search)
        assert status == 200
        assert [(r.findtext("CertificateSerial"), r.findtext("CertificateStatus")) for r in answer.findall("Result")] == [
            (serial_of(leaves["revoked"]), "R")]
        in_use = search.replace(b"<CertificateStatus>R<", b"<CertificateStatus>I<")
        assert post(server.server_address, "/services/certificatesearch", in_use)[0] == 402
        for name, expected in EXPECTED.items():
            retrieve = f"<CertificateDataRequest><CertificateSerial>{serial_of(leaves[name])}</CertificateSerial></CertificateDataRequest>"
            status, answer = post(server.server_address, "/services/retrievecertificate", retrieve.encode())
            assert (status, answer.find("CertificateResponse").findtext("CertificateStatus")) == (200, expected), name
    finally:
        server.shutdown()
        server.server_close()
    found = run_smki("librarian", "find", "--db", str(lodged_repository), "--status", "R", "--json")
    assert found.returncode == 0, found.stderr
    assert serial_of(leaves["revoked"]) in {r["serial_hex"] for r in json.loads(found.stdout)}
    expired = run_smki("librarian", "find", "--db", str(lodged_repository), "--status", "E", "--json")
    assert [r["serial_hex"] for r in json.loads(expired.stdout)] == [serial_of(leaves["expired"])]
