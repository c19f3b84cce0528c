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
    write("csr-organisation-good.der", csr_factory.organisation_csr(), [])
    key = ec.generate_private_key(ec.SECP256R1())
    write("csr-device-two-key-usages.der", csr_factory.build_csr(key, b"\x30\x00", [csr_factory.key_usage("key_agreement", "digital_signature"),
                                                                                   csr_factory.hardware_module_name_san()]), ["smki.csr.wrong_key_usage"])


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
