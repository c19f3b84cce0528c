"""smki.testing's served SMKI: the `smki_service` fixture (a real `smki serve` over mutual TLS with lab credentials)
and its ServiceClient. Every client method makes a real round trip; every certificate is checked with openssl
against the test PKI's chain; a refused caller is refused by the service; stopping leaves no process behind."""

from __future__ import annotations

import io
import os
import ssl
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import openssl
from smki.testing import ServiceHttpError, TestService
from smki.testing.service import lab_policy_text


def verify_with_openssl(tmp_path: Path, der: bytes, root: x509.Certificate, issuing: x509.Certificate) -> str:
    """openssl verify of a DER certificate against a root and its Issuing Authority; openssl's own output."""
    chain, leaf = tmp_path / "chain.pem", tmp_path / "leaf.pem"
    chain.write_bytes(root.public_bytes(Encoding.PEM) + issuing.public_bytes(Encoding.PEM))
    converted = openssl("x509", "-inform", "DER", "-outform", "PEM", input=der)
    assert converted.returncode == 0, converted.stderr
    leaf.write_bytes(converted.stdout)
    # The SMKI's policy OIDs are not ones openssl knows; the path and the signatures are what it checks.
    result = openssl("verify", "-x509_strict", "-CAfile", str(chain), str(leaf))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.decode()


def device_chain(service):
    return service.pki.root_dca_certificate, service.pki.issuing_dca_certificate


def test_three_lines_get_an_organisation_certificate_over_mutual_tls(smki_service, tmp_path):
    client = smki_service.client("supplier")
    answer = client.organisation(smki_service.organisation_csr("supplier", usage="KA"))
    assert answer.ok, answer

    assert answer.status == "SUCCESS" and answer.code is None and answer.transaction_id > 0
    assert answer.certificate.issuer == smki_service.pki.issuing_oca_certificate.subject
    assert "OK" in verify_with_openssl(tmp_path, answer.certificate_der, smki_service.pki.root_oca_certificate,
                                       smki_service.pki.issuing_oca_certificate)
    with_id = client.organisation(smki_service.organisation_csr("supplier"), id="org-7")
    assert with_id.ok and with_id.id == "org-7"


def test_an_ad_hoc_replacement_is_issued_and_an_unknown_device_is_answered_as_such(smki_service, tmp_path):
    client = smki_service.client("supplier")
    answer = client.adhoc(smki_service.replacement_csr(), id="adhoc-kit-1")
    assert answer.status == "SUCCESS" and answer.id == "adhoc-kit-1", answer
    assert "OK" in verify_with_openssl(tmp_path, answer.certificate_der, *device_chain(smki_service))

    never_seen = client.adhoc(smki_service.pki.device_csr(smki_service.new_device()), id="adhoc-kit-2")
    assert never_seen.status == "UNKNOWN_DEVICE" and never_seen.code.startswith("UD:") and never_seen.certificate_der is None
    with pytest.raises(Exception, match="no certificate in the answer"):
        never_seen.certificate


def test_a_batch_is_submitted_processed_polled_and_downloaded(smki_service, tmp_path):
    client = smki_service.client("supplier")
    requests = {f"meter-{n}": smki_service.pki.device_csr(smki_service.new_device(), usage="KA" if n % 2 else "DS") for n in range(4)}
    submitted = client.submit_batch(requests, id="kit-batch-1")
    assert submitted.ok and submitted.status == "PENDING" and submitted.id == "kit-batch-1", submitted

    result = client.wait_for_batch(submitted.batch_id, timeout=120)
    assert result.status == "COMPLETED" and result.batch_id == submitted.batch_id
    assert [entry.id for entry in result.results] == list(requests) and all(entry.ok for entry in result.results), result.results
    for der in result.certificates().values():
        assert "OK" in verify_with_openssl(tmp_path, der, *device_chain(smki_service))
    issued_keys = {x509.load_der_x509_certificate(der).public_key().public_numbers() for der in result.certificates().values()}
    assert issued_keys == {request.private_key.public_key().public_numbers() for request in requests.values()}

    response = client.download_response_zip(submitted.batch_id)
    assert response.name.endswith("-response.zip") and str(submitted.batch_id) in response.name
    assert sorted(response.certificates().values()) == sorted(result.certificates().values())
    records = client.batch_status_file(submitted.batch_id)
    assert all(name in records for name in requests) and records.count("success") >= len(requests)


def test_a_batch_zip_upload_is_processed_and_another_subscriber_cannot_poll_it(smki_service, tmp_path):
    supplier, operator_of_network = smki_service.client("supplier"), smki_service.client("networkOperator")
    pairs = [(f"zip-{n}", smki_service.pki.device_csr(smki_service.new_device())) for n in range(2)]
    submitted = supplier.submit_batch_zip(pairs, id="kit-zip-1")
    assert submitted.ok, submitted
    result = supplier.wait_for_batch(submitted.batch_id, timeout=120)
    assert result.status == "COMPLETED" and len(result.certificates()) == 2
    with zipfile.ZipFile(io.BytesIO(supplier.download_response_zip(submitted.batch_id).data)) as archive:
        assert sorted(archive.namelist()) == ["zip-0.crt", "zip-1.crt"]

    someone_else = operator_of_network.batch_result(submitted.batch_id)
    assert someone_else.status == "FORMAT_ERROR" and someone_else.code == "FM:AA3" and not someone_else.results


def test_a_caller_without_a_granted_certificate_is_refused(smki_service):
    csr = smki_service.replacement_csr()
    with pytest.raises(ServiceHttpError) as refused:
        smki_service.client("operator").adhoc(csr)  # the operator's certificate is not granted the ad hoc service
    assert refused.value.status == 403
    try:
        smki_service.client(None).adhoc(csr)  # no client certificate at all
    except ServiceHttpError as exc:
        assert exc.status == 403
    except (ssl.SSLError, ConnectionError):
        pass  # refused in the handshake
    else:
        pytest.fail("a caller without a client certificate was served")


def test_the_lab_policy_relaxes_only_the_usage_rules(tmp_path):
    text = lab_policy_text("device")
    assert text.count("usage_rules:") == 1 and "batch_window: always" in text and '"*"' in text
    assert "single_request_requires_existing: true" in text  # every other rule stands
    assert "20:00" not in text.split("usage_rules:")[1]


def test_the_repository_is_served_by_the_same_service(smki_service):
    status, _, body = smki_service.client(None).request("GET", "/health")
    assert status == 200 and b'"ok"' in body


def test_stop_answers_sigterm_and_leaves_no_process_behind(smki_service, tmp_path):
    service = TestService.start(smki_service.pki, tmp_path / "second", workers=2)
    try:
        workers = service.worker_pids()
        assert len(workers) >= 2
        assert service.client("other").organisation(service.organisation_csr("other")).ok
    finally:
        status = service.stop()
    assert status == 0, service.log_file.read_text()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in [service.process.pid, *workers]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in [service.process.pid, *workers])
    assert service.stop() == 0  # once: a second stop changes nothing
    assert str(service.directory / "service.yaml") not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")
