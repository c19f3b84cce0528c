"""The Certificate Policies: schema and cross-field rules with file:line errors, every rule enforced, change control."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509

from smki.errors import ConflictError
from smki.identifiers import EUI64, DeviceType, KeyUsage, RemotePartyRole
from smki.policy import Environment, PolicyError, PolicyRefusal, load_policy
from smki.policy.adoption import adopt, require_adopted
from smki.store import open_database

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def org():
    return load_policy(POLICIES / "organisation.yaml")


@pytest.fixture(scope="module")
def device():
    return load_policy(POLICIES / "device.yaml")


def edited(tmp_path, source, old, new, name="policy.yaml"):
    text = (POLICIES / source).read_text()
    assert old in text, old
    (tmp_path / name).write_text(text.replace(old, new, 1))
    return tmp_path / name


def line_of(path, fragment):
    return next(n for n, line in enumerate(Path(path).read_text().splitlines(), 1) if fragment in line)


@pytest.mark.parametrize("source, old, new, field, fragment, marker", [
    ("organisation.yaml", "  version: \"1.0\"", "  version: [1.0", "(yaml)", "", "version: [1.0"),
    ("organisation.yaml", "  kind: organisation\n", "  kind: organisation\n  colour: blue\n", "identification.colour", "unknown key", "colour: blue"),
    ("device.yaml", "  per_device_cap: 100", "  per_device_cap: many", "eligibility.per_device_cap", "is not of type 'integer'", "per_device_cap: many"),
    ("organisation.yaml", "    test: 1.2.826.0.1.8641679.1.2.1.4", "    test: 1.2.826.x.1", "identification.policy_oids.test", "not a well-formed OID", "test: 1.2.826.x.1"),
    ("organisation.yaml", "    root: {threshold: 3, custodians: 5}", "    root: {threshold: 6, custodians: 5}", "key_management.custody.root.threshold", "larger than the 5 custodians", "root: {threshold: 6"),
    ("organisation.yaml", "  validity: {years: 10, seconds: -1}", "  validity: {years: 26}", "subscriber_certificates.validity", "longer than its issuer's", "validity: {years: 26}"),
    ("organisation.yaml", "    validity: {years: 25, seconds: -1}           # as", "    validity: {years: 31}           # as", "ca_hierarchy.issuing.validity", "longer than its root's", "validity: {years: 31}"),
    ("organisation.yaml", "    supplier: [DS, KA]", "    plumber: [DS, KA]", "subscriber_certificates.roles.plumber", "not an allowed name", "plumber: [DS, KA]"),
    ("organisation.yaml", "  method: crl", "  method: carrier-pigeon", "revocation.method", "'crl' was expected", "carrier-pigeon"),
    ("device.yaml", "  batch_limit: 50000", "  batch_limit: 60000", "eligibility.batch_limit", "greater than the maximum of 50000", "batch_limit: 60000"),
    ("organisation.yaml", "  hsm_required: true", "  hsm_required: false", "key_management.hsm_required", "True was expected", "hsm_required: false"),
    ("organisation.yaml", "    production: 1.2.826.0.1.8641679.1.1.1.4", "    production: 1.2.826.0.1.8641679.1.2.1.4", "identification.policy_oids.production", "must differ", "production: 1.2.826.0.1.8641679.1.2.1.4"),
    ("organisation.yaml", "  name: SMKI Organisation", "  name: SMKI Organisation\n  name: Again", "(yaml)", "given twice", "name: Again"),
])
def test_each_malformed_field_names_file_line_and_field(tmp_path, run_smki, source, old, new, field, fragment, marker):
    path = edited(tmp_path, source, old, new)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line_of(path, marker)}: {field}"), message
    assert fragment in message
    result = run_smki("policy", "check", str(path))
    assert result.returncode == 3 and result.stderr == f"smki: error: {message}\n"


def test_missing_file_and_unknown_environment(tmp_path, run_smki):
    result = run_smki("policy", "check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 3 and "absent.yaml:0: (file): policy file not found" in result.stderr
    result = run_smki("policy", "show", str(POLICIES / "device.yaml"), "--environment", "staging")
    assert result.returncode == 3 and result.stderr == "smki: error: unknown environment 'staging' (test or production)\n"


def test_shipped_policies_and_the_schema_is_usable_by_other_tools():
    import jsonschema, yaml
    schema = json.loads((POLICIES / "policy.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in ("organisation.yaml", "device.yaml"):
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load((POLICIES / name).read_text()))) == []


def test_test_environment_oids_match_the_real_certificates(org, device, fixtures_dir):
    def policy_oids(name):
        certificate = x509.load_pem_x509_certificate((fixtures_dir / name).read_bytes())
        return [p.policy_identifier.dotted_string for p in certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value]
    assert policy_oids("org-supplier-ds-90B3D51F30010000.pem") == [org.policy_oid(Environment.TEST)]
    assert policy_oids("issuing-oca-Z1.pem") == [org.policy_oid(Environment.TEST)]
    assert policy_oids("device-ds-00DB1234567890A0.pem") == [device.policy_oid(Environment.TEST)]
    z1 = x509.load_pem_x509_certificate((fixtures_dir / "issuing-oca-Z1.pem").read_bytes())
    params = org.issuing_ca_certificate_params(Environment.TEST, z1.not_valid_before_utc)
    assert params.subject.public_bytes() == z1.subject.public_bytes()  # OU=07, CN=Z1 as PrintableStrings
    assert params.validity.not_after_utc == z1.not_valid_after_utc    # 25 years minus one second
    real_device = x509.load_pem_x509_certificate((fixtures_dir / "device-ds-00DB1234567890A0.pem").read_bytes())
    from smki.profiles.describe import describe
    assert describe(real_device).hw_type_oid == device.hw_type_oid(Environment.TEST, DeviceType.ESME)
    assert org.policy_oid(Environment.PRODUCTION) != org.policy_oid(Environment.TEST)


def test_organisation_rules(org):
    eui = EUI64.parse("90B3D51F30010000")
    params = org.organisation_certificate_params(Environment.TEST, requester=RemotePartyRole.SUPPLIER, role=RemotePartyRole.SUPPLIER,
                                                 entity_id=eui, key_usage=KeyUsage.KEY_AGREEMENT, common_name=None, not_before=NOW)
    assert params.validity.not_after_utc == datetime(2035, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    with pytest.raises(PolicyRefusal, match="policy 4.1 eligibility: a networkOperator may not request certificates for role supplier"):
        org.check_organisation_issuance(RemotePartyRole.NETWORK_OPERATOR, RemotePartyRole.SUPPLIER, KeyUsage.DIGITAL_SIGNATURE, None)
    with pytest.raises(PolicyRefusal, match="role root may not hold Organisation Certificates"):
        org.check_organisation_issuance(RemotePartyRole.ROOT, RemotePartyRole.ROOT, KeyUsage.DIGITAL_SIGNATURE, None)
    with pytest.raises(PolicyRefusal, match="is the organisation policy, not the device policy"):
        org.check_device_issuance(RemotePartyRole.SUPPLIER, DeviceType.ESME, KeyUsage.KEY_AGREEMENT, 0, False)


def test_policy_edits_change_what_is_enforced(tmp_path):
    """Rules the shipped files allow, forbidden by an edited file: each refusal names its rule."""
    cn = load_policy(edited(tmp_path, "organisation.yaml", "  common_name: optional", "  common_name: required"))
    with pytest.raises(PolicyRefusal, match="7.1 common_name: a common name"):
        cn.check_organisation_issuance(RemotePartyRole.SUPPLIER, RemotePartyRole.SUPPLIER, KeyUsage.KEY_AGREEMENT, None)
    ka_only = load_policy(edited(tmp_path, "organisation.yaml", "    recovery: [DS, KA]", "    recovery: [KA]", "r.yaml"))
    with pytest.raises(PolicyRefusal, match="role recovery may not hold a DS certificate"):
        ka_only.check_organisation_issuance(RemotePartyRole.RECOVERY, RemotePartyRole.RECOVERY, KeyUsage.DIGITAL_SIGNATURE, None)
    no_gsme = load_policy(edited(tmp_path, "device.yaml", "    GSME: [DS, KA]\n", "", "d.yaml"))
    with pytest.raises(PolicyRefusal, match="device type GSME may not hold Device Certificates"):
        no_gsme.check_device_issuance(RemotePartyRole.SUPPLIER, DeviceType.GSME, KeyUsage.KEY_AGREEMENT, 0, False)


def test_device_rules(device):
    requester, ka = RemotePartyRole.SUPPLIER, KeyUsage.KEY_AGREEMENT
    params = device.device_certificate_params(Environment.TEST, requester=requester, device_id=EUI64.parse("00DB1234567890A0"),
                                              device_type=DeviceType.ESME, key_usage=ka, not_before=NOW, existing_certificates=0, single_request=False)
    assert params.policy_oid == "1.2.826.0.1.1800000.1.2.1.4"
    with pytest.raises(PolicyRefusal, match="4.1 eligibility: a recovery may not request Device Certificates"):
        device.check_device_issuance(RemotePartyRole.RECOVERY, DeviceType.ESME, ka, 0, False)
    with pytest.raises(PolicyRefusal, match="4.2 per_device_cap: the device already has 100 certificates \\(cap 100\\)"):
        device.check_device_issuance(requester, DeviceType.ESME, ka, 100, False)
    device.check_device_issuance(requester, DeviceType.ESME, ka, 99, False)
    with pytest.raises(PolicyRefusal, match="4.2 single_request_requires_existing"):
        device.check_device_issuance(requester, DeviceType.ESME, ka, 0, True)
    device.check_device_issuance(requester, DeviceType.ESME, ka, 1, True)
    with pytest.raises(PolicyRefusal, match="4.2 batch_limit: 50001 requests, more than the batch limit of 50000"):
        device.check_batch_size(50001)
    device.check_batch_size(50000)


def test_revocation_rules(org, device):
    assert org.check_revocation("organisation", "keyCompromise") == "crl"
    assert device.check_revocation("device", "keyCompromise") == "status"
    assert org.check_revocation("issuing-ca", "cACompromise") == "arl"
    with pytest.raises(PolicyRefusal, match="4.9 reasons: reason 'certificateHold' is not allowed"):
        org.check_revocation("organisation", "certificateHold")
    with pytest.raises(PolicyRefusal, match="does not govern device certificates"):
        org.check_revocation("device", "keyCompromise")
    assert org.next_update("crl", NOW) == datetime(2026, 1, 2, tzinfo=timezone.utc)
    with pytest.raises(PolicyRefusal, match="issues no CRL"):
        device.next_update("crl", NOW)


def test_key_management_and_audit_sections(org):
    assert org.custody("root") == (3, 5) and org.custody("issuing") == (2, 3)
    from smki.hsm.keys import REQUIRED_PRIVATE_KEY_ATTRIBUTES
    for name, value in org.required_key_attributes().items():
        assert REQUIRED_PRIVATE_KEY_ATTRIBUTES[name] == value  # what keygen enforces is what the policy requires
    assert "policy.adopt" in org.audit_events()


def test_a_changed_policy_is_refused_until_adopted(tmp_path, run_smki, org):
    state = tmp_path / "state"
    connection = open_database(state / "smki.db", create=True)
    with pytest.raises(ConflictError, match="no organisation policy adopted"):
        require_adopted(connection, org)
    adopt(connection, org, "alice")
    require_adopted(connection, org)
    changed = load_policy(edited(tmp_path, "organisation.yaml", "  version: \"1.0\"", "  version: \"1.1\""))
    with pytest.raises(ConflictError, match=r"is not the adopted organisation policy \(version 1.0"):
        require_adopted(connection, changed)
    result = run_smki("policy", "adopt", str(changed.path), "--state", str(state), "--actor", "bob", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["replaces"]["version"] == "1.0"
    require_adopted(connection, changed)
    entries = [(r["operation"], r["actor"], json.loads(r["policy"])["version"]) for r in connection.execute("SELECT * FROM audit_entries")]
    assert entries == [("policy.adopt", "alice", "1.0"), ("policy.adopt", "bob", "1.1")]


def test_policy_diff_and_show(tmp_path, run_smki):
    changed = edited(tmp_path, "device.yaml", "  per_device_cap: 100", "  per_device_cap: 50")
    result = run_smki("policy", "diff", str(POLICIES / "device.yaml"), str(changed), "--json")
    assert result.returncode == 1 and json.loads(result.stdout) == [{"field": "eligibility.per_device_cap", "old": 100, "new": 50}]
    assert run_smki("policy", "diff", str(changed), str(changed)).returncode == 0
    shown = json.loads(run_smki("policy", "show", str(POLICIES / "device.yaml"), "--environment", "test", "--json").stdout)
    assert shown["policy_oids"] == {"test": "1.2.826.0.1.1800000.1.2.1.4"} and shown["kind"] == "device"
