"""`smki ca batches`: the Issuing DCA's queue of batches submitted online (the Batched Device CSR web service
and the portal's ZIP upload): list and show them, the Registration Authority's approve and reject, the
processing loop outside `smki serve`, and the purge of results past the policy's retention period."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click

from smki.cli.cert import issuing_authority
from smki.cli.common import STATE, POLICY, POLICY_HELP, emit, json_option, key_options, module_option, pin_source_option, state_options
from smki.cli.configured import ConfiguredGroup
from smki.store.batch_queue import BatchStatus

STATUSES = click.Choice([status.value for status in BatchStatus], case_sensitive=False)
BATCH_NUMBER = click.IntRange(1, 2**62)


_state = state_options(STATE, "The Issuing DCA's state: a state directory, or its database's postgresql:// URL.")


@click.group("batches", cls=ConfiguredGroup)
def batches_group() -> None:
    """The queue of batches submitted online: list, show, approve, reject, process, pause, resume, purge.

    A batch submitted through the Batched Device CSR web service (or as a portal ZIP) is PENDING
    until the Registration Authority approves it (then PARSING, QUEUED, PROCESSING, COMPLETED; PAUSED
    outside the policy's processing window) or rejects it (REJECTED). A batch whose stored upload no
    longer matches its digest is TAMPERED. The operator may pause the processing of every batch (on
    every processor sharing the state) and resume it. Exit codes: 0 done, 1 refused, 3 bad input (no
    such batch), 5 the batch is no longer PENDING, or the processing is paused (resumed) already.
    """


def _summary(batch) -> str:
    line = (f"batch {batch['batch']:>6}  {batch['status']:<10} {batch['entries']:>6} CSRs  {batch['subscriber']} ({batch['requester']}, "
            f"{batch['channel']})  submitted {batch['submitted_at']}  client ID {batch['client_id']!r}")
    return line + (f"  reason: {batch['reason']}" if batch.get("reason") else "")


@batches_group.command("list")
@_state
@click.option("--status", type=STATUSES, help="Only batches in this status.")
@click.option("--subscriber", help="Only this subscriber's batches (its register name).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@json_option
def list_command(status, subscriber, limit, as_json, **options):
    """Queued batches, newest first (batches purged after the retention period are not listed); while the processing
    is paused, a first line says since when, by whom and why (in --json, each batch's "processing")."""
    with issuing_authority(options) as authority:
        batches = authority.batches(subscriber=subscriber, status=status, limit=limit)
        state = authority.processing_state()
    paused = [_processing_line(state.as_dict())] if state.paused else []  # said first: every open batch waits on it
    emit(as_json, [b.as_dict() for b in batches], lambda rows: "\n".join(paused + [_summary(r) for r in rows]) or "no queued batches")


@batches_group.command("show")
@_state
@click.argument("batch", type=BATCH_NUMBER)
@json_option
def show_command(batch, as_json, **options):
    """One queued batch: who submitted it, its status, the RA's decision."""
    with issuing_authority(options) as authority:
        found = authority.show_batch(batch)
    emit(as_json, found.as_dict(), lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))


@batches_group.command("approve")
@_state
@click.argument("batch", type=BATCH_NUMBER)
@json_option
def approve_command(batch, as_json, **options):
    """The Registration Authority approves a PENDING batch (audited): it is parsed and processed next."""
    with issuing_authority(options) as authority:
        decided = authority.approve_batch(batch)
    emit(as_json, decided.as_dict(), lambda d: f"batch {d['batch']} approved: {d['status']}")


@batches_group.command("reject")
@_state
@click.argument("batch", type=BATCH_NUMBER)
@click.option("--reason", required=True, help="Why (one line, kept and audited).")
@json_option
def reject_command(batch, reason, as_json, **options):
    """The Registration Authority rejects a PENDING batch (audited): it goes no further."""
    with issuing_authority(options) as authority:
        decided = authority.reject_batch(batch, reason)
    emit(as_json, decided.as_dict(), lambda d: f"batch {d['batch']} rejected: {d['reason']}")


@batches_group.command("process")
@module_option()
@key_options
@pin_source_option()
@_state
@click.option("--policy", "policy_file", required=True, type=POLICY, help=f"The adopted Certificate Policy: {POLICY_HELP}.")
@click.option("--environment", required=True, help="test or production: which OIDs of the policy apply.")
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The Issuing DCA's certificate.")
@click.option("--workers", type=click.IntRange(1, 64), default=lambda: os.cpu_count() or 1, show_default="CPU count",
              help="Worker processes per batch, each with its own HSM session.")
@click.option("--chunk-size", type=click.IntRange(1, 5000), default=1000, show_default=True,
              help="Requests per worker task; a transaction records five tasks.")
@click.option("--once", is_flag=True, help="Process what can be processed now, then stop (default: keep polling until SIGTERM or Ctrl-C).")
@click.option("--lease-seconds", type=click.FloatRange(1, 3600), default=60, show_default=True,
              help="How long a claimed batch stays this process's without a renewal; another process takes over a batch whose lease ran out.")
@click.option("--poll-seconds", type=click.FloatRange(0.1, 3600), default=5, show_default=True, help="How often to look for work when there is none.")
@json_option
def process_command(workers, chunk_size, once, lease_seconds, poll_seconds, as_json, **options):
    """Process the approved batches, one at a time, as `smki serve` does in the background: several processes
    (on several hosts, sharing a PostgreSQL store) share the work; each batch is processed once."""
    stopping = []

    def stop_on(signum, frame) -> None:  # finish the current step's transaction, then stop
        stopping.append(signum)

    previous = signal.signal(signal.SIGTERM, stop_on)
    try:
        with issuing_authority(options) as authority:
            moved = authority.process_batches(stop=lambda: bool(stopping), once=once, lease_seconds=lease_seconds,
                                              poll_seconds=poll_seconds, workers=workers, chunk_size=chunk_size)
    finally:
        signal.signal(signal.SIGTERM, previous)
    emit(as_json, {"batches_moved": moved}, lambda d: f"{d['batches_moved']} batch step(s) processed")


def _processing_line(state: dict) -> str:
    if not state["paused"]:
        return "batch processing running" + (f" (resumed {state['since']} by {state['by']})" if state["since"] else "")
    return f"batch processing PAUSED since {state['since']} by {state['by']}: {state['reason']}"


@batches_group.command("pause")
@_state
@click.option("--reason", required=True, help="Why (one line, kept, shown to operators and audited).")
@json_option
def pause_command(reason, as_json, **options):
    """Pause the processing of every queued batch (audited), on every processor sharing this state: nothing new is
    claimed, a batch being processed stops at its next chunk boundary and waits PAUSED, and polls answer PAUSED.
    Exit code 5 when it is paused already."""
    with issuing_authority(options) as authority:
        state = authority.pause_processing(reason)
    emit(as_json, state.as_dict(), _processing_line)


@batches_group.command("resume")
@_state
@json_option
def resume_command(as_json, **options):
    """Resume the processing of the queued batches (audited): paused batches go on where they stopped, with no request
    answered twice and none left out. Exit code 5 when it is not paused."""
    with issuing_authority(options) as authority:
        state = authority.resume_processing()
    emit(as_json, state.as_dict(), _processing_line)


@batches_group.command("purge")
@_state
@click.option("--policy", "policy_file", required=True, type=POLICY, help=f"The adopted Certificate Policy: {POLICY_HELP}.")
@json_option
def purge_command(as_json, **options):
    """Drop the uploads and response files of batches answered longer ago than the policy's retention period (audited)."""
    with issuing_authority(options) as authority:
        purged = authority.purge_batches()
    emit(as_json, {"purged": purged}, lambda d: f"purged {len(d['purged'])} batch(es)" + (f": {', '.join(map(str, d['purged']))}" if d["purged"] else ""))
