"""Two `smki serve` processes on one PostgreSQL store: the batch queue is shared, each batch is processed
once, with no duplicate serial, and a service killed with kill -9 mid-batch loses nothing (the other
service's batch processor takes the batch over when its lease runs out and answers only what is left).

Real parts: two service processes over mutual TLS (lab credentials), one PostgreSQL server (the tests' own,
tests/postgres_server.py) holding the Issuing DCA's state and the subscriber register, the test PKI's SoftHSM token.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from smki.issuing import IssuingAuthority
from smki.register import SubscriberRegister
from smki.register.lab_credentials import make_lab_credentials
from test_batch_queue import policy_file, requests

pytest_plugins = ["postgres_server"]

LEASE_SECONDS = 3
BIG = 2000  # CSRs in the batch whose service is killed mid-batch
RULES = ("usage_rules:\n  batch_window: always\n  batch_daily_cap: 50000\n  batches_at_a_time: 10\n"
         "  auto_approved_requesters: ['*']\n  adhoc_interval: [{start: \"00:00\", end: \"00:00\", seconds: 0}]\n")


class Service:
    """One `smki serve` process (its own port, the shared store) and a mutual-TLS client to it."""

    def __init__(self, directory: Path, name: str, env: dict, lab) -> None:
        self.settings = directory / f"{name}.yaml"
        self.settings.write_text(f"""\
kind: service
listen: {{address: 127.0.0.1, port: 0}}
workers: 1
tls: {{certificate: tls/server.pem, key: tls/server.key.pem, client_ca: tls/lab-transport-ca.pem}}
database: "{env['SERVICE_DB']}"
issuing_dca: issuing-dca.yaml
batches: {{processor: true, poll_seconds: 0.3, lease_seconds: {LEASE_SECONDS}}}
""")
        self.log = directory / f"{name}.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "smki.cli.main", "serve", "--config", str(self.settings), "--json"],
                                            stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)
        line = self.process.stdout.readline()
        assert line, self.log.read_text()
        self.port = int(json.loads(line)["url"].rsplit(":", 1)[1])
        supplier = next(client for client in lab.clients if client.role.camel_name == "supplier")
        self.context = ssl.create_default_context(cafile=str(lab.ca_certificate))
        self.context.load_cert_chain(str(supplier.certificate), str(supplier.key))

    def request(self, method: str, path: str, body: bytes = b"") -> ET.Element:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=60)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/xml;charset=UTF-8"})
            answer = connection.getresponse()
            assert answer.status == 200, answer.read()
            return ET.fromstring(answer.read())
        finally:
            connection.close()

    def submit(self, client_id: str, pairs: list[tuple[str, bytes]]) -> int:
        entries = "".join(f'<DeviceCSR ID="{name}">{base64.b64encode(der).decode()}</DeviceCSR>' for name, der in pairs)
        answer = self.request("POST", "/1.0/PortalCSRBatch/SubmitCSRBatch",
                              f'<SubmitCSRBatch ID="{client_id}"><Version>1.0</Version>{entries}</SubmitCSRBatch>'.encode())
        assert answer.findtext("BatchStatus") == "PENDING", (ET.tostring(answer), self.log.read_text()[-3000:])
        return int(answer.findtext("BatchId"))

    def status(self, batch_id: int) -> tuple[str, list[str]]:
        answer = self.request("GET", f"/1.0/PortalCSRBatch/CSRBatchResult?BatchId={batch_id}")
        return answer.findtext("BatchStatus"), [element.findtext("Status") for element in answer.iter("DeviceCertificate")]

    def kill(self) -> None:
        """kill -9 of the whole service: its parent, workers, batch processor and signing processes."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=90)
        return self.process.returncode


@pytest.fixture
def shared_store(smki_pki, tmp_path, postgres_server):
    """The Issuing DCA's state and the service database on one PostgreSQL server; the services' files; the lab's clients."""
    dca_url = postgres_server.url(schema=postgres_server.new_schema())
    service_url = postgres_server.url(schema=postgres_server.new_schema())
    policy = policy_file(tmp_path, RULES, batch_limit=5000)
    dca = IssuingAuthority(dca_url, certificate=smki_pki.issuing_dca_certificate, key=smki_pki.key("issuing-dca"),
                           pin=smki_pki.token.pin, policy=policy, environment="test", actor="ra-operator")
    dca.adopt_policy(policy)
    certificate = tmp_path / "issuing-dca.pem"
    certificate.write_bytes(smki_pki.issuing_dca_certificate.public_bytes(Encoding.PEM))
    (tmp_path / "issuing-dca.yaml").write_text(f"""\
kind: issuing-dca
state: "{dca_url}"
issuer_certificate: issuing-dca.pem
hsm: {{key_uri: "{smki_pki.key('issuing-dca').uri}", pin_source: env:DCA_PIN}}
policy: {policy.name}
environment: test
defaults: {{actor: csr-web-service, workers: 1, chunk_size: 10}}
""")
    with SubscriberRegister(service_url, actor="test") as register:
        lab = make_lab_credentials(tmp_path / "tls", roles=["supplier"], register=register)
    env = {**os.environ, "DCA_PIN": smki_pki.token.pin, "SERVICE_DB": service_url}
    services: list[Service] = []
    yield dca, (lambda name: services.append(Service(tmp_path, name, env, lab)) or services[-1])
    for service in services:
        service.kill()
    dca.close()


def _facts(dca: IssuingAuthority) -> dict:
    connection = dca._readable()
    serials = [row[0] for row in connection.execute("SELECT serial_hex FROM certificates WHERE certificate_type = 'device'")]
    operations = [row[0] for row in connection.execute("SELECT operation FROM audit_entries WHERE outcome = 'success' ORDER BY seq")]
    return {"serials": serials, "operations": operations}


def _wait_for(condition, timeout: float, every: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def test_two_services_share_the_queue_and_process_each_batch_once(smki_pki, shared_store):
    dca, start = shared_store
    first, second = start("first"), start("second")
    submitted = [(first if n % 2 else second).submit(f"shared-{n}", requests(smki_pki, 20)) for n in range(6)]
    assert len(set(submitted)) == 6  # one numbering for both services: the store's

    def all_completed() -> bool:
        return all(second.status(batch)[0] == "COMPLETED" for batch in submitted)
    assert _wait_for(all_completed, timeout=240), [first.status(batch) for batch in submitted]
    for batch in submitted:  # either service answers any of the subscriber's batches
        status, answers = first.status(batch)
        assert (status, answers) == ("COMPLETED", ["SUCCESS"] * 20)
    facts = _facts(dca)
    assert len(facts["serials"]) == 120 == len(set(facts["serials"]))  # no duplicate serial
    assert facts["operations"].count("batch.start") == 6 == facts["operations"].count("batch.complete")
    assert "batch.resume" not in facts["operations"]  # each batch run once, by one processor
    assert [service.stop() for service in (first, second)] == [0, 0]


def test_a_service_killed_mid_batch_loses_nothing(smki_pki, shared_store):
    dca, start = shared_store
    first = start("first")
    batch = first.submit("big", requests(smki_pki, BIG))
    # Polled often: the kill must land mid-batch (chunks of 10, each its own transaction, take long enough for that).
    assert _wait_for(lambda: _answered(dca) >= 30, timeout=180, every=0.01), "the first service answered nothing"
    first.kill()  # mid-batch: the service, its batch processor and its signing processes
    assert _answered(dca) < BIG, "the batch finished before the kill: make it larger"
    second = start("second")  # its processor takes the batch over once the dead one's lease has run out
    assert _wait_for(lambda: second.status(batch)[0] == "COMPLETED", timeout=240), second.log.read_text()[-2000:]
    assert second.status(batch) == ("COMPLETED", ["SUCCESS"] * BIG)
    facts = _facts(dca)
    assert len(facts["serials"]) == BIG == len(set(facts["serials"]))
    assert facts["operations"].count("batch.resume") == 1 and facts["operations"].count("batch.complete") == 1
    assert second.stop() == 0


def _answered(dca: IssuingAuthority) -> int:
    return dca._readable().execute("SELECT COUNT(*) FROM batch_entries").fetchone()[0]
