"""smki.testing: the test PKI in one call, its conveniences, its SoftHSM store, and the pytest plugin's fixtures."""

import http.client
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

import smki.testing
from conftest import openssl
from smki.errors import BadInputError, HsmError
from smki.identifiers import EUI64
from smki.testing import Hierarchy, TestCertificate

pytest_plugins = ["pytester"]

ORG_OID = "1.2.826.0.1.8641679.1.2.1.4"
# Subprocesses import this checkout's smki, whichever one the virtualenv has installed.
CHECKOUT = str(Path(smki.testing.__file__).resolve().parents[2])
PLUGIN_INSTALLED = any(ep.value == "smki.testing.plugin" for ep in entry_points(group="pytest11"))


def fresh_environment() -> dict:
    """This process's environment for a child that must choose its own SoftHSM store."""
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [CHECKOUT, env.get("PYTHONPATH")]))}
DEVICE_OID = "1.2.826.0.1.1800000.1.2.1.4"


def policy_oids(certificate: x509.Certificate) -> list[str]:
    return [p.policy_identifier.dotted_string for p in certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value]


# -- the PKI is complete ------------------------------------------------------------------------------------


def test_both_hierarchies_have_the_test_pki_names_and_oids(smki_pki):
    names = {name: cert.subject.rfc4514_string() for name, cert in (
        ("root-oca", smki_pki.root_oca_certificate), ("issuing-oca", smki_pki.issuing_oca_certificate),
        ("root-dca", smki_pki.root_dca_certificate), ("issuing-dca", smki_pki.issuing_dca_certificate))}
    assert names == {"root-oca": "CN=ZA,OU=00", "issuing-oca": "CN=Z1,OU=07", "root-dca": "CN=ZD,OU=00", "issuing-dca": "CN=E357"}
    assert policy_oids(smki_pki.issuing_oca_certificate) == [ORG_OID]
    assert policy_oids(smki_pki.issuing_dca_certificate) == [DEVICE_OID]
    for issuing in smki_pki.intermediates:
        assert smki_pki.verify(issuing).valid


def test_both_hierarchies_chain_for_openssl(smki_pki, tmp_path):
    for short in ("oca", "dca"):
        chain = openssl("verify", "-CAfile", str(smki_pki.certificate_file(f"root-{short}")), str(smki_pki.certificate_file(f"issuing-{short}")))
        assert chain.returncode == 0, chain.stderr
    leaf = smki_pki.organisation_certificate("90-B3-D5-1F-30-01-00-10")
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    result = openssl("verify", "-CAfile", str(smki_pki.certificate_file("root-oca")),
                     "-untrusted", str(smki_pki.certificate_file("issuing-oca")), "-policy_check", "-explicit_policy",
                     "-policy", ORG_OID, str(tmp_path / "leaf.pem"))
    assert result.returncode == 0 and b": OK" in result.stdout, result.stderr


def test_each_authority_has_its_state_policy_and_actor(smki_pki):
    assert [type(a).__name__ for a in (smki_pki.root_oca, smki_pki.root_dca, smki_pki.issuing_oca, smki_pki.issuing_dca)] == \
        ["RootAuthority", "RootAuthority", "IssuingAuthority", "IssuingAuthority"]
    from smki.policy.adoption import adopted
    from smki.store import open_database

    for authority, kind in (("root-oca", "organisation"), ("issuing-oca", "organisation"), ("root-dca", "device"), ("issuing-dca", "device")):
        connection = open_database(smki_pki.state(authority) / "smki.db", read_only=True)
        assert adopted(connection, kind)["version"] == "1.0", authority
        operations = [row[0] for row in connection.execute("SELECT operation FROM audit_entries ORDER BY seq")]
        assert operations[0] == "key.generate" and "policy.adopt" in operations, (authority, operations)
        connection.close()
    lodged = {record.certificate_type for record in smki_pki.librarian.find(limit=1000)}
    assert {"root", "issuing-ca"} <= {str(getattr(t, "value", t)) for t in lodged}


# -- certificates -----------------------------------------------------------------------------------------------


def test_device_certificate_for_a_given_eui64_and_public_key(smki_pki):
    key = ec.generate_private_key(ec.SECP256R1())
    issued, private_key = smki_pki.device_certificate("00-DB-12-34-56-78-90-B1", key.public_key(), device_type="GSME", usage="KA")
    assert private_key is None  # the caller holds the key
    assert issued.certificate.public_key().public_numbers() == key.public_key().public_numbers()
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert EUI64.parse("00DB1234567890B1").octets in san[0].value  # the HardwareModuleName's hwSerialNum
    assert issued.certificate.subject == x509.Name([])
    assert smki_pki.hierarchy_of(issued) is Hierarchy.DEVICE
    assert smki_pki.verify(issued).valid and smki_pki.lint(issued) == []
    assert smki_pki.issuing_dca.show(issued.serial_hex)[0].entity_id == "00DB1234567890B1"


def test_organisation_certificate_with_a_fresh_key_the_tester_signs_with(smki_pki):
    made = smki_pki.organisation_certificate("90-B3-D5-1F-30-01-00-11", role="networkOperator", usage="DS")
    assert isinstance(made, TestCertificate) and made.private_key is not None
    signature = made.private_key.sign(b"a DUIS message", ec.ECDSA(hashes.SHA256()))
    made.certificate.public_key().verify(signature, b"a DUIS message", ec.ECDSA(hashes.SHA256()))
    assert made.certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "03"
    assert policy_oids(made.certificate) == [ORG_OID]
    assert smki_pki.verify(made).valid and smki_pki.lint(made) == []


def test_certificates_from_requests(smki_pki):
    request = smki_pki.csr("90-B3-D5-1F-30-01-00-12", usage="KA")
    issued = smki_pki.issue_organisation(request)
    assert issued.certificate.public_key().public_numbers() == request.private_key.public_key().public_numbers()
    first, _ = smki_pki.device_certificate("00-DB-12-34-56-78-90-B2")  # an ad hoc request replaces: the device needs one first
    replacement = smki_pki.issue_device(smki_pki.csr("00-DB-12-34-56-78-90-B2", hierarchy="device", usage="DS"))
    assert smki_pki.verify(replacement).valid and replacement.serial_hex != first.serial_hex


def test_a_bad_value_is_refused_as_the_cli_refuses_it(smki_pki):
    with pytest.raises(BadInputError, match="EUI-64"):
        smki_pki.device_certificate("12345")
    with pytest.raises(BadInputError, match="unknown device type"):
        smki_pki.device_certificate("00-DB-12-34-56-78-90-B3", device_type="TOASTER")
    with pytest.raises(BadInputError, match="not issued by this test PKI"):
        smki_pki.verify(x509.load_pem_x509_certificate(_foreign_certificate_pem()))


def _foreign_certificate_pem() -> bytes:
    from datetime import datetime, timedelta, timezone

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "elsewhere")])
    now = datetime.now(timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(7)
                   .not_valid_before(now).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(Encoding.PEM)


# -- revocation and the CRL ------------------------------------------------------------------------------------


def test_a_revocation_then_a_crl_that_lists_it(smki_pki):
    made = smki_pki.organisation_certificate("90-B3-D5-1F-30-01-00-14", usage="KA")
    kept = smki_pki.organisation_certificate("90-B3-D5-1F-30-01-00-15", usage="KA")
    revocation = smki_pki.revoke(made, "keyCompromise")
    assert revocation.serial_hex == made.serial_hex and revocation.method == "crl"
    issued = smki_pki.crl()
    assert issued.list_type == "crl" and issued.crl.is_signature_valid(smki_pki.issuing_oca_certificate.public_key())
    assert issued.crl.get_revoked_certificate_by_serial_number(made.certificate.serial_number) is not None
    assert issued.crl.get_revoked_certificate_by_serial_number(kept.certificate.serial_number) is None
    result = smki_pki.verify(made)
    assert not result.valid and "is revoked" in result.reason
    assert smki_pki.verify(kept).valid


def test_a_device_revocation_is_a_status(smki_pki):
    device, _ = smki_pki.device_certificate("00-DB-12-34-56-78-90-B4")
    assert smki_pki.revoke(device).method == "status"


# -- the Librarian: lodge, publish, serve -------------------------------------------------------------------------


def search(address, api_key, inner: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    connection.request("POST", f"/services/certificatesearch?apikey={api_key}",
                       body=f"<CertificateSearchRequest>{inner}</CertificateSearchRequest>".encode(),
                       headers={"Content-Type": "application/xml"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_lodge_publish_and_serve_on_a_free_port(smki_pki, smki_repository):
    made = smki_pki.organisation_certificate("90-B3-D5-1F-30-01-00-16", usage="DS")
    publication = smki_pki.lodge_and_publish(made, smki_pki.crl())
    assert (smki_pki.directory / "published").is_dir() and publication is not None
    assert smki_repository.address[1] > 0 and smki_repository.url.startswith("http://127.0.0.1:")
    status, body = search(smki_repository.address, smki_repository.api_key,
                          "<CertificateSubjectName>90-B3-D5-1F-30-01-00-16</CertificateSubjectName><CertificateUsage>DS</CertificateUsage>")
    assert status == 200, body
    assert made.serial_hex in body.decode().upper()
    status, _ = search(smki_repository.address, "wrong-key", "<CertificateSubjectName>90-B3-D5-1F-30-01-00-16</CertificateSubjectName>")
    assert status == 403


# -- the README example and the SoftHSM store ---------------------------------------------------------------------


def readme_example() -> str:
    """The README's first Python example (section "Using smki from Python"), as it stands."""
    readme = (Path(CHECKOUT) / "README.md").read_text()
    section = readme[readme.index("## Using smki from Python"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python\n") + 10)]


def test_the_kit_documents_the_readme_example():
    docstring = smki.testing.__doc__
    example = textwrap.dedent(docstring[docstring.index("    import smki.testing"):docstring.index("\nWith pytest")]).strip()
    assert example == readme_example().strip()


def test_the_readme_example_runs_as_it_stands():
    """As a user runs it: a script in a fresh process, with no SoftHSM set up beforehand."""
    example = readme_example()
    assert example.startswith("import smki.testing") and len(example.strip().splitlines()) <= 15
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, env=fresh_environment(), timeout=300)
    assert result.returncode == 0, result.stderr


def test_a_second_pki_in_the_same_process_shares_its_token(smki_pki, tmp_path):
    with smki.testing.TestPKI.create(tmp_path / "second", token=smki_pki.token) as second:
        assert second.issuing_oca_certificate.subject == smki_pki.issuing_oca_certificate.subject
        assert second.issuing_oca_certificate.public_key() != smki_pki.issuing_oca_certificate.public_key()
        assert second.verify(second.device_certificate("00-DB-12-34-56-78-90-D1")).valid
        with pytest.raises(BadInputError, match="not issued by this test PKI"):  # another PKI's CA: same names, other keys
            second.verify(smki_pki.issuing_oca_certificate)


def test_a_token_made_after_softhsm_loaded_is_refused(smki_pki):
    with pytest.raises(HsmError, match="would not see a token made now"):
        smki.testing.SoftHsmStore.for_process().new_token()


FRESH_PROCESS = """
import os, sys
from pathlib import Path
from smki.errors import HsmError
from smki.testing import SoftHsmStore
first = SoftHsmStore.create(Path(sys.argv[1]))
first.activate()
token = first.new_token()
token.new_key()                                   # the PKCS#11 library is now loaded under `first`
os.environ["SOFTHSM2_CONF"] = "/elsewhere/softhsm2.conf"   # changing the environment now changes nothing
assert SoftHsmStore.for_process().conf == first.conf
try:
    SoftHsmStore.create(Path(sys.argv[2])).activate()
except HsmError as error:
    print("refused:", error)
"""


def test_the_store_is_the_one_the_library_was_loaded_under(tmp_path):
    env = fresh_environment()
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "a"), str(tmp_path / "b")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: the PKCS#11 library") and "already loaded in this process" in result.stdout
    assert str(tmp_path / "a" / "softhsm2.conf") in result.stdout and str(tmp_path / "b" / "softhsm2.conf") in result.stdout


def test_a_process_without_a_store_gets_a_new_one(tmp_path):
    env = fresh_environment()
    code = "import os; from smki.testing import SoftHsmStore; s = SoftHsmStore.for_process(); print(s.conf, os.environ['SOFTHSM2_CONF'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    conf, named = result.stdout.split()
    assert result.returncode == 0 and conf == named and conf.endswith("softhsm2.conf")
    assert not os.path.exists(conf)  # removed when the process ended


def test_a_token_never_shows_its_pins(smki_token):
    assert smki_token.pin not in repr(smki_token) and smki_token.so_pin not in repr(smki_token)
    key, public_key = smki_token.new_key()
    assert key.token_label == smki_token.label and isinstance(public_key, ec.EllipticCurvePublicKey)


# -- the pytest plugin ----------------------------------------------------------------------------------------------


def test_the_plugin_fixtures_work_in_another_run(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")])))
    pytester.makepyfile(test_user="""
        def test_a_users_integration_test(smki_pki, smki_token):
            device, key = smki_pki.device_certificate("00-DB-12-34-56-78-90-C1")
            assert key is not None and smki_pki.verify(device).valid
            assert smki_pki.token.label == smki_token.label

        def test_the_same_pki_for_the_whole_run(smki_pki, smki_repository):
            assert smki_repository.url.startswith("http://127.0.0.1:")
            assert len(smki_pki.librarian.find(limit=10)) >= 4
    """)
    plugin = [] if PLUGIN_INSTALLED else ["-p", "smki.testing.plugin"]  # the entry point loads it when smki is installed with it
    result = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
