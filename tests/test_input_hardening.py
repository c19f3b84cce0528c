"""Hostile inputs (issue 12, items 8, 11, 16, 17 and the conformance nits): every file is read
bounded by its kind, every YAML through one bounded loader, every PEM/DER reader takes exactly
one object, no control or bidirectional character is certified or passed by lint.

Inputs that made the old code read forever or grow without bound run in a subprocess with a
memory ceiling and a timeout, so a regression fails the test instead of hanging the machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

import csr_factory as f
from smki.librarian.crl_lodging import crl_der_from_file
from smki.errors import EXIT_BAD_INPUT, EXIT_REFUSED, BadInputError
from smki import files  # its limits are read when a test runs, so each test fails on its own where they are missing
from smki.hsm.activation import CustodianShare
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.policy import load_policy
from smki.profiles import OrganisationCertificateParams, Validity
from smki.profiles import certificates
from smki.profiles.certificates import (IssuingCaCertificateParams, RootCertificateParams, issuing_ca_certificate,
                                        organisation_certificate, root_certificate, sign_certificate)
from smki.profiles.crl import RevokedEntry, build_crl
from smki.profiles.files import read_certificate, read_public_key
from smki.profiles.lint import Severity, lint_certificate
from smki.profiles.lint.crl_rules import lint_crl
from smki.profiles.names import ca_name, organisation_subject
from smki.hsm.signer import SoftwareSigner
from smki.requests import RequestRejected, parse_organisation_request
from smki.requests.outcomes import Outcome

ROOT = Path(__file__).resolve().parents[1]
POLICY_OID = "1.2.826.0.1.8641679.1.2.1.1"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def bounded_smki(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real CLI under a 2 GiB address-space ceiling: a runaway read or expansion fails, it cannot swamp the host."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    return subprocess.run([sys.executable, "-m", "smki.cli.main", *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, cwd=ROOT)


def bounded_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, preexec_fn=limit, cwd=ROOT)


def one_line_error(result: subprocess.CompletedProcess, exit_code: int, *fragments: str) -> None:
    assert result.returncode == exit_code, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- a software PKI (lint and reader tests need real certificates, not an HSM) ------------------------
@pytest.fixture(scope="module")
def software_pki():
    root_signer, issuing_signer = SoftwareSigner(), SoftwareSigner()
    root = sign_certificate(root_certificate(RootCertificateParams(ca_name([("OU", "00"), ("CN", "ZA")]), (POLICY_OID,),
                                                                   Validity(START, START.replace(year=2056))), root_signer.public_key), root_signer)
    issuing = sign_certificate(issuing_ca_certificate(IssuingCaCertificateParams(ca_name([("OU", "07"), ("CN", "Z1")]), (POLICY_OID,),
                                                                                 Validity(START, START.replace(year=2051))),
                                                      issuing_signer.public_key, root), root_signer)
    return root, issuing, issuing_signer


def organisation_der(issuing, signer, *, role=RemotePartyRole.SUPPLIER, common_name="GITTESTSUPPLIER", subject: x509.Name | None = None,
                     extensions=()) -> bytes:
    """An Organisation Certificate from the profile builder, signed by a software key; `subject` replaces the
    profile's (so a test can certify what the profile itself now refuses), `extensions` are appended."""
    params = OrganisationCertificateParams(role, EUI64.parse("90B3D51F30010000"), KeyUsage.DIGITAL_SIGNATURE, POLICY_OID,
                                           Validity(START, START.replace(year=2036)), common_name)
    with pytest.MonkeyPatch.context() as patch:
        if subject is not None:
            patch.setattr(certificates, "organisation_subject", lambda *_: subject)
        builder = organisation_certificate(params, ec.generate_private_key(ec.SECP256R1()).public_key(), issuing)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return sign_certificate(builder, signer).public_bytes(Encoding.DER)


def raw_organisation_subject(common_name: str, role: str = "02") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name, _ASN1Type.UTF8String),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role, _ASN1Type.UTF8String),
                      x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00" + bytes.fromhex("90B3D51F30010000"), _ASN1Type.BitString)])


def rules(findings, severity=None) -> list[str]:
    return [finding.rule_id for finding in findings if severity is None or finding.severity is severity]


# -- item 8: control and bidirectional characters ----------------------------------------------------------
# C0 and C1 controls, DEL, bidi embeddings/overrides/isolates/marks, zero-width and separator characters.
UNSAFE = ["\x00", "\t", "\x1b", "\x7f", "\x85", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
          "\u2069", "\u200e", "\u200f", "\u200b", "\u200d", "\ufeff", "\u2028"]


@pytest.mark.parametrize("character", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_a_csr_common_name_with_a_control_or_bidi_character_is_refused_at_intake(character):
    data = f.organisation_csr(common_name=f"GIT{character}SUPPLIER")
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(data, "x.csr")
    assert caught.value.outcome is Outcome.WRONG_SUBJECT and f"CN holds U+{ord(character):04X}" in str(caught.value)


def test_a_csr_common_name_that_is_not_utf8_is_one_refusal_not_a_crash():
    subject = f.name(("2.5.4.3", f.UTF8, b"caf\xe9"), ("2.5.4.11", f.UTF8, b"02"), ("2.5.4.45", f.BIT_STRING, b"\x00" + bytes(8)))
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(f.build_csr(key, subject, [f.key_usage("digital_signature")]))
    assert caught.value.outcome is Outcome.WRONG_SUBJECT and "CN" in str(caught.value)


def test_a_plain_unicode_common_name_is_still_accepted():
    request = parse_organisation_request(f.organisation_csr(common_name="Énergie Zürich Ltd"))
    assert request.common_name == "Énergie Zürich Ltd"


def test_the_profile_refuses_to_certify_a_control_character():
    with pytest.raises(BadInputError, match="U\\+202E"):
        organisation_subject(RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), "EVIL\u202etxt.exe")


@pytest.mark.parametrize("common_name", ["NUL\x00byte", "RLO\u202etxt.exe", "isolate\u2067x", "zwsp\u200bx"])
def test_lint_refuses_a_certificate_whose_name_holds_control_or_bidi_characters(software_pki, common_name, tmp_path, run_smki):
    _, issuing, signer = software_pki
    der = organisation_der(issuing, signer, subject=raw_organisation_subject(common_name))
    _, findings = lint_certificate(der)
    assert "smki.name.safe_characters" in rules(findings, Severity.ERROR)
    (tmp_path / "evil.der").write_bytes(der)
    result = run_smki("lint", str(tmp_path / "evil.der"), "--json")
    assert result.returncode == EXIT_REFUSED
    assert "smki.name.safe_characters" in [row["rule"] for row in json.loads(result.stdout)[0]["findings"]]


def test_lint_passes_the_same_certificate_with_a_clean_name(software_pki):
    _, issuing, signer = software_pki
    _, findings = lint_certificate(organisation_der(issuing, signer, subject=raw_organisation_subject("Énergie Zürich Ltd")))
    assert findings == []


# -- item 11: YAML bombs, binary files ---------------------------------------------------------------------
def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_policy_file_alias_bomb_is_refused_in_one_line(tmp_path):
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    one_line_error(bounded_smki("policy", "check", str(tmp_path / "bomb.yaml")), EXIT_BAD_INPUT, "bomb.yaml:", "aliases expand")


def test_a_ceremony_file_alias_bomb_is_refused_in_one_line(tmp_path):
    text = (ROOT / "smki" / "data" / "ceremonies" / "arl-oca.yaml").read_text().replace("witnesses: [Internal auditor]", "witnesses: *a8")
    (tmp_path / "bomb.yaml").write_text(alias_bomb() + text)
    one_line_error(bounded_smki("ceremony", "check", str(tmp_path / "bomb.yaml")), EXIT_BAD_INPUT, "bomb.yaml:", "aliases expand")


def test_a_recursive_alias_is_refused_in_one_line(tmp_path):
    (tmp_path / "loop.yaml").write_text("identification: &loop [*loop]\n")
    one_line_error(bounded_smki("policy", "check", str(tmp_path / "loop.yaml")), EXIT_BAD_INPUT, "loop.yaml:", "recursive")


def test_aliases_within_the_bound_still_load(tmp_path):
    policy = (ROOT / "smki" / "data" / "policies" / "organisation.yaml").read_text()
    policy = policy.replace("    recovery: [DS, KA]", "    recovery: &both [DS, KA]").replace("    supplier: [DS, KA]", "    supplier: *both")
    (tmp_path / "aliased.yaml").write_text(policy)
    roles = load_policy(tmp_path / "aliased.yaml").document["subscriber_certificates"]["roles"]
    assert roles["recovery"] == roles["supplier"] == ["DS", "KA"]


@pytest.mark.parametrize("content", [b"\x00\x01\x02binary\xff\xfe", b"kind: organisation\nname: caf\xe9\n", b"\x89PNG\r\n\x1a\n\x00"])
@pytest.mark.parametrize("command", [("policy", "check"), ("ceremony", "check")])
def test_a_binary_or_non_utf8_yaml_file_is_one_line(tmp_path, content, command):
    (tmp_path / "binary.yaml").write_bytes(content)
    one_line_error(bounded_smki(*command, str(tmp_path / "binary.yaml")), EXIT_BAD_INPUT, "binary.yaml:0: (file): not UTF-8 text")


@pytest.mark.parametrize("content, fragment", [(b"hsm:\n  token: T\n\xff\n", "config.yaml:0: (file): not UTF-8"),
                                               (b"state: a\nstate: b\n", "config.yaml:2: (yaml): key 'state' given twice")])
def test_a_configuration_file_goes_through_the_same_loader(tmp_path, content, fragment):
    (tmp_path / "config.yaml").write_bytes(content)
    one_line_error(bounded_smki("config", "show", "--config", str(tmp_path / "config.yaml")), EXIT_BAD_INPUT, fragment)


def test_an_oversized_yaml_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.truncate(50 * 1024 * 1024)  # sparse; read and parsed, its NULs would be "unacceptable characters" (a traceback)
    one_line_error(bounded_smki("policy", "check", str(path)), EXIT_BAD_INPUT, "huge.yaml:0: (file):", "limit")


# -- item 16: lenient readers ------------------------------------------------------------------------------
def pem(label: str, der: bytes) -> bytes:
    import base64
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN " + label.encode() + b"-----\n" + b"\n".join(lines) + b"\n-----END " + label.encode() + b"-----\n"


@pytest.mark.parametrize("tail", [b"junk", b"\n# a comment\n", b"\x00"])
def test_a_csr_with_trailing_junk_after_the_armour_is_refused(tail):
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(pem("CERTIFICATE REQUEST", f.organisation_csr()) + tail)
    assert caught.value.outcome is Outcome.NOT_DECODABLE and "after the PEM block" in str(caught.value)


def test_a_file_holding_two_csrs_is_refused_not_its_first_certified():
    data = pem("CERTIFICATE REQUEST", f.organisation_csr()) + pem("CERTIFICATE REQUEST", f.organisation_csr(role="03"))
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(data)
    assert caught.value.outcome is Outcome.NOT_DECODABLE and "2 PEM blocks" in str(caught.value)


def test_whitespace_around_one_csr_is_still_accepted():
    assert parse_organisation_request(b"\r\n  " + pem("NEW CERTIFICATE REQUEST", f.organisation_csr()).replace(b"\n", b"\r\n") + b"\n\t\n")


def test_a_csr_with_two_extension_requests_is_refused():
    key = ec.generate_private_key(ec.SECP256R1())
    extension = f.tlv(0x30, f.tlv(0x06, bytes.fromhex("551d0f")) + b"\x01\x01\xff" + f.tlv(0x04, f.key_usage("digital_signature")[2]))
    attribute = f.tlv(0x30, f.tlv(0x06, bytes.fromhex("2a864886f70d01090e")) + f.tlv(0x31, f.tlv(0x30, extension)))
    info = f.tlv(0x30, b"\x02\x01\x00" + f.org_subject() + f.spki(key) + f.tlv(0xA0, attribute + attribute))
    from cryptography.hazmat.primitives import hashes
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    der = f.tlv(0x30, info + f.tlv(0x30, f.tlv(0x06, bytes.fromhex("2a8648ce3d040302"))) + f.tlv(0x03, b"\x00" + signature))
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(der)
    assert caught.value.outcome is Outcome.NOT_PKCS10 and "extensionRequest" in str(caught.value)


def test_certificate_and_public_key_files_with_trailing_junk_are_refused(software_pki, tmp_path):
    _, issuing, _ = software_pki
    (tmp_path / "ca.pem").write_bytes(issuing.public_bytes(Encoding.PEM) + b"trailing junk\n")
    (tmp_path / "two.pem").write_bytes(issuing.public_bytes(Encoding.PEM) * 2)
    (tmp_path / "key.pem").write_bytes(issuing.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo) + b"junk")
    for reader, path, fragment in ((read_certificate, "ca.pem", "after the PEM block"), (read_certificate, "two.pem", "2 PEM blocks"),
                                   (read_public_key, "key.pem", "after the PEM block")):
        with pytest.raises(BadInputError, match=fragment):
            reader(tmp_path / path)
    assert read_certificate(_write(tmp_path / "ok.pem", b"\n" + issuing.public_bytes(Encoding.PEM) + b"\n\n")) == issuing


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_verify_refuses_a_leaf_file_holding_two_certificates(software_pki, tmp_path, run_smki):
    root, issuing, _ = software_pki
    _write(tmp_path / "root.pem", root.public_bytes(Encoding.PEM))
    _write(tmp_path / "leaves.pem", issuing.public_bytes(Encoding.PEM) + root.public_bytes(Encoding.PEM))
    result = run_smki("verify", str(tmp_path / "leaves.pem"), "--anchor", str(tmp_path / "root.pem"), "--at", "2030-01-01")
    one_line_error(result, EXIT_BAD_INPUT, "leaves.pem", "2 PEM blocks")


def crl_der(issuing, signer, this_update: datetime) -> bytes:
    crl = build_crl(issuing, signer, crl_number=1, this_update_utc=this_update, next_update_utc=this_update + timedelta(days=1),
                    entries=[RevokedEntry(0x1234, START, "superseded")])
    return crl.public_bytes(Encoding.DER)


def test_a_crl_file_with_trailing_junk_or_two_crls_is_refused(software_pki):
    _, issuing, signer = software_pki
    der = crl_der(issuing, signer, datetime.now(timezone.utc))
    for data, fragment in ((pem("X509 CRL", der) + b"junk", "after the PEM block"), (pem("X509 CRL", der) * 2, "2 PEM blocks")):
        with pytest.raises(BadInputError, match=fragment):
            crl_der_from_file(data)
    assert crl_der_from_file(pem("X509 CRL", der)) == der


def test_a_crl_whose_this_update_is_a_year_ahead_fails_lint(software_pki, tmp_path, run_smki):
    _, issuing, signer = software_pki
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _, future = lint_crl(crl_der(issuing, signer, now + timedelta(days=365)))
    assert rules(future, Severity.ERROR) == ["smki.crl.this_update_not_future"]
    _, skewed = lint_crl(crl_der(issuing, signer, now + timedelta(minutes=2)))  # a little clock skew is tolerated
    assert skewed == []
    _write(tmp_path / "future.crl", crl_der(issuing, signer, now + timedelta(days=365)))
    result = run_smki("lint", str(tmp_path / "future.crl"), "--json")
    assert result.returncode == EXIT_REFUSED
    assert [row["rule"] for row in json.loads(result.stdout)[0]["findings"]] == ["smki.crl.this_update_not_future"]


# -- item 17: every read bounded -----------------------------------------------------------------------------
def test_a_share_file_that_is_a_symlink_to_dev_zero_is_refused_at_once(tmp_path):
    (tmp_path / "alice.share.json").symlink_to("/dev/zero")
    result = bounded_python(f"from smki.hsm.activation import CustodianShare\nfrom smki.errors import BadInputError\n"
                            f"try:\n    CustodianShare.load({str(tmp_path / 'alice.share.json')!r})\n"
                            f"except BadInputError as exc:\n    print('refused:', exc)\n", timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("refused: share file ") and "not a regular file" in result.stdout, result


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "policy.yaml")
    one_line_error(bounded_smki("policy", "check", str(tmp_path / "policy.yaml"), timeout=30), EXIT_BAD_INPUT, "not a regular file")


def test_a_pin_from_a_descriptor_on_dev_zero_is_refused_not_read_forever():
    code = ("import os\nfrom smki.hsm.pins import PinSource\nfrom smki.errors import BadInputError\n"
            "descriptor = os.open('/dev/zero', os.O_RDONLY)\n"
            "try:\n    PinSource.parse(f'fd:{descriptor}').read('user PIN')\n"
            "except BadInputError as exc:\n    print('refused:', exc)\n")
    result = bounded_python(code, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("refused: user PIN") and "\x00" not in result.stdout, result


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as stream:
        stream.truncate(size)
    return path


HUGE = 200 * 1024 * 1024  # sparse: costs no disk, but reading it whole costs 200 MB


@pytest.mark.parametrize("reader", [read_certificate, read_public_key, load_policy, CustodianShare.load],
                         ids=["certificate", "public-key", "policy", "share"])
def test_every_reader_refuses_a_file_over_its_kinds_limit_without_reading_it(tmp_path, reader):
    path = sparse(tmp_path / "big", HUGE)
    tracemalloc.start()
    try:
        with pytest.raises(BadInputError, match="-byte limit"):
            reader(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_crl_file_over_its_limit_is_refused_in_one_line(software_pki, tmp_path, run_smki):
    root, issuing, _ = software_pki
    _write(tmp_path / "root.pem", root.public_bytes(Encoding.PEM))
    _write(tmp_path / "leaf.pem", issuing.public_bytes(Encoding.PEM))
    sparse(tmp_path / "huge.crl", HUGE)
    result = run_smki("verify", str(tmp_path / "leaf.pem"), "--anchor", str(tmp_path / "root.pem"), "--crl", str(tmp_path / "huge.crl"))
    one_line_error(result, EXIT_BAD_INPUT, "huge.crl", "-byte limit")


def test_a_200_mb_csr_is_refused_by_its_size_without_being_read(tmp_path, run_smki):
    path = sparse(tmp_path / "huge.csr", HUGE)
    result = run_smki("lint", str(path))
    assert result.returncode == EXIT_BAD_INPUT and result.stdout.startswith(f"{path}: cannot lint: ") and "-byte limit" in result.stdout
    tracemalloc.start()
    try:
        with pytest.raises(BadInputError, match="over the 16384-byte limit"):
            files.read_input(path, files.MAX_CSR_BYTES)  # what `smki ca issue-org/issue-device` read a CSR with
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_an_audit_export_far_over_its_limit_is_refused_in_one_line(tmp_path):
    path = sparse(tmp_path / "export.json", 4 << 30)  # 4 GiB: read whole, it would not fit under the 2 GiB ceiling
    result = bounded_python("from smki.audit.verify import load_export\nfrom smki.errors import BadInputError\n"
                            f"try:\n    load_export({str(path)!r})\nexcept BadInputError as exc:\n    print('refused:', exc)\n", timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("refused: ") and "-byte limit" in result.stdout, result.stderr[-2000:]


# -- conformance nits ----------------------------------------------------------------------------------------
def test_end_entity_basic_constraints_ca_false_is_a_warning(software_pki, tmp_path, run_smki):
    _, issuing, signer = software_pki
    der = organisation_der(issuing, signer, extensions=[(x509.BasicConstraints(ca=False, path_length=None), True)])
    assert der.count(bytes.fromhex("0603551d13" "0101ff" "0402" "3000")) == 1  # critical, cA FALSE: an empty SEQUENCE
    _, findings = lint_certificate(der, certificate_type="organisation")
    assert [(f.rule_id, f.severity) for f in findings] == [("smki.cert.basic_constraints_end_entity", Severity.WARNING)]
    _write(tmp_path / "boxed.der", der)
    result = run_smki("lint", str(tmp_path / "boxed.der"), "--json")
    assert result.returncode == 0 and [r["severity"] for r in json.loads(result.stdout)[0]["findings"]] == ["warning"]


def test_end_entity_basic_constraints_ca_true_stays_an_error(software_pki):
    _, issuing, signer = software_pki
    der = organisation_der(issuing, signer, extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    _, findings = lint_certificate(der, certificate_type="organisation")
    assert "smki.cert.basic_constraints" in rules(findings, Severity.ERROR)


@pytest.mark.parametrize("ou, name", [("87", "xmlSign"), ("89", "dspXmlSign")])
def test_the_xml_signing_roles_are_known(ou, name):
    assert RemotePartyRole.from_ou(ou).camel_name == name and RemotePartyRole.parse(name).ou == ou


def test_lint_warns_on_an_organisation_role_no_policy_names(software_pki, tmp_path, run_smki):
    _, issuing, signer = software_pki
    _write(tmp_path / "xml.der", organisation_der(issuing, signer, role=RemotePartyRole.XML_SIGN))
    _write(tmp_path / "supplier.der", organisation_der(issuing, signer, role=RemotePartyRole.SUPPLIER))
    result = run_smki("lint", str(tmp_path / "xml.der"), str(tmp_path / "supplier.der"), "--json")
    assert result.returncode == 0, result.stderr
    by_file = {Path(row["file"]).name: row["findings"] for row in json.loads(result.stdout)}
    assert [(r["rule"], r["severity"]) for r in by_file["xml.der"]] == [("smki.organisation.role_in_policy", "warning")]
    assert "xmlSign" in by_file["xml.der"][0]["message"] and by_file["supplier.der"] == []


def test_an_audit_public_key_file_with_trailing_junk_is_refused(software_pki, tmp_path):
    from smki.cli.audit import _key_from_file
    _, issuing, _ = software_pki
    key = issuing.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(BadInputError, match="after the PEM block"):
        _key_from_file(_write(tmp_path / "audit.pem", key + b"junk\n"))
    with pytest.raises(BadInputError, match="2 PEM blocks"):
        _key_from_file(_write(tmp_path / "two.pem", key * 2))
    assert _key_from_file(_write(tmp_path / "ok.pem", key)).public_numbers() == issuing.public_key().public_numbers()


def test_publishing_over_a_link_to_dev_zero_replaces_it_instead_of_reading_forever(tmp_path):
    (tmp_path / "crl.der").symlink_to("/dev/zero")
    result = bounded_python("from pathlib import Path\nfrom smki.librarian.publishing import _publish_file\n"
                            f"path = Path({str(tmp_path / 'crl.der')!r})\n"
                            "print(_publish_file(path, b'CRL', set()), path.is_symlink(), path.read_bytes())\n", timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "1 False b'CRL'", result.stderr[-2000:]
