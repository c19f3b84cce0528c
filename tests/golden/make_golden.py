"""Writes the golden artefacts of tests/golden/: each file with the exact findings expected
for it in `<file>.expected` (one rule id a line; empty: clean). Run once, commit the output:

    .venv/bin/python tests/golden/make_golden.py

The broken variants are made as in tests/test_lint.py, signed by a throw-away software key.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

import csr_factory  # noqa: E402
import test_lint as t  # noqa: E402
from smki.profiles import sign_certificate  # noqa: E402
from smki.profiles.crl import RevokedEntry, build_crl  # noqa: E402


def write(name: str, data: bytes, expected: list[str]) -> None:
    (HERE / name).write_bytes(data)
    (HERE / f"{name}.expected").write_text("".join(f"{rule}\n" for rule in sorted(expected)))


def main() -> None:
    for old in HERE.glob("*.der"):
        old.unlink()
    for old in HERE.glob("*.expected"):
        old.unlink()
    write("device-good.der", t.der(sign_certificate(t.device_builder(), t.CA_KEY)), [])
    write("organisation-good.der", t.der(sign_certificate(t.organisation(), t.CA_KEY)), [])
    for (name, make, expected) in [(p.values[0], p.values[1], p.values[2]) for p in _variants()]:
        write("device-" + name.replace(" ", "-").lower() + ".der", make(), expected)
    write("device-null-signature-parameters.der", t.resign(t.der(sign_certificate(t.device_builder(), t.CA_KEY)), _null), ["smki.cert.signature_parameters_absent"])
    now = t.START + timedelta(days=1)
    good_crl = build_crl(t.CA, t.CA_KEY, crl_number=3, this_update_utc=now, next_update_utc=now + timedelta(days=1),
                         entries=[RevokedEntry(12345, now, "keyCompromise")])
    write("crl-good.der", good_crl.public_bytes(Encoding.DER), [])
    no_number = (x509.CertificateRevocationListBuilder().issuer_name(t.CA.subject).last_update(now).next_update(now + timedelta(days=1))
                 .add_extension(x509.AuthorityKeyIdentifier(t.key_identifier(t.CA_KEY.public_key), None, None), False)
                 .sign(t.CA_KEY.private_key, hashes.SHA256()))
    write("crl-without-crlnumber.der", no_number.public_bytes(Encoding.DER), ["smki.crl.crl_number"])
    write_parse_cases()
    write("csr-organisation-good.der", csr_factory.organisation_csr(), [])
    key = ec.generate_private_key(ec.SECP256R1())
    write("csr-device-two-key-usages.der", csr_factory.build_csr(key, b"\x30\x00", [csr_factory.key_usage("key_agreement", "digital_signature"),
                                                                                   csr_factory.hardware_module_name_san()]), ["smki.csr.wrong_key_usage"])


def write_parse_cases() -> None:
    """Repeated extensions (a certificate's, a CRL's, a CRL entry's) and a CRL whose nextUpdate precedes its thisUpdate."""
    from asn1crypto import crl as asn1_crl, x509 as asn1_x509

    def repeat(extensions, extension_class, oid):
        items = [extension_class.load(e.dump()) for e in extensions]
        return [*items, next(extension_class.load(e.dump()) for e in items if e["extn_id"].dotted == oid)]

    def two_key_usages(tbs):
        tbs["extensions"] = asn1_x509.Extensions(repeat(tbs["extensions"], asn1_x509.Extension, "2.5.29.15"))
        return tbs
    write("device-two-keyusage-extensions.der", t.resign(t.der(sign_certificate(t.device_builder(), t.CA_KEY)), two_key_usages),
          ["smki.cert.duplicate_extension", "smki.cert.extension_order"])

    now = t.START + timedelta(days=1)
    crl = build_crl(t.CA, t.CA_KEY, crl_number=3, this_update_utc=now, next_update_utc=now + timedelta(days=1),
                    entries=[RevokedEntry(12345, now, "keyCompromise"), RevokedEntry(12346, now, "superseded")]).public_bytes(Encoding.DER)

    def resign_crl(mutate) -> bytes:
        original = asn1_crl.CertificateList.load(crl)
        tbs = asn1_crl.TbsCertList.load(original["tbs_cert_list"].dump())
        mutate(tbs)
        tbs_der = tbs.dump(force=True)
        return asn1_crl.CertificateList({"tbs_cert_list": asn1_crl.TbsCertList.load(tbs_der), "signature_algorithm": original["signature_algorithm"],
                                         "signature": t.CA_KEY.sign(tbs_der)}).dump()

    def two_numbers(tbs):
        tbs["crl_extensions"] = asn1_crl.TBSCertListExtensions(repeat(tbs["crl_extensions"], asn1_crl.TBSCertListExtension, "2.5.29.20"))

    def entry_with_two_reasons(tbs):
        entries = [asn1_crl.RevokedCertificate.load(e.dump()) for e in tbs["revoked_certificates"]]
        entries[1]["crl_entry_extensions"] = asn1_crl.CRLEntryExtensions(
            repeat(entries[1]["crl_entry_extensions"], asn1_crl.CRLEntryExtension, "2.5.29.21"))
        tbs["revoked_certificates"] = asn1_crl.RevokedCertificates([asn1_crl.RevokedCertificate.load(e.dump(force=True)) for e in entries])

    def backwards(tbs):
        tbs["next_update"] = asn1_x509.Time(name="utc_time", value=now - timedelta(hours=1))

    write("crl-two-crlnumbers.der", resign_crl(two_numbers), ["smki.crl.duplicate_extension"])
    write("crl-entry-with-two-reasoncodes.der", resign_crl(entry_with_two_reasons), ["smki.crl.duplicate_extension"])
    write("crl-next-update-before-this-update.der", resign_crl(backwards), ["smki.crl.next_update_after_this_update"])


def _variants():
    import pytest  # the parametrize list of tests/test_lint.py is the single source of the variants
    marks = [m for m in t.test_broken_device_variants.pytestmark if m.name == "parametrize"]
    return [pytest.param(*values) for values in marks[0].args[1]]


def _null(tbs):
    from asn1crypto import core, x509 as asn1_x509
    tbs["signature"] = asn1_x509.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa", "parameters": core.Null()})
    return tbs



if __name__ == "__main__":
    main()
