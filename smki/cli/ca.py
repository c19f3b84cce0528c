"""`smki ca`: the Issuing Authorities' daily work: certificates from PKCS#10 requests,
revocation, the Organisation CRL (and a root's ARL), and the records."""

from __future__ import annotations

import os
from pathlib import Path

import click

from smki.cli.configured import ConfiguredGroup
from smki.cli.cert import dry_run_option, emit_issued, issuing_authority, signing_options
from smki.cli.common import POLICY, POLICY_HELP, SERIAL, emit, json_option, key_options, module_option, pin_source_option, progress, state_option
from smki.issuing.authority import IssuingAuthority


@click.group("ca", cls=ConfiguredGroup)
def ca_group() -> None:
    """Issuing Authority operations: issue from CSRs, revoke, issue the CRL, show and list records."""


@ca_group.command("issue-org")
@signing_options
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The Issuing OCA's certificate.")
@click.option("--requester", required=True, help="The requesting party's role, checked for eligibility (4.1).")
@dry_run_option
@click.argument("csr", type=click.Path(dir_okay=False, path_type=Path))
def issue_org_command(csr, **options):
    """One Organisation Certificate from one PKCS#10 request (any SMKI encoding), under the adopted policy.

    The request's signature (proof of possession) and fields are checked; its role, EUI-64,
    optional CN and key usage become the certificate's.
    """
    with issuing_authority(options) as authority:
        issued = authority.issue_organisation(csr, requester=options["requester"], not_before=options["not_before"], out=options["out"],
                                              dry_run=options["dry_run"])
    emit_issued(options["as_json"], issued)


@ca_group.command("issue-device")
@signing_options
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The Issuing DCA's certificate.")
@click.option("--requester", required=True, help="The requesting party's role, checked for eligibility (4.1).")
@click.option("--device-type", required=True, help="GSME, ESME, CHF, GPF, HCALCS, PPMID or TYPE2 (never inferred from the EUI-64).")
@dry_run_option
@click.argument("csr", type=click.Path(dir_okay=False, path_type=Path))
def issue_device_command(csr, **options):
    """One Device Certificate from one PKCS#10 request: an ad hoc request replaces, so the device must
    already hold a certificate from this authority (policy 4.2), and stays under the per-device cap."""
    with issuing_authority(options) as authority:
        issued = authority.issue_device(csr, requester=options["requester"], device_type=options["device_type"],
                                        not_before=options["not_before"], out=options["out"], dry_run=options["dry_run"])
    emit_issued(options["as_json"], issued)


def _policy_options(func):
    func = click.option("--policy", "policy_file", required=True, type=POLICY,
                        help=f"The adopted Certificate Policy: {POLICY_HELP}.")(func)
    return state_option(func)


@ca_group.command("revoke")
@_policy_options
@click.argument("serial", type=SERIAL)
@click.option("--reason", required=True, help="RFC 5280 reason, as the policy allows (e.g. keyCompromise).")
@dry_run_option
@json_option
def revoke_command(serial, reason, dry_run, as_json, **options):
    """Revoke a certificate this authority issued, as the policy says (CRL entry, ARL entry or status R)."""
    with issuing_authority(options) as authority:
        _emit_revocation(as_json, authority.revoke(serial, reason, dry_run=dry_run))


@ca_group.command("reject")
@_policy_options
@click.argument("serial", type=SERIAL)
@dry_run_option
@json_option
def reject_command(serial, dry_run, as_json, **options):
    """The subscriber rejected this certificate when it was issued: where the policy says so
    (revocation.revoke_on_rejection) it is revoked at once, reason unspecified, onto the next CRL.
    Refused (exit 1) under a policy without that rule."""
    with issuing_authority(options) as authority:
        _emit_revocation(as_json, authority.reject(serial, dry_run=dry_run))


def _emit_revocation(as_json: bool, revocation) -> None:
    emit(as_json, revocation.summary(), lambda d: (
        f"{'dry run: would revoke' if d.get('dry_run') else 'revoked'} {d['serial']} ({d['reason']}): "
        f"{'on the next ' + d['method'].upper() if d['method'] in ('crl', 'arl') else 'repository status R'}"
        + ("; nothing recorded" if d.get("dry_run") else "")))


@ca_group.command("crl")
@module_option()
@key_options
@pin_source_option()
@_policy_options
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="This authority's certificate (Issuing OCA, or a root for its ARL).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PEM file (never overwritten).")
@json_option
def crl_command(out, as_json, **options):
    """Issue the CRL (an Issuing OCA) or ARL (a root): every revocation recorded, a persisted strictly
    increasing cRLNumber, nextUpdate from the policy, signed in the HSM."""
    with issuing_authority(options) as authority:
        issued = authority.issue_crl(out=out)
    emit(as_json, issued.summary(),
         lambda d: f"wrote {d['file']}: {d['type'].upper()} number {d['crl_number']}, {d['entries']} entries, next update {d['next_update']}")


read_state_option = click.option("--state", "state_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                                 help="The authority's state directory.")


@ca_group.command("show")
@read_state_option
@click.argument("serial", type=SERIAL)
@json_option
def show_command(serial, state_dir, as_json):
    """One issued certificate's record: status, request digest, policy that allowed it."""
    with IssuingAuthority(state_dir) as authority:
        records = authority.show(serial)
    emit(as_json, [r.summary() for r in records], lambda rows: "\n".join("\n".join(f"{k}: {v}" for k, v in r.items()) for r in rows))


@ca_group.command("list")
@read_state_option
@click.option("--type", "certificate_type", type=click.Choice(["root", "issuing-ca", "organisation", "device"]))
@click.option("--status", type=click.Choice(["P", "I", "N", "E", "R"]))
@click.option("--entity-id", help="EUI-64 (hex).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@json_option
def list_command(state_dir, certificate_type, status, entity_id, limit, as_json):
    """Issued certificates, oldest first, filtered."""
    with IssuingAuthority(state_dir) as authority:
        records = authority.list(certificate_type=certificate_type, status=status, entity_id=entity_id, limit=limit)
    emit(as_json, [r.summary() for r in records], lambda rows: "\n".join(
        f"{r['serial_hex']}  {r['certificate_type']:<12} {r['entity_id'] or '-':<16} {r['key_usage'] or '-'} status {r['status']}  policy {r['policy_version']}"
        for r in rows) or "no certificates")


@ca_group.command("issue-batch")
@module_option()
@key_options
@pin_source_option()
@_policy_options
@click.option("--environment", required=True, help="test or production: which OIDs of the policy apply.")
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The Issuing DCA's certificate.")
@click.option("--requester", required=True, help="The requesting party's role, checked for eligibility (4.1).")
@click.option("--device-type", required=True, help="GSME, ESME, CHF, GPF, HCALCS, PPMID or TYPE2: every request's hwType must be its.")
@click.option("--response", "response_zip", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output ZIP of the issued certificates, NAME.crt for each NAME.csr (never overwritten).")
@click.option("--status", "status_csv", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output CSV of per-request status records: identifier, file, status, code, detail, serial (never overwritten).")
@click.option("--not-before", help="Start of validity, ISO 8601 (default: today 00:00:00Z).")
@click.option("--workers", type=click.IntRange(1, 64), default=lambda: os.cpu_count() or 1, show_default="CPU count",
              help="Worker processes, each with its own HSM session.")
@click.option("--chunk-size", type=click.IntRange(1, 5000), default=1000, show_default=True,
              help="Requests per worker task; a transaction records five tasks.")
@click.option("--verify-one-in", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Verify every HSM signature before release (1), or one in N and the first of every chunk.")
@dry_run_option
@json_option
@click.argument("batch", type=click.Path(path_type=Path))
def issue_batch_command(batch, requester, device_type, response_zip, status_csv, not_before, workers, chunk_size, verify_one_in, dry_run,
                        as_json, **options):
    """Device Certificates for a batch: a ZIP (or directory) of up to 50,000 `.csr` files.

    Batch-level faults (not a ZIP, too many or no entries, paths, non-.csr entries, a zip bomb,
    an ineligible requester) refuse the whole batch with nothing issued. Each request is then
    answered on its own: success, error (FM:/CR: code), ineligible (IN:) or anomaly (CA:),
    including the per-device cap and duplicates within the batch and against the store.
    Every certificate is recorded before it reaches the response, which appears only once the
    whole run is durable. Running the same batch
    again (after a crash, say) answers only what is left and writes the whole response.
    Exit 0 when every request has an answer, whatever the answers. With --dry-run, every request
    left is checked and decided in this process (no workers) and the answers counted; neither
    file is written.
    """
    with issuing_authority(options) as authority, _BatchProgress() as bar:
        result = authority.issue_batch(batch, response=response_zip, status=status_csv, requester=requester, device_type=device_type,
                                       not_before=not_before, workers=workers, chunk_size=chunk_size, verify_one_in=verify_one_in,
                                       progress=bar.update, dry_run=dry_run)
    if dry_run:
        emit(as_json, result.summary(), lambda d: (
            f"dry run: batch {d['batch_id'][:16]}: {d['entries']} requests, {d['answered_before']} answered before; this run would answer "
            f"{', '.join(f'{k} {v}' for k, v in d['statuses'].items()) or 'nothing'} (success: certificates it would issue); "
            "nothing signed, recorded or written"))
        return
    emit(as_json, result.summary(), lambda d: (
        f"batch {d['batch_id'][:16]}: {d['entries']} requests, {d['issued']} issued in this run ({d['certificates_per_second'] or 0}/s), "
        f"{d['answered_before']} answered before; all answers: {', '.join(f'{k} {v}' for k, v in d['totals'].items())}\n"
        f"wrote {d['response']} and {d['status']}"))


class _BatchProgress:
    """The batch's progress bar (on a terminal only), made when the authority first reports the batch's size."""

    def __init__(self) -> None:
        self._bar = None
        self._shown = None

    def __enter__(self) -> "_BatchProgress":
        return self

    def update(self, answered: int, total: int) -> None:
        if self._bar is None:
            self._bar = progress(None, total, "issuing")
            self._shown = self._bar.__enter__()
        if hasattr(self._shown, "update"):
            self._shown.update(answered)

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc_info)


@ca_group.command("reconcile")
@read_state_option
@json_option
def reconcile_command(state_dir, as_json):
    """Check, issuer by issuer, that the state tables agree with what the audit trail records (read-only),
    and that each adopted policy is the one the trail's last adoption of its kind records.

    The same checks run before every CRL, ARL and revocation (the policy's before every issuance too).
    Exit 0 when they agree, 1 when not.
    """
    with IssuingAuthority(state_dir) as authority:
        reconciliation = authority.reconcile()
    emit(as_json, reconciliation.summary(), lambda d: "\n".join([
        *(f"issuer {issuer}: " + ("state agrees with the audit trail" if not problems else "DIFFERS: " + "; ".join(problems))
          for issuer, problems in d["issuers"].items()),
        *(f"policy {hierarchy}: DIFFERS: {problem}" for hierarchy, problem in d["policies"].items())]) or "no issuer in this state")
    if not reconciliation.agree:
        raise SystemExit(1)


@ca_group.command("adopt-state")
@state_option
@json_option
def adopt_state_command(state_dir, actor, audit_key_uri, audit_pin_source, as_json):
    """Once, after upgrading from an smki whose audit entries did not record state changes: record the
    state tables as they stand, in entries signed by the audit key, so that CRLs and revocations reconcile.

    Refused (exit 5) on a trail that already records state changes: there the state is checked against
    the trail (`smki ca reconcile`), never adopted. Needs --audit-key-uri.
    """
    with issuing_authority({"state_dir": state_dir, "actor": actor, "audit_key_uri": audit_key_uri,
                            "audit_pin_source": audit_pin_source}) as authority:
        adopted = authority.adopt_state()
    emit(as_json, adopted, lambda d: "\n".join(
        f"adopted issuer {issuer}: {facts['issued']} certificates, {facts['revoked']} revocations, last cRLNumber {facts['crl_number']}"
        for issuer, facts in d.items()) or "nothing to adopt: the state names no issuer")


from smki.cli.batches import batches_group  # noqa: E402  (the group's commands import this module's helpers' module)

ca_group.add_command(batches_group)
