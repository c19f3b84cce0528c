"""Batch device issuance: up to 50,000 CSRs in, one certificate or one outcome each, at HSM speed.

The work is a pipeline over a pool of spawned workers. Workers check requests (decoding,
proof of possession) and sign certificates; this process decides what the policy allows
(device type, key usage, the per-device cap, duplicates within the batch and against the
store) and records. Check and sign tasks interleave on the pool so both cores stay busy.

Crash safety: a certificate is recorded, with its request's outcome and an audit entry,
in one transaction per few signed tasks; only recorded answers reach the response, which the
caller releases after the last, fully synchronous commit. A batch is identified by its digest: running it again skips every
request already answered, so a run killed at any moment is finished by the next, with no
duplicate and nothing lost. Certificates signed but not yet recorded when a run dies were
never released; the next run issues those requests afresh with new serials.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509

from smki.audit.trail import AuditEntry, AuditTrail
from smki.issuing.batch_workers import check_requests, in_plain_data, sign_certificates, start_worker, task_result
from smki.errors import BadInputError, ConflictError
from smki.hsm.child_env import result_of, spawn_pool
from smki.hsm.config import KeyRef
from smki.hsm.signer import SoftwareSigner
from smki.hsm.store_lock import token_store_lock
from smki.identifiers import EUI64, CertificateType, DeviceType, RemotePartyRole
from smki.operations.names import Operation
from smki.policy import Environment
from smki.policy.model import CertificatePolicy, DeviceEligibility
from smki.profiles import device_certificate, sign_certificate
from smki.profiles.device_template import DeviceCertificateTemplate, check_against_builder
from smki.profiles.lint import pre_issuance_check
from smki.profiles.serials import new_serial_numbers, serial_hex
from smki.profiles.validity import DEVICE_NOT_AFTER, Validity
from smki.requests.batch import Batch
from smki.requests.outcomes import DUPLICATE_REASON, Outcome
from smki.store.batches import (BatchRow, EntryOutcome, answered_names, answered_statuses, batch_outcomes, deferred_sync, device_certificate_counts, finish_batch,
                                known_subject_keys, record_outcomes, recorded_batch, register_batch)
from smki.store.certificates import CertificateRecord, insert_certificates
from smki.store.database import transaction
from smki.store.reconcile import StateChange

log = logging.getLogger(__name__)
# Progress reaches the log (at INFO) every this many answered requests.
LOG_PROGRESS_EVERY = 5000


class ProcessingPaused(ConflictError):
    """Raised by a run's progress callback when the queue's processing was paused: the run submits no new chunk,
    records every chunk already in flight, and then raises it again (the batch stops at a chunk boundary, with
    nothing signed left unrecorded; a later run answers only what is left)."""


@dataclass(frozen=True)
class BatchPlan:
    """Everything a batch run needs, decided and checked by the caller."""

    batch: Batch
    issuer: x509.Certificate
    policy: CertificatePolicy
    environment: Environment
    requester: RemotePartyRole
    device_type: DeviceType | None  # None: each request's hwType decides
    not_before: datetime
    chunk_size: int = 1000  # requests per worker task
    # Signed tasks recorded per transaction: each commit rewrites the index pages it touched, so
    # fewer, larger ones write less (a 50,000 batch's WAL: 258 MB a task, 100 MB five at a time).
    tasks_per_transaction: int = 5


def batch_template(issuer: x509.Certificate, policy: CertificatePolicy, environment: Environment, not_before: datetime) -> DeviceCertificateTemplate:
    """The DER template every certificate of a batch is written from (proved against the profile by `issue_batch`)."""
    return DeviceCertificateTemplate.for_issuer(issuer, policy.policy_oid(environment), Validity(not_before, DEVICE_NOT_AFTER))


class BatchWorkers:
    """A batch's spawned worker processes, each logged in to the issuing key's token.

    Started before the batch is read, so that their start-up (an interpreter, imports,
    C_Initialize and a login each: about half a second) overlaps the intake. They are stopped
    at once when the block ends (its tasks are answered, or it failed), under the token store's
    lock, so that no worker is killed while SoftHSM rewrites the token file for its login.
    """

    def __init__(self, key: KeyRef, pin: str, template: DeviceCertificateTemplate, count: int, verify_one_in: int = 1) -> None:
        if count < 1 or verify_one_in < 1:
            raise BadInputError("a batch needs at least one worker, and verify-one-in of at least one")
        # verify_one_in: 1 verifies every HSM signature before release; N > 1 one in N and the first of each task.
        self.key, self.template, self.count = key, template, count
        self._initargs = (key, pin, template, verify_one_in)
        self.pool = None

    def __enter__(self) -> "BatchWorkers":
        self.pool = spawn_pool(self.count, start_worker, self._initargs)  # the allowed environment only: no secret but by the pipe
        self._initargs = ()  # the workers have the PIN; this object no longer needs it
        return self

    def __exit__(self, kind, error, traceback) -> None:
        with token_store_lock(self.key.module):
            self.pool.terminate()
        self.pool.join()


@dataclass
class BatchSummary:
    batch_id: str
    entries: int
    answered_before: int = 0  # by an earlier run of the same batch
    statuses: dict[str, int] = field(default_factory=dict)  # this run's outcomes
    seconds: float = 0.0

    @property
    def issued(self) -> int:
        return self.statuses.get("success", 0)

    def as_dict(self) -> dict:
        return {"batch_id": self.batch_id, "entries": self.entries, "answered_before": self.answered_before,
                "statuses": dict(sorted(self.statuses.items())), "issued": self.issued, "seconds": round(self.seconds, 3),
                "certificates_per_second": round(self.issued / self.seconds) if self.seconds else None}


@dataclass(frozen=True)
class _Accepted:
    device_id: str
    subject_key_id: str
    key_usage: str
    request_sha256: str
    serial: int


def prove_template(plan: BatchPlan, template: DeviceCertificateTemplate, eligibility: DeviceEligibility) -> None:
    """Lint a draft of each eligible (hwType, key usage) pair's certificate, and show the template writes exactly that draft."""
    policy_oid = plan.policy.policy_oid(plan.environment)
    lint = pre_issuance_check(CertificateType.DEVICE, (policy_oid,), issuer=plan.issuer)
    throwaway = SoftwareSigner()
    for hw_type, usage in ((hw_type, usage) for hw_type, usages in eligibility.usages for usage in sorted(usages, key=lambda u: u.value)):
        params = plan.policy.device_certificate_params(
            plan.environment, requester=plan.requester, device_id=EUI64.parse("0000000000000000"), device_type=plan.device_type,
            key_usage=usage, not_before=plan.not_before, existing_certificates=0, single_request=False, hw_type_oid=hw_type)
        subject_key = SoftwareSigner().public_key
        draft = sign_certificate(device_certificate(params, subject_key, plan.issuer), throwaway, pre_issuance_check=lint)
        check_against_builder(template, params, subject_key, plan.issuer, draft)


class _Run:
    """One run over a batch: decisions, records and progress in this process."""

    def __init__(self, connection, audit: AuditTrail, actor: str, plan: BatchPlan, issuer_key_id: str,
                 eligibility: DeviceEligibility, summary: BatchSummary, progress: Callable[[int], None], answer: Answer) -> None:
        self.connection, self.audit, self.actor, self.plan = connection, audit, actor, plan
        self.issuer_key_id, self.summary, self.progress, self.answer = issuer_key_id, summary, progress, answer
        self.eligibility = eligibility
        self.validity = Validity(plan.not_before, DEVICE_NOT_AFTER)
        self.device_counts: dict[str, int] = {}
        self.subject_keys_seen: set[str] = set()
        # Waiting for the next transaction: certificates, every outcome (refusals included), DER by request name.
        self.records: list[CertificateRecord] = []
        self.outcomes: list[EntryOutcome] = []
        self.ders: dict[str, bytes] = {}
        self.tasks_pending = 0
        self.transactions = 0
        self.answered = 0  # in this run, for the log's progress lines
        self.paused: ProcessingPaused | None = None  # set by the progress callback: finish what is in flight, then stop

    # -- decisions -------------------------------------------------------------------------------
    def decide(self, parsed: list[tuple]) -> tuple[list[tuple], dict[str, _Accepted]]:
        good = [item for item in parsed if item[1] is not None]
        self._load_counts([item[1] for item in good])
        already_certified = known_subject_keys(self.connection, [item[5] for item in good])
        jobs, accepted, serials = [], {}, iter(new_serial_numbers(len(good)))
        for item in parsed:
            if item[1] is None:
                name, _, outcome_name, reason = item
                self._refuse(name, Outcome[outcome_name], reason)
                continue
            name, device_id, hw_type, usage, point, ski, request_sha256 = item
            refusal = self._refusal(device_id, hw_type, usage, ski, already_certified)
            if refusal is not None:
                self._refuse(name, *refusal, device_id=device_id, request_sha256=request_sha256)
                continue
            self.device_counts[device_id] += 1
            self.subject_keys_seen.add(ski)
            serial = next(serials)
            accepted[name] = _Accepted(device_id, ski, usage, request_sha256, serial)
            jobs.append((name, serial, point, bytes.fromhex(device_id), hw_type, usage))
        return jobs, accepted

    def _load_counts(self, device_ids: list[str]) -> None:
        # A device's count is read from the store once per run; after that this run keeps it,
        # since its own certificates reach the store only later.
        new = [device_id for device_id in set(device_ids) if device_id not in self.device_counts]
        stored = device_certificate_counts(self.connection, new)
        for device_id in new:
            self.device_counts[device_id] = stored.get(device_id, 0)

    def _refusal(self, device_id: str, hw_type: str, usage: str, ski: str, already_certified: set[str]) -> tuple[Outcome, str] | None:
        ineligible = self.eligibility.refusal(hw_type, usage)
        if ineligible is not None:
            return Outcome.INELIGIBLE, ineligible
        if ski in self.subject_keys_seen or ski in already_certified:
            return Outcome.DUPLICATE, DUPLICATE_REASON
        if self.device_counts[device_id] >= self.plan.policy.per_device_cap:
            return Outcome.INELIGIBLE, f"device {device_id} already has {self.device_counts[device_id]} certificates (cap {self.plan.policy.per_device_cap})"
        return None

    def _refuse(self, name: str, outcome: Outcome, reason: str, *, device_id: str | None = None, request_sha256: str | None = None) -> None:
        self.outcomes.append(EntryOutcome(name, outcome.status.value, outcome.code, reason, device_id, None, request_sha256))
        self.answered_more(1)

    def answered_more(self, count: int) -> None:
        """Report `count` more requests answered: to the caller's progress, and every LOG_PROGRESS_EVERY to the log."""
        before, self.answered = self.answered, self.answered + count
        if before // LOG_PROGRESS_EVERY != self.answered // LOG_PROGRESS_EVERY:
            log.info("batch %s: %d of %d requests answered in this run", self.summary.batch_id[:16], self.answered,
                     self.summary.entries - self.summary.answered_before)
        try:
            self.progress(count)
        except ProcessingPaused as paused:
            self.paused = paused

    # -- records ---------------------------------------------------------------------------------
    def record(self, signed: list[tuple[str, bytes]], accepted: dict[str, _Accepted]) -> None:
        """Queue a signed task's certificates and outcomes; every `tasks_per_transaction` tasks, record them."""
        policy = self.plan.policy
        issued_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        not_before, not_after = self.validity.not_before_utc.isoformat(), self.validity.not_after_utc.isoformat()
        for name, der in signed:
            facts = accepted[name]
            serial = serial_hex(facts.serial)
            self.records.append(CertificateRecord(
                serial_hex=serial, issuer_key_id=self.issuer_key_id, certificate_type=CertificateType.DEVICE, subject_key_id=facts.subject_key_id,
                status="I", not_before=not_before, not_after=not_after, der=der, entity_id=facts.device_id, key_usage=facts.key_usage,
                policy_name=policy.name, policy_version=policy.version, policy_sha256=policy.sha256, request_sha256=facts.request_sha256,
                issued_at=issued_at))
            self.outcomes.append(EntryOutcome(name, "success", "SUCCESS", None, facts.device_id, serial, facts.request_sha256))
        self.ders.update(signed)
        self.answered_more(len(signed))
        self.tasks_pending += 1
        if self.tasks_pending >= self.plan.tasks_per_transaction:
            self.flush()

    def flush(self) -> None:
        """One transaction: the queued certificates, every outcome waiting, and one audit entry."""
        records, outcomes, ders = self.records, self.outcomes, self.ders
        if not outcomes:
            return
        serials = [record.serial_hex for record in records]
        subject = {"batch_id": self.summary.batch_id, "transaction": self.transactions, "issued": len(records),
                   "answered": len(outcomes), "serials_sha256": hashlib.sha256(",".join(serials).encode()).hexdigest()}
        with transaction(self.connection):
            insert_certificates(self.connection, records)
            record_outcomes(self.connection, self.summary.batch_id, outcomes)
            self.audit.append(AuditEntry(self.actor, Operation.ISSUE_BATCH, "success", subject, StateChange().issue(self.issuer_key_id, *serials).details(),
                                         policy=self.plan.policy.identity))
        self.records, self.outcomes, self.ders, self.tasks_pending = [], [], {}, 0
        self.transactions += 1
        for outcome in outcomes:  # recorded now; released only when the whole batch is durable
            self.answer(outcome, ders.get(outcome.name))
            self.summary.statuses[outcome.status] = self.summary.statuses.get(outcome.status, 0) + 1

    # -- the pipeline ----------------------------------------------------------------------------
    def run(self, chunks: Iterator[list[str]], workers: BatchWorkers) -> None:
        """Keep a few tasks per worker in flight; answer them in submission order."""
        in_flight: deque = deque()
        limit, pool = 3 * workers.count, workers.pool

        def submit_check() -> None:
            if self.paused is not None:  # no new chunk once paused: the ones in flight are still recorded
                return
            chunk = next(chunks, None)
            if chunk is not None:
                in_flight.append((_Stage.CHECK, pool.apply_async(in_plain_data, (check_requests, self.plan.batch.source, self.plan.batch.batch_id, chunk)), None))

        for _ in range(limit):
            submit_check()
        while in_flight:
            stage, pending, accepted = in_flight.popleft()
            result = task_result(result_of(pool, pending, workers.count))
            if stage is _Stage.CHECK:
                jobs, accepted = self.decide(result)
                if jobs:
                    in_flight.append((_Stage.SIGN, pool.apply_async(in_plain_data, (sign_certificates, jobs)), accepted))
                submit_check()
            else:
                self.record(result, accepted)
        self.flush()
        if self.paused is not None:
            raise self.paused


class _Stage(enum.Enum):
    """What a worker task in flight does: check a chunk of requests, or sign the accepted ones."""

    CHECK = "check"
    SIGN = "sign"


def _chunks(names: tuple[str, ...], skip: set[str], size: int) -> Iterator[list[str]]:
    remaining = [name for name in names if name not in skip]
    for start in range(0, len(remaining), size):
        yield remaining[start:start + size]


# Called with each request's recorded outcome (and certificate DER on success): the response.
Answer = Callable[[EntryOutcome, "bytes | None"], None]


def issue_batch(connection, audit: AuditTrail, actor: str, plan: BatchPlan, workers: BatchWorkers, issuer_key_id: str,
                progress: Callable[[int], None] = lambda answered: None, answer: Answer = lambda outcome, der: None) -> BatchSummary:
    """Answer every request of the batch not answered before, on the started `workers`; return this run's summary.

    Batch-level faults (size, requester, device type, the template) raise before anything is
    issued. `answer` receives every request's outcome once it is
    recorded: first those answered by earlier runs, then this run's, transaction by transaction; the caller
    releases them only after this returns (the last commit makes them all durable).
    """
    started = time.perf_counter()
    eligibility = _batch_checks(plan, workers.template)
    batch_id = plan.batch.batch_id
    row = BatchRow(batch_id, str(plan.batch.source), len(plan.batch.names), issuer_key_id, plan.policy.version,
                   datetime.now(timezone.utc).isoformat(timespec="seconds"), None)
    with transaction(connection):
        recorded = register_batch(connection, row)
        answered = answered_names(connection, batch_id)
        resumed = recorded is not row
        audit.append(AuditEntry(actor, Operation.BATCH_RESUME if resumed else Operation.BATCH_START, "success",
                                {"batch_id": batch_id, "source": str(plan.batch.source), "entries": len(plan.batch.names),
                                 "answered_before": len(answered), "device_type": plan.device_type.name if plan.device_type else None,
                                 "requester": plan.requester.camel_name}, policy=plan.policy.identity))
    summary = BatchSummary(batch_id, len(plan.batch.names), answered_before=len(answered))
    if answered:
        for outcome, der in batch_outcomes(connection, batch_id):
            answer(outcome, der)
    if len(answered) < len(plan.batch.names):
        run = _Run(connection, audit, actor, plan, issuer_key_id, eligibility, summary, progress, answer)
        with deferred_sync(connection):
            run.run(_chunks(plan.batch.names, answered, plan.chunk_size), workers)
    with transaction(connection):  # synchronous again: this commit makes the whole run durable
        finish_batch(connection, batch_id, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        audit.append(AuditEntry(actor, Operation.BATCH_FINISH, "success", {"batch_id": batch_id, "statuses": summary.statuses,
                                                                   "answered_before": summary.answered_before}, policy=plan.policy.identity))
    summary.seconds = time.perf_counter() - started
    log.info("batch %s: %d request(s) answered in this run in %.1f s (%s)", batch_id[:16], sum(summary.statuses.values()), summary.seconds,
             ", ".join(f"{name} {count}" for name, count in sorted(summary.statuses.items())) or "nothing left to answer")
    return summary


def _batch_checks(plan: BatchPlan, template: DeviceCertificateTemplate) -> DeviceEligibility:
    """The checks of the batch as a whole (its size, the requester and device type, the template, linted): the
    hwTypes and key usages its requests may have. A fault here refuses the batch before any request is answered."""
    plan.policy.check_batch_size(len(plan.batch.names))
    eligibility = plan.policy.device_eligibility(plan.environment, plan.requester, plan.device_type)
    if plan.chunk_size < 1:
        raise BadInputError("a batch needs a chunk size of at least one")
    prove_template(plan, template, eligibility)
    log.info("batch %s: %d request(s) from %s; the certificate template lints clean", plan.batch.batch_id[:16], len(plan.batch.names),
             plan.batch.source)
    return eligibility


def check_batch(connection, actor: str, plan: BatchPlan, template: DeviceCertificateTemplate, issuer_key_id: str,
                progress: Callable[[int], None] = lambda answered: None) -> tuple[BatchSummary, dict[str, int]]:
    """A batch's dry run: the batch-level checks, then every request not answered before checked here (decoding,
    proof of possession) and decided as `issue_batch` decides (device type, usage, duplicates, the per-device
    cap), reading the state only. Returns the summary of the answers a run would give now (`statuses`; a
    `success` is a certificate it would issue) and the totals with the earlier runs' answers. Nothing is
    signed, recorded or written; no worker is started."""
    from smki.issuing.batch_workers import check_requests

    started = time.perf_counter()
    eligibility = _batch_checks(plan, template)
    batch_id = plan.batch.batch_id
    recorded_batch(connection, batch_id, issuer_key_id)  # refused as register_batch refuses it: another issuer's batch
    answered = answered_names(connection, batch_id)
    summary = BatchSummary(batch_id, len(plan.batch.names), answered_before=len(answered))
    totals = answered_statuses(connection, batch_id)  # the earlier runs' answers, counted, not read
    run = _Run(connection, None, actor, plan, issuer_key_id, eligibility, summary, progress, answer=lambda outcome, der: None)
    for chunk in _chunks(plan.batch.names, answered, plan.chunk_size):
        jobs, _ = run.decide(check_requests(plan.batch.source, batch_id, chunk))
        run.answered_more(len(jobs))
        would_answer = [outcome.status for outcome in run.outcomes] + ["success"] * len(jobs)
        run.outcomes = []
        for status in would_answer:
            summary.statuses[status] = summary.statuses.get(status, 0) + 1
            totals[status] = totals.get(status, 0) + 1
    summary.seconds = time.perf_counter() - started
    log.info("batch %s: dry run: %s", batch_id[:16], ", ".join(f"{name} {count}" for name, count in sorted(summary.statuses.items()))
             or "nothing left to answer")
    return summary, totals

