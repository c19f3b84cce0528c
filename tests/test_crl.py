"""CRL/ARL profile: v2, byte-identical issuer, 8-octet AKI, cRLNumber, reasonCode; checked with openssl."""

from datetime import datetime, timedelta, timezone

import pytest
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import openssl
from smki.errors import BadInputError
from smki.identifiers import EUI64
from smki.profiles.crl import RevokedEntry, build_crl

# The test PKI's CA certificates start at today's midnight (UTC); the lists here are dated from then.
START = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def pki(smki_pki):
    """smki.testing's Organisation hierarchy, its CA keys (on the kit's token) signing here, and three Organisation Certificates."""
    root_key, issuing_key = (smki_pki.token.signer(smki_pki.key(name)) for name in ("root-oca", "issuing-oca"))
    leaves = [smki_pki.organisation_certificate(EUI64(bytes(7) + bytes((i,))), usage="DS").certificate for i in range(3)]
    return smki_pki.root_oca_certificate, root_key, smki_pki.issuing_oca_certificate, issuing_key, leaves


def write(path, *objects):
    path.write_bytes(b"".join(o.public_bytes(Encoding.PEM) for o in objects))
    return str(path)


def test_organisation_crl_contents_and_openssl(pki, tmp_path):
    root, _, issuing, issuing_key, leaves = pki
    revoked = leaves[0]
    crl = build_crl(issuing, issuing_key, crl_number=42, this_update_utc=START + timedelta(days=2),
                    next_update_utc=START + timedelta(days=3),
                    entries=[RevokedEntry(revoked.serial_number, START + timedelta(days=1), "keyCompromise"),
                             RevokedEntry(leaves[1].serial_number, START + timedelta(days=1, hours=1))])
    parsed = asn1_crl.CertificateList.load(crl.public_bytes(Encoding.DER))
    tbs = parsed["tbs_cert_list"]
    assert tbs["version"].native == "v2"
    assert tbs["issuer"].dump() == issuing.subject.public_bytes()
    assert parsed["signature_algorithm"].dump() == bytes.fromhex("300a06082a8648ce3d040302")
    assert [e["extn_id"].native for e in tbs["crl_extensions"]] == ["authority_key_identifier", "crl_number"]
    assert tbs["crl_extensions"][0]["extn_value"].parsed.native == {"key_identifier": issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest, "authority_cert_issuer": None, "authority_cert_serial_number": None}
    assert tbs["crl_extensions"][1]["extn_value"].parsed.native == 42
    entries = tbs["revoked_certificates"]
    assert entries[0]["crl_entry_extensions"][0]["extn_value"].parsed.native == "key_compromise"
    assert len(entries[1]["crl_entry_extensions"]) == 0
    text = openssl("crl", "-in", write(tmp_path / "crl.pem", crl), "-noout", "-text").stdout.decode()
    assert "X509v3 CRL Number: \n                42" in text and "Key Compromise" in text
    assert f"Serial Number: {revoked.serial_number:032X}" in text
    at = str(int((START + timedelta(days=2, hours=1)).timestamp()))
    chain = write(tmp_path / "chain.pem", root, issuing)
    bad = openssl("verify", "-attime", at, "-crl_check", "-CAfile", chain, "-CRLfile", str(tmp_path / "crl.pem"), write(tmp_path / "leaf0.pem", revoked))
    assert bad.returncode != 0 and b"certificate revoked" in bad.stdout + bad.stderr
    good = openssl("verify", "-attime", at, "-crl_check", "-CAfile", chain, "-CRLfile", str(tmp_path / "crl.pem"), write(tmp_path / "leaf2.pem", leaves[2]))
    assert good.returncode == 0, good.stdout + good.stderr


def test_arl_from_the_root_revokes_an_issuing_authority(pki, tmp_path):
    root, root_key, issuing, _, _ = pki
    arl = build_crl(root, root_key, crl_number=1, this_update_utc=START + timedelta(days=2), next_update_utc=START + timedelta(days=400),
                    entries=[RevokedEntry(issuing.serial_number, START + timedelta(days=1), "cACompromise")])
    assert arl.is_signature_valid(root.public_key())
    assert arl.get_revoked_certificate_by_serial_number(issuing.serial_number).extensions[0].value.reason == x509.ReasonFlags.ca_compromise
    at = str(int((START + timedelta(days=3)).timestamp()))
    result = openssl("verify", "-attime", at, "-crl_check", "-CAfile", write(tmp_path / "root.pem", root),
                     "-CRLfile", write(tmp_path / "arl.pem", arl), write(tmp_path / "issuing.pem", issuing))
    assert result.returncode != 0 and b"certificate revoked" in result.stdout + result.stderr


def test_an_empty_crl_is_well_formed(pki):
    _, _, issuing, issuing_key, _ = pki
    crl = build_crl(issuing, issuing_key, crl_number=0, this_update_utc=START, next_update_utc=START + timedelta(days=1), entries=[])
    assert len(crl) == 0 and crl.is_signature_valid(issuing.public_key())


def test_bad_crl_inputs(pki):
    _, root_key, issuing, issuing_key, _ = pki
    with pytest.raises(BadInputError, match="not an RFC 5280 CRL reason"):
        RevokedEntry(1, START, "fellOffTheBack")
    with pytest.raises(BadInputError, match="nextUpdate must be after thisUpdate"):
        build_crl(issuing, issuing_key, crl_number=1, this_update_utc=START, next_update_utc=START, entries=[])
    with pytest.raises(BadInputError, match="signing key does not match the issuer certificate"):
        build_crl(issuing, root_key, crl_number=1, this_update_utc=START, next_update_utc=START + timedelta(days=1), entries=[])
    with pytest.raises(BadInputError, match="cRLNumber"):
        build_crl(issuing, issuing_key, crl_number=-1, this_update_utc=START, next_update_utc=START + timedelta(days=1), entries=[])


def test_the_encoder_writes_canonical_der(pki):
    # cryptography re-encodes the parsed list for tbs_certlist_bytes: equal bytes mean ours is canonical DER,
    # across serial lengths, both time types and every reason (build_crl skips this check for speed).
    _, _, issuing, issuing_key, _ = pki
    reasons = [None, "unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation"]
    entries = [RevokedEntry(serial, moment, reason) for serial, moment, reason in zip(
        [1, 0x7F, 0x80, 0xFF, 1 << 126, (1 << 127) + 5, (1 << 159) - 1, 12345],
        [START, START + timedelta(seconds=1), datetime(2049, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
         datetime(2050, 1, 1, tzinfo=timezone.utc), START.astimezone(timezone(timedelta(hours=5))), START, START, START],
        reasons + reasons[:2])]
    crl = build_crl(issuing, issuing_key, crl_number=(1 << 159) - 1, this_update_utc=START, next_update_utc=START + timedelta(days=1),
                    entries=entries)
    ours = asn1_crl.CertificateList.load(crl.public_bytes(Encoding.DER))["tbs_cert_list"].dump()
    assert crl.tbs_certlist_bytes == ours and len(crl) == len(entries)
    shifted = next(entry for entry in crl if entry.serial_number == 1 << 126)
    assert shifted.revocation_date_utc == START
