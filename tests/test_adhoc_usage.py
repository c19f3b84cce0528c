"""The ad hoc web service under the SEC's own usage rules (the shipped policy): a subscriber's second request
within the interval is a WORKFLOW_ERROR with the rule's code, nothing issued, and audited; another subscriber is
not held up by it. (tests/test_adhoc_service.py runs the rest under a lab policy with no interval.)"""

from __future__ import annotations

from smki.web import adhoc
from smki.web import messages as m
from test_adhoc_service import TWO_ROLES, Services, adhoc_request, answer_of, fresh_device, issued_count, post, recorder, status_and_code  # noqa: F401 - recorder is a fixture


def test_a_second_request_within_the_interval_is_a_workflow_error(smki_pki, recorder):  # noqa: F811 - the fixture
    services = Services(smki_pki)
    first = answer_of(post(services, recorder, adhoc.PATH, adhoc_request(smki_pki.device_csr(fresh_device(smki_pki)).der))[2], m.Schema.ADHOC)
    assert first.findtext("Status") == "SUCCESS"
    before = issued_count(smki_pki)
    second = answer_of(post(services, recorder, adhoc.PATH, adhoc_request(smki_pki.device_csr(fresh_device(smki_pki)).der))[2], m.Schema.ADHOC)
    assert status_and_code(second) == ("WORKFLOW_ERROR", "WF:AH1")
    assert issued_count(smki_pki) == before + 1  # fresh_device's own first certificate, nothing from the refused request
    assert [entry["code"] for entry in recorder.entries[-1:]] == ["WF:AH1"]
    other = answer_of(post(services, recorder, adhoc.PATH, adhoc_request(smki_pki.device_csr(fresh_device(smki_pki)).der),
                           headers={"X-Test-Caller": TWO_ROLES.name, "X-SMKI-Role": "supplier"})[2], m.Schema.ADHOC)
    assert other.findtext("Status") == "SUCCESS"  # the interval is each subscriber's own
