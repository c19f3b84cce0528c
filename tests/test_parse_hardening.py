"""A second hostile review of issue 12's parsing fixes:

A. an extension repeated in a certificate, in a CRL's crlExtensions or in one CRL entry's
   crlEntryExtensions is refused by every strict reader (exit 3, one line, a lodge refusal audited)
   and is an error finding of lint, where it used to end in exit 70 (cryptography's lazy
   DuplicateExtension) or pass lint;
B. names holding non-characters, private-use, unassigned or invisible characters are neither
   certified nor passed by lint;
C. a CRL whose nextUpdate is not after its thisUpdate fails lint.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from asn1crypto import crl as asn1_crl, x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding

import csr_factory as f
from smki.audit.verify import rows_from_database
from smki.librarian.crl_lodging import lodge_crl
from smki.librarian.lodging import lodge_certificate
from smki.errors import EXIT_BAD_INPUT, EXIT_REFUSED, BadInputError
from smki.identifiers import EUI64, RemotePartyRole
from smki.profiles.crl import RevokedEntry, build_crl
from smki.profiles.files import read_certificate
from smki.profiles.lint import Severity, lint_certificate
from smki.profiles.lint.crl_rules import CRL_RULES, lint_crl
from smki.profiles.names import check_name_text, organisation_subject
from smki.requests import RequestRejected, parse_organisation_request
from smki.requests.outcomes import Outcome
from smki.store import open_database
from test_input_hardening import (one_line_error, organisation_der, raw_organisation_subject, rules,  # noqa: F401
                                  software_pki)

KU, SKI, CRL_NUMBER, REASON_CODE = "2.5.29.15", "2.5.29.14", "2.5.29.20", "2.5.29.21"


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def pem(label: str, der: bytes) -> bytes:
    import base64
    return f"-----BEGIN {label}-----\n".encode() + base64.encodebytes(der) + f"-----END {label}-----\n".encode()


# -- building artefacts that repeat an extension, re-signed so that only the repetition is wrong --------------
def certificate_repeating(der: bytes, oid: str, signer) -> bytes:
    """`der` with a copy of its extension `oid` appended to tbsCertificate.extensions, signed again by `signer`."""
    certificate = asn1_x509.Certificate.load(der)
    tbs = certificate["tbs_certificate"]
    extensions = [asn1_x509.Extension.load(e.dump()) for e in tbs["extensions"]]
    copy = next(asn1_x509.Extension.load(e.dump()) for e in extensions if e["extn_id"].dotted == oid)
    tbs["extensions"] = asn1_x509.Extensions([*extensions, copy])
    tbs_der = tbs.dump(force=True)
    return asn1_x509.Certificate({"tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
                                  "signature_algorithm": certificate["signature_algorithm"],
                                  "signature_value": signer.sign(tbs_der)}).dump()


def resigned_crl(der: bytes, signer, mutate) -> bytes:
    crl = asn1_crl.CertificateList.load(der)
    tbs = asn1_crl.TbsCertList.load(crl["tbs_cert_list"].dump())
    mutate(tbs)
    tbs_der = tbs.dump(force=True)
    return asn1_crl.CertificateList({"tbs_cert_list": asn1_crl.TbsCertList.load(tbs_der), "signature_algorithm": crl["signature_algorithm"],
                                     "signature": signer.sign(tbs_der)}).dump()


def crl_repeating_number(der: bytes, signer) -> bytes:
    def mutate(tbs):
        extensions = [asn1_crl.TBSCertListExtension.load(e.dump()) for e in tbs["crl_extensions"]]
        copy = next(asn1_crl.TBSCertListExtension.load(e.dump()) for e in extensions if e["extn_id"].dotted == CRL_NUMBER)
        tbs["crl_extensions"] = asn1_crl.TBSCertListExtensions([*extensions, copy])
    return resigned_crl(der, signer, mutate)


def crl_repeating_entry_reason(der: bytes, signer, index: int = 0) -> bytes:
    def mutate(tbs):
        entries = [asn1_crl.RevokedCertificate.load(e.dump()) for e in tbs["revoked_certificates"]]
        entry = entries[index]
        reason = asn1_crl.CRLEntryExtension.load(entry["crl_entry_extensions"][0].dump())
        entry["crl_entry_extensions"] = asn1_crl.CRLEntryExtensions([reason, asn1_crl.CRLEntryExtension.load(reason.dump())])
        entries[index] = asn1_crl.RevokedCertificate.load(entry.dump(force=True))
        tbs["revoked_certificates"] = asn1_crl.RevokedCertificates(entries)
    return resigned_crl(der, signer, mutate)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def good_crl(issuing, signer, *, number: int = 1, entries: int = 2) -> bytes:
    this_update = now() - timedelta(minutes=1)
    revoked = [RevokedEntry(0x4000 + i, this_update, "keyCompromise") for i in range(entries)]
    return build_crl(issuing, signer, crl_number=number, this_update_utc=this_update, next_update_utc=this_update + timedelta(days=1),
                     entries=revoked).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def artefacts(software_pki, tmp_path_factory):
    """Files of the software PKI: good ones, and each kind of repeated extension."""
    root, issuing, signer = software_pki
    directory = tmp_path_factory.mktemp("repeated")
    leaf = organisation_der(issuing, signer)
    crl = good_crl(issuing, signer)
    return {
        "root": write(directory / "root.pem", root.public_bytes(Encoding.PEM)),
        "issuing": write(directory / "issuing.pem", issuing.public_bytes(Encoding.PEM)),
        "leaf": write(directory / "leaf.der", leaf),
        "crl": write(directory / "good.crl", crl),
        "leaf-two-ku": write(directory / "leaf-two-ku.der", certificate_repeating(leaf, KU, signer)),
        "leaf-two-ski.pem": write(directory / "leaf-two-ski.pem", pem("CERTIFICATE", certificate_repeating(leaf, SKI, signer))),
        "crl-two-numbers": write(directory / "two-numbers.crl", crl_repeating_number(crl, signer)),
        "crl-entry-two-reasons": write(directory / "entry-two-reasons.crl", pem("X509 CRL", crl_repeating_entry_reason(crl, signer, 1))),
    }


REPEATED = "appears more than once"


# -- A: the strict readers ------------------------------------------------------------------------------------------
def test_the_built_artefacts_are_otherwise_good(software_pki, artefacts, run_smki):
    """The only fault of the test files is the repetition: the originals verify and lint clean."""
    result = run_smki("verify", artefacts["leaf"], "--anchor", artefacts["root"], "--intermediate", artefacts["issuing"],
                      "--crl", artefacts["crl"])
    assert result.returncode == 0, result.stderr
    assert rules(lint_certificate(Path(artefacts["leaf"]).read_bytes())[1], Severity.ERROR) == []
    assert lint_crl(Path(artefacts["crl"]).read_bytes())[1] == []


@pytest.mark.parametrize("name, fragment", [("leaf-two-ku", f"extension {KU} (keyUsage) {REPEATED} in the certificate's extensions"),
                                            ("leaf-two-ski.pem", f"extension {SKI} (subjectKeyIdentifier) {REPEATED}")])
def test_a_certificate_repeating_an_extension_is_refused_by_its_reader(artefacts, name, fragment):
    with pytest.raises(BadInputError) as caught:
        read_certificate(Path(artefacts[name]))
    assert str(caught.value).startswith(f"{artefacts[name]}: ") and fragment in str(caught.value)


def test_verify_refuses_a_repeated_extension_in_leaf_anchor_intermediate_or_crl(software_pki, artefacts, tmp_path, run_smki):
    root, issuing, signer = software_pki
    leaf, anchor, intermediate, crl = artefacts["leaf"], artefacts["root"], artefacts["issuing"], artefacts["crl"]
    # Signed again by the issuing key (the fixture keeps the root's): the reader refuses before any signature is checked.
    bad_issuing = write(tmp_path / "issuing-two-ku.der", certificate_repeating(issuing.public_bytes(Encoding.DER), KU, signer))
    bad_root = write(tmp_path / "root-two-ski.der", certificate_repeating(root.public_bytes(Encoding.DER), SKI, signer))
    cases = [
        ([artefacts["leaf-two-ku"], "--anchor", anchor, "--intermediate", intermediate], artefacts["leaf-two-ku"]),
        ([artefacts["leaf-two-ski.pem"], "--anchor", anchor, "--intermediate", intermediate], artefacts["leaf-two-ski.pem"]),
        ([leaf, "--anchor", anchor, "--intermediate", bad_issuing], bad_issuing),
        ([leaf, "--anchor", bad_root, "--intermediate", intermediate], bad_root),
        ([leaf, "--anchor", anchor, "--intermediate", intermediate, "--crl", artefacts["crl-two-numbers"]], artefacts["crl-two-numbers"]),
        ([leaf, "--anchor", anchor, "--intermediate", intermediate, "--crl", crl, "--crl", artefacts["crl-entry-two-reasons"]],
         artefacts["crl-entry-two-reasons"]),
    ]
    for args, culprit in cases:
        result = run_smki("verify", *args)
        one_line_error(result, EXIT_BAD_INPUT, culprit, REPEATED)


def test_librarian_lodge_refuses_a_certificate_repeating_an_extension(artefacts, tmp_path, run_smki):
    db = str(tmp_path / "repo.db")
    lodged = run_smki("librarian", "lodge", "--db", db, "--trust-root", artefacts["root"], artefacts["issuing"])
    assert lodged.returncode == 0, lodged.stderr
    for name in ("leaf-two-ku", "leaf-two-ski.pem"):
        result = run_smki("librarian", "lodge", "--db", db, artefacts[name])
        one_line_error(result, EXIT_BAD_INPUT, artefacts[name], REPEATED)
    connection = open_database(db)
    assert connection.execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 2


@pytest.mark.parametrize("name, where", [("crl-two-numbers", f"extension {CRL_NUMBER} (cRLNumber) {REPEATED} in the crlExtensions"),
                                         ("crl-entry-two-reasons", f"extension {REASON_CODE} (reasonCode) {REPEATED} in the "
                                                                   "crlEntryExtensions of entry 4001")])
def test_librarian_lodge_crl_refuses_a_repeated_extension_and_audits_the_refusal(artefacts, tmp_path, run_smki, name, where):
    db = str(tmp_path / "repo.db")
    assert run_smki("librarian", "lodge", "--db", db, "--trust-root", artefacts["root"], artefacts["issuing"]).returncode == 0
    result = run_smki("librarian", "lodge-crl", "--db", db, "--actor", "parse-test", artefacts[name])
    one_line_error(result, EXIT_BAD_INPUT, artefacts[name], where)
    connection = open_database(db)
    assert connection.execute("SELECT COUNT(*) FROM lodged_crls").fetchone()[0] == 0
    last = rows_from_database(connection)[0][-1]
    assert (last["operation"], last["outcome"], last["actor"]) == ("crl.lodge", "refused", "parse-test")
    assert where in json.loads(last["details"])["reason"]
    good = run_smki("librarian", "lodge-crl", "--db", db, artefacts["crl"])  # the same list without the repetition is taken
    assert good.returncode == 0, good.stderr


def test_a_repetition_in_the_last_entry_of_a_long_list_is_found(software_pki, tmp_path):
    """Every entry is walked: a list longer than 65,535 octets, and an entry too long for a one-octet length."""
    from smki.profiles.unique_extensions import repeated_crl_extension  # new here: the other tests fail on the old code by behaviour
    _, issuing, signer = software_pki
    crl = good_crl(issuing, signer, entries=5000)
    assert repeated_crl_extension(crl) is None
    repeated = crl_repeating_entry_reason(crl, signer, index=4999)
    assert repeated_crl_extension(repeated).endswith(f"of entry {0x4000 + 4999:X} (RFC 5280: at most one instance of each extension)")
    connection = open_database(str(tmp_path / "repo.db"), create=True)
    root = software_pki[0]
    lodge_certificate(connection, root, trust_root=True)
    lodge_certificate(connection, issuing)
    with pytest.raises(BadInputError, match=REPEATED):
        lodge_crl(connection, repeated, actor="parse-test")
    last = rows_from_database(connection)[0][-1]
    assert (last["operation"], last["outcome"]) == ("crl.lodge", "refused")

    def long_entry(tbs):  # reasonCode, a 200-octet private extension, reasonCode again: over 127 octets
        entries = [asn1_crl.RevokedCertificate.load(e.dump()) for e in tbs["revoked_certificates"]]
        reason = entries[-1]["crl_entry_extensions"][0].dump()
        private = asn1_crl.CRLEntryExtension({"extn_id": "1.3.6.1.4.1.99999.1", "extn_value": b"\x04\x81\xc8" + bytes(200)}).dump()
        extensions = [asn1_crl.CRLEntryExtension.load(d) for d in (reason, private, reason)]
        entries[-1]["crl_entry_extensions"] = asn1_crl.CRLEntryExtensions(extensions)
        tbs["revoked_certificates"] = asn1_crl.RevokedCertificates([asn1_crl.RevokedCertificate.load(e.dump(force=True)) for e in entries])
    long = resigned_crl(crl, signer, long_entry)
    assert repeated_crl_extension(long).startswith(f"extension {REASON_CODE} (reasonCode) {REPEATED} in the crlEntryExtensions of entry")


def test_the_walk_is_cheap_on_a_long_list(software_pki):
    """Lodging runs it once per list: 100,000 entries must cost a small fraction of a second."""
    from smki.profiles.unique_extensions import repeated_crl_extension
    _, issuing, signer = software_pki
    crl = good_crl(issuing, signer, entries=100_000)
    began = time.perf_counter()
    assert repeated_crl_extension(crl) is None
    assert time.perf_counter() - began < 1.0


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x80", b"\x30\x03\x30\x01", b"\x30\x84\xff\xff\xff\xff", bytes(range(256))])
def test_the_walk_answers_none_on_what_is_no_certificate_or_crl(data):
    from smki.profiles.unique_extensions import repeated_certificate_extension, repeated_crl_extension
    assert repeated_certificate_extension(data) is None and repeated_crl_extension(data) is None


# -- A: lint reports the repetition as an error -------------------------------------------------------------------------
def test_lint_reports_a_certificate_repeating_an_extension(artefacts, run_smki):
    result = run_smki("lint", artefacts["leaf-two-ku"], artefacts["leaf-two-ski.pem"], "--rfc5280", "--json")
    assert result.returncode == EXIT_REFUSED, result.stderr
    for row in json.loads(result.stdout):
        errors = [finding["rule"] for finding in row["findings"] if finding["severity"] == "error"]
        assert "smki.cert.duplicate_extension" in errors, row


@pytest.mark.parametrize("rfc5280", [False, True])
def test_lint_reports_a_crl_repeating_an_extension(artefacts, run_smki, rfc5280):
    result = run_smki("lint", artefacts["crl-two-numbers"], artefacts["crl-entry-two-reasons"], *(["--rfc5280"] if rfc5280 else []), "--json")
    assert result.returncode == EXIT_REFUSED, result.stderr
    rows = json.loads(result.stdout)
    assert [[finding["rule"] for finding in row["findings"]] for row in rows] == [["smki.crl.duplicate_extension"]] * 2
    assert "crlEntryExtensions of entry 4001" in rows[1]["findings"][0]["message"]


def test_the_new_rules_are_listed(run_smki):
    listed = {row["rule"]: row["severity"] for row in json.loads(run_smki("lint", "--rules", "--json").stdout)}
    assert listed["smki.cert.duplicate_extension"] == listed["smki.crl.duplicate_extension"] == "error"
    assert listed["smki.crl.next_update_after_this_update"] == "error"


# -- B: non-characters, private use, unassigned and invisible characters ------------------------------------------------
# Non-characters, private use, unassigned (U+0378, the unassigned tag U+E0000), and the invisible letters and marks.
# (Format characters such as the tags U+E0001-U+E007F, U+180E and the separators were refused already: Cf, Zl, Zp.)
INVISIBLE = ["\ufffe", "\uffff", "\U0010fffe", "\ufdd0", "\ue000", "\U000f0000", "\u0378", "\U000e0000", "\u034f", "\u115f",
             "\u1160", "\u3164", "\uffa0", "\u2800", "\u17b4", "\u17b5", "\u180b", "\ufe00", "\ufe0f", "\U000e0100", "\U000e01ef"]


@pytest.mark.parametrize("character", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_a_csr_common_name_with_an_invisible_or_non_character_is_refused_at_intake(character):
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(f.organisation_csr(common_name=f"GIT{character}SUPPLIER"), "x.csr")
    assert caught.value.outcome is Outcome.WRONG_SUBJECT and f"CN holds U+{ord(character):04X}" in str(caught.value)
    with pytest.raises(BadInputError, match=f"U\\+{ord(character):04X}"):
        organisation_subject(RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), f"GIT{character}SUPPLIER")


@pytest.mark.parametrize("character", ["\ufffe", "\ue000", "\u034f", "\u3164"], ids=["U+FFFE", "U+E000", "U+034F", "U+3164"])
def test_lint_refuses_a_certificate_whose_name_holds_an_invisible_or_non_character(software_pki, character, tmp_path, run_smki):
    _, issuing, signer = software_pki
    der = organisation_der(issuing, signer, subject=raw_organisation_subject(f"GIT{character}SUPPLIER"))
    assert "smki.name.safe_characters" in rules(lint_certificate(der)[1], Severity.ERROR)
    result = run_smki("lint", write(tmp_path / "invisible.der", der), "--json")
    assert result.returncode == EXIT_REFUSED
    assert "smki.name.safe_characters" in [row["rule"] for row in json.loads(result.stdout)[0]["findings"]]


REAL_NAMES = ["Énergie Öko", "Łódź", "東京電力", "O'Brien & Sons Ltd.", "Ελληνική Ενέργεια", "Газпром энергосбыт", "שלום",
              "محطة", "नमस्ते ऊर्जा", "한국전력공사", "Smith-Jones (UK) plc", "Ōsaka #1 — Gas/Power"]


@pytest.mark.parametrize("common_name", REAL_NAMES)
def test_real_world_names_of_any_script_are_still_certified(software_pki, common_name):
    check_name_text(common_name, "CN")
    assert parse_organisation_request(f.organisation_csr(common_name=common_name)).common_name == common_name
    _, issuing, signer = software_pki
    assert lint_certificate(organisation_der(issuing, signer, subject=raw_organisation_subject(common_name)))[1] == []


# -- C: nextUpdate not after thisUpdate --------------------------------------------------------------------------------
def crl_with_times(issuing, signer, this_update: datetime, next_update: datetime) -> bytes:
    def mutate(tbs):
        tbs["this_update"] = asn1_x509.Time(name="utc_time", value=this_update)
        tbs["next_update"] = asn1_x509.Time(name="utc_time", value=next_update)
    return resigned_crl(good_crl(issuing, signer), signer, mutate)


def test_a_crl_whose_next_update_is_not_after_its_this_update_fails_lint(software_pki, tmp_path, run_smki):
    _, issuing, signer = software_pki
    this_update = now() - timedelta(days=1)
    for next_update in (this_update - timedelta(hours=1), this_update):
        _, findings = lint_crl(crl_with_times(issuing, signer, this_update, next_update))
        assert [(f.rule_id, f.severity) for f in findings] == [("smki.crl.next_update_after_this_update", Severity.ERROR)]
    assert lint_crl(crl_with_times(issuing, signer, this_update, this_update + timedelta(seconds=1)))[1] == []
    path = write(tmp_path / "backwards.crl", crl_with_times(issuing, signer, this_update, this_update - timedelta(days=1)))
    result = run_smki("lint", path, "--json")
    assert result.returncode == EXIT_REFUSED
    assert [row["rule"] for row in json.loads(result.stdout)[0]["findings"]] == ["smki.crl.next_update_after_this_update"]
    assert "smki.crl.next_update_after_this_update" in {rule.rule_id for rule in CRL_RULES}
