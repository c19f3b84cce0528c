"""Usage rules (SEC Appendix N section 3) as policy parameters, and device requests whose hwType decides the device type."""

from __future__ import annotations

import base64
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import openssl

from smki.errors import BadInputError
from smki.identifiers import DeviceType, KeyUsage, RemotePartyRole
from smki.policy import Environment, PolicyError, PolicyRefusal, load_policy
from smki.policy.usage import Channel, Submitter, UsageRule
from smki.testing import csr

SHIPPED = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
DEVICE_YAML = (SHIPPED / "device.yaml").read_text()
SHIPPED_RULES = DEVICE_YAML[DEVICE_YAML.index("usage_rules:"):DEVICE_YAML.index("\nrevocation:")]
WEB = Submitter("supplier-a", Channel.WEB_SERVICE)
PORTAL = Submitter("supplier-a", Channel.PORTAL)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def device_policy(tmp_path: Path, rules: str | None = None, *, replace: dict[str, str] | None = None):
    """The shipped device policy with its usage_rules section swapped for `rules` (removed when empty)."""
    text = DEVICE_YAML.replace(SHIPPED_RULES, rules if rules is not None else SHIPPED_RULES)
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "device.yaml"
    path.write_text(text)
    return load_policy(path)


def test_the_shipped_policies_carry_the_sec_values():
    rules = load_policy("builtin:device").usage_rules
    assert rules.timezone == "Europe/London"
    assert (rules.portal_adhoc_daily_cap, rules.batch_daily_cap, rules.batches_at_a_time) == (150, 50000, 1)
    assert rules.result_retention == timedelta(days=30) and rules.auto_approved_requesters == frozenset()
    # Winter (GMT): 19:59 is outside the window, 20:00 in it, 07:59 in it, 08:00 outside.
    assert [rules.in_batch_window(utc(t)) for t in ("2026-01-15T19:59", "2026-01-15T20:00", "2026-01-16T07:59", "2026-01-16T08:00")] \
        == [False, True, True, False]
    # Summer (BST, UTC+1): 19:30 UTC is 20:30 in London, in the window; 07:30 UTC is 08:30 there, outside.
    assert rules.in_batch_window(utc("2026-07-01T19:30")) and not rules.in_batch_window(utc("2026-07-01T07:30"))
    assert rules.adhoc_interval_at(utc("2026-01-15T12:00")) == 0.8
    assert rules.adhoc_interval_at(utc("2026-01-15T22:00")) == 4
    assert rules.adhoc_interval_at(utc("2026-07-01T06:30")) == 0.8  # 07:30 BST
    assert load_policy("builtin:organisation").usage_rules.adhoc_interval_at(utc("2026-01-15T06:59")) == 4


def test_a_policy_without_usage_rules_gets_the_sec_values(tmp_path):
    assert device_policy(tmp_path, "").usage_rules == load_policy("builtin:device").usage_rules


def test_a_lab_policy_relaxes_the_rules(tmp_path):
    lab = device_policy(tmp_path, 'usage_rules:\n  batch_window: always\n  adhoc_interval: [{start: "00:00", end: "00:00", seconds: 0}]\n'
                                  '  auto_approved_requesters: ["*"]\n  batch_daily_cap: 10\n').usage_rules
    assert all(lab.in_batch_window(utc(f"2026-01-15T{hour:02}:30")) for hour in range(24))
    assert all(lab.adhoc_interval_at(utc(f"2026-01-15T{hour:02}:00")) == 0 for hour in range(24))
    lab.check_adhoc(WEB, utc("2026-01-15T12:00"), utc("2026-01-15T12:00"), 10**6)
    assert lab.auto_approves(WEB) and not lab.auto_approves(None)
    assert lab.batches_at_a_time == 1 and lab.portal_adhoc_daily_cap == 150  # what it does not name stays the SEC's


@pytest.mark.parametrize("rules, where", [
    ('usage_rules:\n  batch_window: {start: "24:00", end: "08:00"}\n', "usage_rules.batch_window"),
    ("usage_rules:\n  batch_daily_cap: -1\n", "usage_rules.batch_daily_cap"),
    ("usage_rules:\n  batches_at_a_time: 0\n", "usage_rules.batches_at_a_time"),
    ("usage_rules:\n  timezone: Mars/Olympus\n", "usage_rules.timezone"),
    ("usage_rules:\n  per_hour: 3\n", "per_hour"),
])
def test_bad_usage_rules_are_refused_at_load_naming_the_line(tmp_path, rules, where):
    with pytest.raises(PolicyError) as refused:
        device_policy(tmp_path, rules)
    message = str(refused.value)
    assert "\n" not in message and where in message
    line = int(message.split(":")[1])
    assert where.split(".")[-1] in (tmp_path / "device.yaml").read_text().splitlines()[line - 1]


def test_the_ad_hoc_rules_refuse_with_their_workflow_codes():
    rules = load_policy("builtin:device").usage_rules
    noon = utc("2026-01-15T12:00")
    rules.check_adhoc(WEB, noon, noon - timedelta(seconds=0.8), 0)
    with pytest.raises(PolicyRefusal) as refused:
        rules.check_adhoc(WEB, noon, noon - timedelta(seconds=0.5), 0)
    assert UsageRule.of(refused.value) is UsageRule.ADHOC_INTERVAL and UsageRule.of(refused.value).code == "WF:AH1"
    with pytest.raises(PolicyRefusal):  # at night one every 4 s
        rules.check_adhoc(WEB, utc("2026-01-15T23:00"), utc("2026-01-15T22:59:57"), 0)
    rules.check_adhoc(PORTAL, noon, noon, 149)  # the portal: a daily cap, no interval
    with pytest.raises(PolicyRefusal) as refused:
        rules.check_adhoc(PORTAL, noon, noon, 150)
    assert UsageRule.of(refused.value).code == "WF:AH2"
    assert UsageRule.of(PolicyRefusal("4.2 per_device_cap", "x")) is None


def test_the_batch_submission_rules():
    rules = load_policy("builtin:device").usage_rules
    rules.check_batch_submission(WEB, 50000, 0, 0)
    with pytest.raises(PolicyRefusal) as refused:
        rules.check_batch_submission(WEB, 1, 1, 0)
    assert UsageRule.of(refused.value).code == "WF:BB4"
    with pytest.raises(PolicyRefusal) as refused:
        rules.check_batch_submission(WEB, 2, 0, 49999)
    assert UsageRule.of(refused.value) is UsageRule.BATCH_DAILY_CAP
    finished = utc("2026-01-01T00:00")
    assert not rules.is_expired(finished, finished + timedelta(days=30) - timedelta(seconds=1))
    assert rules.is_expired(finished, finished + timedelta(days=30))


def test_a_submitter_is_checked_where_it_enters():
    with pytest.raises(BadInputError):
        Submitter("", Channel.PORTAL)
    with pytest.raises(ValueError):
        Submitter("a", "carrier-pigeon")
    assert Submitter("a", "portal").channel is Channel.PORTAL


SHARED_OID = "1.2.826.0.1.8641679.1.2.2.1"


def test_without_a_device_type_the_hwtype_decides_over_every_type_sharing_it(tmp_path):
    # ESME may hold only DS, GSME only KA; both share the test PKI's one hwType.
    policy = device_policy(tmp_path, replace={"    ESME: [DS, KA]": "    ESME: [DS]", "    GSME: [DS, KA]": "    GSME: [KA]"})
    supplier = RemotePartyRole.SUPPLIER
    any_type = policy.device_eligibility(Environment.TEST, supplier)
    assert any_type.hw_types == (SHARED_OID,) and any_type.refusal(SHARED_OID, KeyUsage.KEY_AGREEMENT) is None
    assert "no device type's hwType" in any_type.refusal("1.2.3.4", KeyUsage.DIGITAL_SIGNATURE)
    esme = policy.device_eligibility(Environment.TEST, supplier, DeviceType.ESME)
    assert esme.refusal(SHARED_OID, "DS") is None and "may not hold a KA" in esme.refusal(SHARED_OID, "KA")
    assert "is not the ESME hwType" in esme.refusal("1.2.3.4", "DS")
    with pytest.raises(PolicyRefusal, match="4.1 eligibility"):
        policy.device_eligibility(Environment.TEST, RemotePartyRole.RECOVERY)


def test_issue_device_and_issue_batch_without_a_device_type(smki_pki, tmp_path):
    smki_pki.device_certificate("00DB1234567890B1")  # an ad hoc request replaces: the device needs a certificate first
    issued = smki_pki.issuing_dca.issue_device(smki_pki.device_csr("00DB1234567890B1", usage="KA").der, requester="supplier",
                                               device_type=None)
    chain, leaf = tmp_path / "chain.pem", tmp_path / "leaf.pem"
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in (smki_pki.root_dca_certificate, smki_pki.issuing_dca_certificate)))
    leaf.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
    checked = openssl("verify", "-CAfile", str(chain), str(leaf))
    assert checked.returncode == 0, checked.stderr
    text = openssl("x509", "-in", str(leaf), "-noout", "-text").stdout.decode()
    assert "Key Agreement" in text
    batch = tmp_path / "batch.zip"
    with zipfile.ZipFile(batch, "w") as archive:
        archive.writestr("one.csr", base64.b64encode(smki_pki.device_csr("00DB1234567890B2").der))
        archive.writestr("two.csr", base64.b64encode(smki_pki.device_csr("00DB1234567890B3", usage="KA").der))
        key = ec.generate_private_key(ec.SECP256R1())
        archive.writestr("odd.csr", base64.b64encode(csr.build_csr(key, b"\x30\x00", [
            csr.key_usage("digital_signature"), csr.hardware_module_name_san("00DB1234567890B4", "1.2.3.4")])))
    result = smki_pki.issuing_dca.issue_batch(batch, response=tmp_path / "r.zip", status=tmp_path / "s.csv", requester="supplier",
                                              device_type=None, workers=1)
    assert result.totals == {"success": 2, "ineligible": 1}


def test_ad_hoc_requests_are_counted_per_subscriber_in_the_store(smki_pki, tmp_path):
    from test_batch_queue import authority

    # An hour between a subscriber's web service requests, all day (a second's interval could pass on a loaded machine).
    dca = authority(smki_pki, tmp_path, 'usage_rules:\n  portal_adhoc_daily_cap: 1\n  adhoc_interval: [{start: "00:00", end: "00:00", seconds: 3600}]\n')
    devices = ["00DB1234567890C1", "00DB1234567890C2", "00DB1234567890C3", "00DB1234567890C4"]
    for device in devices:
        dca.certify_device(ec.generate_private_key(ec.SECP256R1()).public_key(), device_id=device, device_type="ESME", usage="DS",
                           requester="supplier")

    def submit(device: str, submitter: Submitter | None):
        return dca.issue_device(smki_pki.device_csr(device).der, requester="supplier", submitter=submitter)

    submit(devices[0], WEB)
    with pytest.raises(PolicyRefusal) as refused:  # again within the hour
        submit(devices[1], WEB)
    assert UsageRule.of(refused.value).code == "WF:AH1"
    submit(devices[1], Submitter("another-dsp", Channel.WEB_SERVICE))  # another subscriber counts on its own
    submit(devices[2], None)  # the operator's CLI path: no usage rule
    submit(devices[2], PORTAL)  # the portal: no interval, a daily cap of 1 here
    with pytest.raises(PolicyRefusal) as refused:
        submit(devices[3], PORTAL)
    assert UsageRule.of(refused.value) is UsageRule.PORTAL_ADHOC_DAILY_CAP
    assert len(dca.list(certificate_type="device")) == 4 + 4  # the refused ones issued nothing
    import json
    import sqlite3

    database = sqlite3.connect(tmp_path / "state" / "smki.db")
    entries = database.execute("SELECT outcome, subject, details FROM audit_entries WHERE operation = 'certificate.issue.device'").fetchall()
    database.close()
    refused = [(json.loads(subject), details) for outcome, subject, details in entries if outcome == "refused"]
    assert [subject["submitter"] for subject, _ in refused] == [{"name": "supplier-a", "channel": "web-service"},
                                                                {"name": "supplier-a", "channel": "portal"}]
    assert "usage_rules.adhoc_interval" in refused[0][1] and "usage_rules.portal_adhoc_daily_cap" in refused[1][1]
