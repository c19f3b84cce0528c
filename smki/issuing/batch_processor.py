"""One processor of the batch queue: claim a batch, move it one stage on (or through to COMPLETED), let it go.

Used by `IssuingAuthority.process_batches`. Every status change is an audited operation of the
authority, made only while this processor holds the batch's lease (else `LeaseLost`: another processor
took it over, and this one stops). A batch's processing is `IssuingAuthority.issue_batch` on the file
made from the stored upload, so a takeover resumes the run: only what is left is answered, with no
duplicate serial (an answer is recorded once per request: the batch's entries are keyed by name).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from smki.errors import SmkiError
from smki.issuing.batch_issuance import ProcessingPaused
from smki.issuing.queued_batches import LeaseLost, processing_directory, read_file, sha256_hex
from smki.operations.names import Operation
from smki.requests.batch import open_batch
from smki.store.batch_queue import (BatchStatus, QueuedBatch, batch_upload, change_status, claim_batch, queued_batch, release_lease,
                                    processing_state, renew_lease, store_response, timestamp)
from smki.store.database import transaction
from smki.times import precise_now

if TYPE_CHECKING:
    from smki.issuing.authority import IssuingAuthority

log = logging.getLogger(__name__)

# Claimed in the processing window: every approved, unfinished batch. Outside it: those still to be parsed or
# paused (PAUSED ones wait for the window, so that a processor outside it does not claim them again and again).
_IN_WINDOW = (BatchStatus.PARSING, BatchStatus.QUEUED, BatchStatus.PROCESSING, BatchStatus.PAUSED)
_OUTSIDE_WINDOW = (BatchStatus.PARSING, BatchStatus.QUEUED, BatchStatus.PROCESSING)


class BatchProcessor:
    # How often a running batch looks whether the operator paused the processing (a read of one row).
    pause_check_seconds = 0.5

    def __init__(self, authority: IssuingAuthority, owner: str, lease_seconds: float, workers: int | None, chunk_size: int = 1000) -> None:
        if lease_seconds <= 0:
            raise ValueError("a lease lasts a positive number of seconds")
        self.authority, self.owner, self.lease, self.workers = authority, owner, timedelta(seconds=lease_seconds), workers
        self.chunk_size = chunk_size

    @property
    def connection(self):
        return self.authority._writable()

    def next(self) -> bool:
        """Claim one batch and move it on; False when there was none to claim."""
        if self._paused():  # the operator paused the processing: nothing new is claimed, here or on any other host
            return False
        rules = self.authority._loaded_policy().usage_rules
        now = precise_now()
        in_window = rules.in_batch_window(now)
        with transaction(self.connection):
            batch = claim_batch(self.connection, self.owner, timestamp(now), timestamp(now + self.lease),
                                _IN_WINDOW if in_window else _OUTSIDE_WINDOW)
        if batch is None:
            return False
        log.info("batch %d: claimed by %s (%s)", batch.number, self.owner, batch.status.value)
        try:
            self._work(batch, in_window)
        except LeaseLost as lost:
            log.warning("batch %d: %s", batch.number, lost)
            return True
        except SmkiError as error:  # left claimed until the lease runs out: tried again then, here or elsewhere
            log.error("batch %d: not processed now (%s); tried again once its lease runs out", batch.number, error)
            return True
        with transaction(self.connection):
            release_lease(self.connection, batch.number, self.owner)
        return True

    def _work(self, batch: QueuedBatch, in_window: bool) -> None:
        upload = batch_upload(self.connection, batch.number)
        if upload is None or sha256_hex(upload) != batch.upload_sha256:
            self._step(Operation.BATCH_PARSE, batch, BatchStatus.TAMPERED, reason="the stored upload no longer matches its SHA-256",
                       finished_at=timestamp(precise_now()))
            return
        with processing_directory(upload, batch.number) as (directory, path, digest):
            if batch.status is BatchStatus.PARSING:
                open_batch(path, self.authority.batch_limit)  # every batch-level check again, on the file processed
                batch = self._step(Operation.BATCH_PARSE, batch, BatchStatus.QUEUED, batch_id=digest)
            elif batch.batch_id != digest:
                self._step(Operation.BATCH_PARSE, batch, BatchStatus.TAMPERED, reason="the batch is no longer the one parsed",
                           finished_at=timestamp(precise_now()))
                return
            if not in_window:
                if batch.status is not BatchStatus.PAUSED:
                    self._step(Operation.BATCH_PAUSE, batch, BatchStatus.PAUSED)
                return
            if batch.status is not BatchStatus.PROCESSING:
                batch = self._step(Operation.BATCH_PROCESS, batch, BatchStatus.PROCESSING)
            response, status = directory / "response.zip", directory / "status.csv"
            try:
                result = self.authority.issue_batch(path, response=response, status=status, requester=batch.requester,
                                                    device_type=None, workers=self.workers, chunk_size=self.chunk_size,
                                                    progress=self._renewer(batch.number))
            except ProcessingPaused:  # stopped at a chunk boundary; resumed where it stopped once the processing is resumed
                self._step(Operation.BATCH_PAUSE, batch, BatchStatus.PAUSED)
                return
            self._complete(batch, read_file(response), read_file(status), result.totals)

    def _step(self, name: Operation, batch: QueuedBatch, status: BatchStatus, **columns: str | None) -> QueuedBatch:
        """Move the batch from its status to `status` (audited), as long as this processor holds it."""
        with self.authority._operation(name, batch=batch.number, subscriber=batch.subscriber) as operation:
            with transaction(self.connection):
                if not change_status(self.connection, batch.number, status, allowed_from=(batch.status,), owner=self.owner, **columns):
                    raise LeaseLost(f"batch {batch.number} is no longer held by {self.owner} in status {batch.status.value}")
                operation.audit.append(operation.success_entry({"from": batch.status.value, "status": status.value,
                                                                **{k: v for k, v in columns.items() if k in ("reason", "batch_id")}}))
                moved = queued_batch(self.connection, batch.number)
        log.info("batch %d: %s -> %s", batch.number, batch.status.value, status.value)
        return moved

    def _complete(self, batch: QueuedBatch, response_zip: bytes, status_file: bytes, totals: dict[str, int]) -> None:
        with self.authority._operation(Operation.BATCH_COMPLETE, batch=batch.number, subscriber=batch.subscriber) as operation:
            with transaction(self.connection):
                if not store_response(self.connection, batch.number, self.owner, response_zip, status_file, timestamp(precise_now())):
                    raise LeaseLost(f"batch {batch.number} is no longer held by {self.owner}: its answers were kept by its new holder")
                operation.audit.append(operation.success_entry({"status": BatchStatus.COMPLETED.value, "totals": dict(sorted(totals.items())),
                                                                "response_sha256": sha256_hex(response_zip)}))
        log.info("batch %d: COMPLETED (%s)", batch.number, ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))

    def _paused(self) -> bool:
        return processing_state(self.connection).paused

    def _renewer(self, number: int):
        """The batch run's progress callback: renews the lease every third of its length (LeaseLost once another holds
        it), and raises ProcessingPaused once the operator paused the processing (looked at every pause_check_seconds)."""
        every = self.lease.total_seconds() / 3
        renewed, looked = [time.monotonic()], [float("-inf")]

        def renew(answered: int, total: int) -> None:
            if time.monotonic() - renewed[0] >= every:
                with transaction(self.connection):
                    if not renew_lease(self.connection, number, self.owner, timestamp(precise_now() + self.lease)):
                        raise LeaseLost(f"batch {number}: its lease ran out and another processor holds it now")
                renewed[0] = time.monotonic()
            if time.monotonic() - looked[0] >= self.pause_check_seconds:
                looked[0] = time.monotonic()
                if self._paused():
                    raise ProcessingPaused(f"batch {number}: the processing was paused; it stops at this chunk's end")

        return renew
