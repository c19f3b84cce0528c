"""Ad hoc Device CSRs issued as a group (IssuingAuthority.issue_devices) and the web service's coalescing queue."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import openssl

from smki.errors import BadInputError
from smki.issuing.adhoc_issuance import DeviceCsr
from smki.policy import PolicyRefusal
from smki.requests.outcomes import RequestRejected


def _entries_after(smki_pki, seq: int) -> list[tuple[str, str]]:
    with sqlite3.connect(smki_pki.state("issuing-dca") / "smki.db") as connection:
        return connection.execute("SELECT operation, outcome FROM audit_entries WHERE seq > ? ORDER BY seq", (seq,)).fetchall()


def _last_seq(smki_pki) -> int:
    with sqlite3.connect(smki_pki.state("issuing-dca") / "smki.db") as connection:
        return connection.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_entries").fetchone()[0]


def _recorded(smki_pki, serial: str) -> int:
    with sqlite3.connect(smki_pki.state("issuing-dca") / "smki.db") as connection:
        return connection.execute("SELECT COUNT(*) FROM certificates WHERE serial_hex = ?", (serial,)).fetchone()[0]


def test_a_group_answers_each_request_on_its_own(smki_pki, tmp_path):
    devices = ["00DB1234567891A1", "00DB1234567891A2"]
    for device in devices:
        smki_pki.device_certificate(device)  # an ad hoc request replaces: each device needs a certificate first
    key = ec.generate_private_key(ec.SECP256R1())
    first = smki_pki.device_csr(devices[0], key).der
    same_key_again = smki_pki.device_csr(devices[1], key).der  # the group's first request certifies this key: CR:9999
    no_certificate_yet = smki_pki.device_csr("00DB1234567891A9").der
    good_ka = smki_pki.device_csr(devices[1], usage="KA").der
    before = _last_seq(smki_pki)

    answers = smki_pki.issuing_dca.issue_devices(
        [DeviceCsr(first, "supplier"), DeviceCsr(same_key_again, "supplier"), DeviceCsr(no_certificate_yet, "supplier"),
         DeviceCsr(b"not a request", "supplier"), DeviceCsr(good_ka, "supplier", out=tmp_path / "ka.pem")])

    issued, duplicate, unknown, garbage, ka = answers
    assert isinstance(duplicate, RequestRejected) and "CR:9999" in str(duplicate)
    assert isinstance(unknown, PolicyRefusal) and "single_request_requires_existing" in str(unknown)
    assert isinstance(garbage, BadInputError)
    assert _recorded(smki_pki, issued.serial_hex) == 1 and _recorded(smki_pki, ka.serial_hex) == 1
    assert _entries_after(smki_pki, before) == [("certificate.issue.device", outcome)
                                                for outcome in ("success", "refused", "refused", "refused", "success")]
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in (smki_pki.root_dca_certificate, smki_pki.issuing_dca_certificate)))
    for answer in (issued, ka):
        leaf = tmp_path / f"{answer.serial_hex}.pem"
        leaf.write_bytes(answer.certificate.public_bytes(Encoding.PEM))
        checked = openssl("verify", "-CAfile", str(chain), str(leaf))
        assert checked.returncode == 0, checked.stderr
        assert not smki_pki.lint(answer.certificate)
    assert (tmp_path / "ka.pem").read_bytes() == ka.certificate.public_bytes(Encoding.PEM)
    assert "Key Agreement" in openssl("x509", "-in", str(tmp_path / "ka.pem"), "-noout", "-text").stdout.decode()


def test_a_group_fault_answers_every_request_and_issues_nothing(smki_pki, tmp_path):
    from smki.issuing import IssuingAuthority
    from smki.testing import Hierarchy

    smki_pki.device_certificate("00DB1234567891B1")
    # The Issuing DCA's state, but no environment given: a fault of the group, not of a request.
    dca = IssuingAuthority(smki_pki.state("issuing-dca"), certificate=smki_pki.issuing_dca_certificate,
                           key=smki_pki._cas[Hierarchy.DEVICE].issuing_key, policy=smki_pki.policy_file("device"))
    before = _last_seq(smki_pki)
    with dca:
        answers = dca.issue_devices([DeviceCsr(smki_pki.device_csr("00DB1234567891B1").der, "supplier")] * 2)
    assert all(isinstance(answer, BadInputError) and "environment" in str(answer) for answer in answers)
    assert _entries_after(smki_pki, before) == [("certificate.issue.device", "refused")] * 2


def test_requests_arriving_while_the_actor_thread_is_busy_go_as_one_group():
    from aiohttp import web

    from smki.web.coalesce import Coalescer
    from smki.web.context import EXECUTOR, single_thread_executor

    groups: list[list[int]] = []
    release = threading.Event()

    def handle(items):
        groups.append(list(items))
        if len(groups) == 1:
            release.wait(5)  # the first group holds the actor thread while the others arrive
        return [ValueError(item) if item == 3 else item * 10 for item in items]

    async def scenario():
        app = web.Application()
        app[EXECUTOR] = single_thread_executor()
        coalescer = Coalescer(app, handle)
        first = asyncio.ensure_future(coalescer.submit(0))
        await asyncio.sleep(0.05)
        others = [asyncio.ensure_future(coalescer.submit(item)) for item in (1, 2, 3, 4)]
        await asyncio.sleep(0.05)
        release.set()
        answers = await asyncio.gather(first, *others)
        started = time.perf_counter()
        alone = await coalescer.submit(5)  # idle again: sent at once, no timer
        app[EXECUTOR].shutdown()
        return answers, alone, time.perf_counter() - started

    answers, alone, seconds = asyncio.run(scenario())
    assert groups == [[0], [1, 2, 3, 4], [5]]
    assert answers[:3] == [0, 10, 20] and isinstance(answers[3], ValueError) and answers[4] == 40
    assert alone == 50 and seconds < 1


def test_a_failed_group_call_answers_each_of_its_requests_with_the_failure():
    from aiohttp import web

    from smki.web.coalesce import Coalescer
    from smki.web.context import EXECUTOR, single_thread_executor

    def broken(items):
        raise RuntimeError("the store went away")

    async def scenario():
        app = web.Application()
        app[EXECUTOR] = single_thread_executor()
        coalescer = Coalescer(app, broken)
        results = await asyncio.gather(*(coalescer.submit(item) for item in range(3)), return_exceptions=True)
        app[EXECUTOR].shutdown()
        return results

    assert [str(result) for result in asyncio.run(scenario())] == ["the store went away"] * 3


def test_a_coalescer_needs_room_for_one_request():
    from aiohttp import web

    from smki.web.coalesce import Coalescer

    with pytest.raises(ValueError):
        Coalescer(web.Application(), lambda items: items, max_group=0)
