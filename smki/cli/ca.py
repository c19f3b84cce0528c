"""`smki ca`: the Issuing Authorities' daily work: certificates from PKCS#10 requests,
revocation, the Organisation CRL (and a root's ARL), and the records."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import click
from cryptography.hazmat.primitives.serialization import Encoding

from smki.audit.trail import AuditEntry
from smki.cli.cert import Issuance, signing_options
from smki.profiles.files import read_certificate
from smki.cli.common import AuditedOperation, emit, json_option, key_options, key_ref_from_options, module_option, pin_source_option, state_option, SERIAL
from smki.errors import BadInputError
from smki.files import MAX_CSR_BYTES, read_input, refuse_existing, write_new_file
from smki.hsm.signer import open_signer
from smki.identifiers import DeviceType, RemotePartyRole
from smki.policy import PolicyRefusal, load_policy
from smki.policy.adoption import adoption_differences, require_adopted
from smki.profiles import device_certificate, organisation_certificate
from smki.profiles.crl import RevokedEntry, build_crl
from smki.profiles.describe import describe
from smki.requests import parse_device_request, parse_organisation_request
from smki.store import find_certificate, list_certificates, open_database
from smki.store.database import transaction
from smki.store.reconcile import StateChange, differences, issuers, reconcile_issuer
from smki.store.revocations import next_crl_number, record_revocation, revoked_entries


@click.group("ca")
def ca_group() -> None:
    """Issuing Authority operations: issue from CSRs, revoke, issue the CRL, show and list records."""


@ca_group.command("issue-org")
@signing_options
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The Issuing OCA's certificate.")
@click.option("--requester", required=True, help="The requesting party's role, checked for eligibility (4.1).")
@click.argument("csr", type=click.Path(dir_okay=False, path_type=Path))
def issue_org_command(csr, **options):
    """One Organisation Certificate from one PKCS#10 request (any SMKI encoding), under the adopted policy.

    The request's signature (proof of possession) and fields are checked; its role, EUI-64,
    optional CN and key usage become the certificate's.
    """
    with Issuance(options, "certificate.issue.organisation") as issuance:
        request = parse_organisation_request(read_input(csr, MAX_CSR_BYTES), str(csr))
        issuance.operation.subject = {"request": str(csr), "entity_id": request.entity_id.hex, "role": request.role.ou}
        params = issuance.policy.organisation_certificate_params(
            issuance.environment, requester=RemotePartyRole.parse(options["requester"]), role=request.role, entity_id=request.entity_id,
            key_usage=request.key_usage, common_name=request.common_name, not_before=issuance.not_before)
        issuer = read_certificate(options["issuer_cert"])
        issuance.sign("organisation", lambda _: organisation_certificate(params, request.public_key, issuer), issuer, request.request_sha256)


@ca_group.command("issue-device")
@signing_options
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The Issuing DCA's certificate.")
@click.option("--requester", required=True, help="The requesting party's role, checked for eligibility (4.1).")
@click.option("--device-type", required=True, help="GSME, ESME, CHF, GPF, HCALCS, PPMID or TYPE2 (never inferred from the EUI-64).")
@click.argument("csr", type=click.Path(dir_okay=False, path_type=Path))
def issue_device_command(csr, **options):
    """One Device Certificate from one PKCS#10 request: an ad hoc request replaces, so the device must
    already hold a certificate from this authority (policy 4.2), and stays under the per-device cap."""
    with Issuance(options, "certificate.issue.device") as issuance:
        request = parse_device_request(read_input(csr, MAX_CSR_BYTES), str(csr))
        issuance.operation.subject = {"request": str(csr), "device_id": request.device_id.hex}
        device_type = DeviceType.parse(options["device_type"])
        expected_hw_type = issuance.policy.hw_type_oid(issuance.environment, device_type)
        if request.hw_type_oid != expected_hw_type:
            raise PolicyRefusal("7.1 device types", f"the request's hwType {request.hw_type_oid} is not the {device_type.name} hwType {expected_hw_type}")
        existing = len(list_certificates(issuance.operation.connection, certificate_type="device", entity_id=request.device_id.hex))
        params = issuance.policy.device_certificate_params(
            issuance.environment, requester=RemotePartyRole.parse(options["requester"]), device_id=request.device_id,
            device_type=device_type, key_usage=request.key_usage, not_before=issuance.not_before,
            existing_certificates=existing, single_request=True)
        issuer = read_certificate(options["issuer_cert"])
        issuance.sign("device", lambda _: device_certificate(params, request.public_key, issuer), issuer, request.request_sha256)


def _policy_options(func):
    func = click.option("--policy", "policy_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                        help="The adopted Certificate Policy file.")(func)
    return state_option(func)


@ca_group.command("revoke")
@_policy_options
@click.argument("serial", type=SERIAL)
@click.option("--reason", required=True, help="RFC 5280 reason, as the policy allows (e.g. keyCompromise).")
@json_option
def revoke_command(serial, reason, policy_file, state_dir, actor, audit_key_uri, audit_pin_source, as_json):
    """Revoke a certificate this authority issued, as the policy says (CRL entry, ARL entry or status R)."""
    _revoke(serial, reason, policy_file, state_dir, actor, audit_key_uri, audit_pin_source, as_json, "certificate.revoke")


@ca_group.command("reject")
@_policy_options
@click.argument("serial", type=SERIAL)
@json_option
def reject_command(serial, policy_file, state_dir, actor, audit_key_uri, audit_pin_source, as_json):
    """The subscriber rejected this certificate when it was issued: where the policy says so
    (revocation.revoke_on_rejection) it is revoked at once, reason unspecified, onto the next CRL.
    Refused (exit 1) under a policy without that rule."""
    _revoke(serial, "unspecified", policy_file, state_dir, actor, audit_key_uri, audit_pin_source, as_json, "certificate.reject")


def _revoke(serial, reason, policy_file, state_dir, actor, audit_key_uri, audit_pin_source, as_json, operation_name):
    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, operation_name) as operation:
        operation.subject = {"serial": serial.upper(), "reason": reason}
        policy = load_policy(policy_file)
        require_adopted(operation.connection, policy)
        if operation_name == "certificate.reject" and not policy.revoke_on_rejection:
            raise PolicyRefusal("4.9 revoke_on_rejection", f"this {policy.kind} policy does not revoke rejected certificates")
        records = find_certificate(operation.connection, serial)
        if not records:
            raise BadInputError(f"no certificate with serial {serial} in this authority's records")
        record = records[0]
        method = policy.check_revocation(record.certificate_type, reason)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        with transaction(operation.connection):
            reconcile_issuer(operation.connection, record.issuer_key_id)  # a revocation builds on the issuer's state: it must be the audited one
            record_revocation(operation.connection, record.issuer_key_id, record.serial_hex, now, reason)
            operation.audit.append(AuditEntry(actor, operation_name, "success",
                                              {**operation.subject, "type": record.certificate_type, "method": method},
                                              StateChange().revoke(record.issuer_key_id, record.serial_hex, now.isoformat(), reason).details(),
                                              policy=policy.identity))
        emit(as_json, {"serial": record.serial_hex, "reason": reason, "method": method, "revoked_at": now.isoformat()},
             lambda d: f"revoked {d['serial']} ({d['reason']}): {'on the next ' + d['method'].upper() if d['method'] in ('crl', 'arl') else 'repository status R'}")


@ca_group.command("crl")
@module_option()
@key_options
@pin_source_option()
@_policy_options
@click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="This authority's certificate (Issuing OCA, or a root for its ARL).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PEM file (never overwritten).")
@json_option
def crl_command(module_path, key_uri, token_label, key_label, key_id, pin_source, policy_file, state_dir, actor, audit_key_uri,
                audit_pin_source, issuer_cert, out, as_json):
    """Issue the CRL (an Issuing OCA) or ARL (a root): every revocation recorded, a persisted strictly
    increasing cRLNumber, nextUpdate from the policy, signed in the HSM."""
    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, "crl.issue") as operation:
        refuse_existing(out)
        policy = load_policy(policy_file)
        require_adopted(operation.connection, policy)
        issuer = read_certificate(issuer_cert)
        facts = describe(issuer)
        list_type = "arl" if facts.certificate_type == "root" else "crl"
        operation.operation = f"{list_type}.issue"
        issuer_key_id = facts.subject_key_id.hex().upper()
        signer = open_signer(key_ref_from_options(module_path, key_uri, token_label, key_label, key_id), pin_source)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        with transaction(operation.connection):  # the write lock from here: the state checked is the state signed
            reconcile_issuer(operation.connection, issuer_key_id)
            entries = [RevokedEntry(int(serial, 16), datetime.fromisoformat(at), reason)
                       for serial, at, reason in revoked_entries(operation.connection, issuer_key_id)]
            number = next_crl_number(operation.connection, issuer_key_id, now)
            crl = build_crl(issuer, signer, crl_number=number, this_update_utc=now, next_update_utc=policy.next_update(list_type, now), entries=entries)
            operation.subject = {"issuer_key_id": issuer_key_id, "crl_number": number, "entries": len(entries), "file": str(out)}
            operation.audit.append(AuditEntry(actor, operation.operation, "success", operation.subject,
                                              StateChange().crl(issuer_key_id, number).details(), policy=policy.identity))
        write_new_file(out, crl.public_bytes(Encoding.PEM))
        emit(as_json, {**operation.subject, "type": list_type, "next_update": crl.next_update_utc.isoformat()},
             lambda d: f"wrote {d['file']}: {d['type'].upper()} number {d['crl_number']}, {d['entries']} entries, next update {d['next_update']}")


read_state_option = click.option("--state", "state_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                                 help="The authority's state directory.")


@ca_group.command("show")
@read_state_option
@click.argument("serial", type=SERIAL)
@json_option
def show_command(serial, state_dir, as_json):
    """One issued certificate's record: status, request digest, policy that allowed it."""
    records = find_certificate(open_database(Path(state_dir) / "smki.db", read_only=True), serial)
    if not records:
        raise BadInputError(f"no certificate with serial {serial} in this authority's records")
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
    from smki.identifiers import EUI64
    records = list_certificates(open_database(Path(state_dir) / "smki.db", read_only=True), certificate_type=certificate_type, status=status,
                                entity_id=EUI64.parse(entity_id).hex if entity_id else None, limit=limit)
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
@json_option
@click.argument("batch", type=click.Path(path_type=Path))
def issue_batch_command(batch, module_path, key_uri, token_label, key_label, key_id, pin_source, policy_file, state_dir, actor,
                        audit_key_uri, audit_pin_source, environment, issuer_cert, requester, device_type, response_zip, status_csv,
                        not_before, workers, chunk_size, verify_one_in, as_json):
    """Device Certificates for a batch: a ZIP (or directory) of up to 50,000 `.csr` files.

    Batch-level faults (not a ZIP, too many or no entries, paths, non-.csr entries, a zip bomb,
    an ineligible requester) refuse the whole batch with nothing issued. Each request is then
    answered on its own: success, error (FM:/CR: code), ineligible (IN:) or anomaly (CA:),
    including the per-device cap and duplicates within the batch and against the store.
    Every certificate is recorded before it reaches the response, which appears only once the
    whole run is durable. Running the same batch
    again (after a crash, say) answers only what is left and writes the whole response.
    Exit 0 when every request has an answer, whatever the answers.
    """
    from smki.issuing.batch_issuance import BatchPlan, BatchWorkers, batch_template, issue_batch
    from smki.profiles.files import parse_utc
    from smki.cli.common import progress
    from smki.hsm.signer import signer_for
    from smki.policy import Environment
    from smki.profiles.validity import utc_midnight
    from smki.requests.batch import BatchResponse, open_batch

    refuse_same_file({"--response": response_zip, "--status": status_csv, "the batch": batch})
    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, "certificate.issue.device.batch") as operation:
        operation.subject = {"batch": str(batch)}
        refuse_existing(response_zip)
        refuse_existing(status_csv)
        policy = load_policy(policy_file)
        require_adopted(operation.connection, policy)
        issuer = read_certificate(issuer_cert)
        key = key_ref_from_options(module_path, key_uri, token_label, key_label, key_id)
        checked_environment, checked_requester, checked_type = Environment.parse(environment), RemotePartyRole.parse(requester), DeviceType.parse(device_type)
        start = parse_utc(not_before, "--not-before") if not_before else utc_midnight(datetime.now(timezone.utc))
        template = batch_template(issuer, policy, checked_environment, start)
        pin = pin_source.read(f"user PIN for token {key.token_label}")
        if signer_for(key, pin).public_key.public_numbers() != issuer.public_key().public_numbers():
            raise BadInputError(f"HSM key {key.key_label!r} on token {key.token_label!r} does not match the issuer certificate's public key")
        with BatchWorkers(key, pin, template, workers, verify_one_in) as batch_workers:  # they start while the batch is read
            checked_batch = open_batch(batch, policy.batch_limit)
            operation.subject["batch_id"] = checked_batch.batch_id
            plan = BatchPlan(checked_batch, issuer, policy, checked_environment, checked_requester, checked_type, start, chunk_size=chunk_size)
            issuer_key_id = describe(issuer).subject_key_id.hex().upper()
            with BatchResponse(response_zip, status_csv) as response, progress(None, len(checked_batch.names), "issuing") as bar:
                summary = issue_batch(operation.connection, operation.audit, actor, plan, batch_workers, issuer_key_id,
                                      progress=getattr(bar, "update", lambda n: None),
                                      answer=lambda o, der: response.add(o.device_id, o.name, o.status, o.code, o.detail, o.serial_hex, der))
        totals = response.counts
    result = {**summary.as_dict(), "totals": dict(sorted(totals.items())), "response": str(response_zip), "status": str(status_csv)}
    emit(as_json, result, lambda d: (
        f"batch {d['batch_id'][:16]}: {d['entries']} requests, {d['issued']} issued in this run ({d['certificates_per_second'] or 0}/s), "
        f"{d['answered_before']} answered before; all answers: {', '.join(f'{k} {v}' for k, v in d['totals'].items())}\n"
        f"wrote {d['response']} and {d['status']}"))


def refuse_same_file(paths: dict[str, Path]) -> None:
    """Refused (exit 3) before anything is opened or issued when two of `paths` name one file:
    outputs written over each other (or over the input) would lose one of them after the work is done."""
    seen: dict[tuple, str] = {}
    for what, path in paths.items():
        identity = _file_identity(Path(path))
        if identity in seen:
            raise BadInputError(f"{seen[identity]} and {what} name the same file; give each its own")
        seen[identity] = what


def _file_identity(path: Path) -> tuple:
    """(device, inode) of an existing file (so links and hard links are the same), else its resolved path."""
    try:
        info = path.stat()
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


@ca_group.command("reconcile")
@read_state_option
@json_option
def reconcile_command(state_dir, as_json):
    """Check, issuer by issuer, that the state tables agree with what the audit trail records (read-only),
    and that each adopted policy is the one the trail's last adoption of its kind records.

    The same checks run before every CRL, ARL and revocation (the policy's before every issuance too).
    Exit 0 when they agree, 1 when not.
    """
    connection = open_database(Path(state_dir) / "smki.db", read_only=True)
    found = {issuer_key_id: differences(connection, issuer_key_id) for issuer_key_id in issuers(connection)}
    policies = adoption_differences(connection)
    emit(as_json, {"agree": not any(found.values()) and not policies, "issuers": found, "policies": policies}, lambda d: "\n".join([
        *(f"issuer {issuer}: " + ("state agrees with the audit trail" if not problems else "DIFFERS: " + "; ".join(problems))
          for issuer, problems in d["issuers"].items()),
        *(f"policy {kind}: DIFFERS: {problem}" for kind, problem in d["policies"].items())]) or "no issuer in this state")
    if any(found.values()) or policies:
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
    from smki.issuing.state_adoption import OPERATION, adopt_legacy_state

    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, OPERATION) as operation:
        adopted = adopt_legacy_state(operation.audit, actor)
    emit(as_json, adopted, lambda d: "\n".join(
        f"adopted issuer {issuer}: {facts['issued']} certificates, {facts['revoked']} revocations, last cRLNumber {facts['crl_number']}"
        for issuer, facts in d.items()) or "nothing to adopt: the state names no issuer")
