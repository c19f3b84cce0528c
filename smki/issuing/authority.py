"""The Issuing Authority as one object: what `smki ca` and `smki cert organisation|device` do,
for every front end.

An `IssuingAuthority` is built from its parts (its state, its certificate and HSM key, the
adopted Certificate Policy and the environment whose OIDs apply) and owns its workflow: each
state-changing method is one audited operation, which applies the policy, lints before signing
and verifies after, records, audits and only then releases. A refusal raises an `SmkiError`
(the same class and message the CLI shows) and leaves a refused audit entry, never a half-written
state. Nothing is opened until a method needs it: the database on first use, the HSM on the first
signature.

Every issuing and revoking method takes `dry_run=True`: a dry run makes every check the real run
makes (the adopted policy, eligibility, the request, the HSM key against the issuer certificate,
the lint of the exact to-be-signed certificate, signed by a throw-away key) on the state opened
read-only, and then stops: nothing is signed with the CA key, written, recorded or audited, no
serial or cRLNumber is consumed; a refusal is the same refusal, recorded nowhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.audit.trail import AuditEntry
from smki.errors import BadInputError, ConflictError, SmkiError
from smki.files import MAX_CSR_BYTES, read_input, refuse_existing, refuse_same_file, write_new_file
from smki.hsm.config import KeyRef
from smki.hsm.pins import PinSource
from smki.hsm.signer import open_signer, require_key_of, signer_for
from smki.identifiers import CertificateType, DeviceType, EUI64, KeyUsage, ListType, RemotePartyRole
from smki.operations.audited import ActorState, AuditedOperation, DryRunOperation, checkpoint, open_audit_trail
from smki.operations.lists import issue_list
from smki.operations.names import Operation
from smki.operations.release import record_and_release, would_issue
from smki.operations.values import parsed, repository_status, serial_text
from smki.operations.results import IssuedCertificate, IssuedCrl, Revocation
from smki.policy import Environment, PolicyRefusal, load_policy
from smki.policy.adoption import adopt, adoption_differences, require_adopted
from smki.policy.model import CertificatePolicy
from smki.policy.usage import DAY, Submitter
from smki.profiles import device_certificate, organisation_certificate, sign_certificate
from smki.profiles.describe import describe
from smki.profiles.device_template import certificate_der, subject_key_identifier
from smki.profiles.serials import new_serial_number, serial_hex
from smki.times import precise_now, start_of_validity, utc_now
from smki.profiles.files import read_certificate, read_public_key
from smki.profiles.lint import pre_issuance_check
from smki.requests import parse_device_request, parse_organisation_request
from smki.requests.outcomes import DUPLICATE_REASON, Outcome, RequestRejected
from smki.profiles.keyids import key_identifier
from smki.store import find_certificate, list_certificates
from smki.issuing.adhoc_issuance import DeviceCsr, ProvenTemplates
from smki.issuing.queued_batches import (MAX_CLIENT_ID, MAX_REASON, BatchAnswer, UnknownBatch, answers_of, checked_text, count_entries,
                                         sha256_hex, upload_of, worker_name)
from smki.store.batch_queue import (BatchStatus, QueuedBatch, adhoc_submissions_since, batched_requests_since, change_status, enqueue_batch,
                                    last_adhoc_submission, open_batch_count, parse_timestamp, parsed_status, purge_adhoc_submissions, purge_finished,
                                    queued_batch, queued_batches, record_adhoc_submission, response_files, timestamp)
from smki.store.batches import device_certificate_counts, known_subject_keys
from smki.store.certificates import CertificateRecord, insert_certificate
from smki.store.database import transaction
from smki.store.reconcile import StateChange, differences, issuers, reconcile_issuer
from smki.store.batch_queue import ProcessingState, processing_state, set_processing
from smki.store.revocations import check_revocable, record_revocation

if TYPE_CHECKING:  # the batch's modules load only when a batch runs
    from smki.issuing.batch_issuance import BatchSummary

log = logging.getLogger(__name__)


# Called as answers are recorded: (requests answered since the last call, requests in the batch).
BatchProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class BatchResult:
    """A batch run: this run's outcomes (`run`), every request's answer (`totals`), and the two files written."""

    run: BatchSummary
    totals: dict[str, int]
    response: Path
    status: Path
    dry_run: bool = False  # checked only: `totals` are the answers a real run would give; neither file written

    def __getattr__(self, name: str):  # batch_id, entries, answered_before, statuses, seconds, issued: the run's
        if name == "run":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.run, name)

    def summary(self) -> dict:
        return {**self.run.as_dict(), "totals": dict(sorted(self.totals.items())), "response": str(self.response),
                "status": str(self.status), **({"dry_run": True} if self.dry_run else {})}


@dataclass(frozen=True)
class Reconciliation:
    """Issuer by issuer, how the state tables differ from the audit trail; per policy kind, how the
    adopted policy differs from the trail's last adoption. Empty everywhere when they agree."""

    issuers: dict[str, list[str]]
    policies: dict[str, str]

    @property
    def agree(self) -> bool:
        return not any(self.issuers.values()) and not self.policies

    def summary(self) -> dict:
        return {"agree": self.agree, "issuers": self.issuers, "policies": self.policies}


@dataclass(frozen=True)
class _Signing:
    """What every signature under the policy needs, checked in the CLI's order before the request is read."""

    policy: CertificatePolicy
    environment: Environment
    key: KeyRef
    not_before: datetime


@dataclass(frozen=True)
class _DeviceGroup:
    """What the requests of one `issue_devices` group share, checked once for the group."""

    audit: Any  # the AuditTrail, in the group's transaction
    signing: _Signing
    device_type: DeviceType | None  # None: each request's hwType decides
    issuer: x509.Certificate
    issuer_key_id: str
    signer: Any  # the HSM key's Signer (each signature verified before it is returned)
    templates: ProvenTemplates


@dataclass(frozen=True)
class _SignedDevice:
    serial: int
    subject_key_id: str
    der: bytes


def _refusal_entry(operation: AuditedOperation, error: BaseException) -> AuditEntry:
    """The entry a refused (SmkiError) or failed request leaves, as `AuditedOperation` writes it."""
    outcome = "refused" if isinstance(error, SmkiError) else "failed"
    reason = str(error) if isinstance(error, SmkiError) else type(error).__name__
    return AuditEntry(operation.actor, operation.operation, outcome, dict(operation.subject), {"reason": reason})


AUTO_APPROVED = "policy"  # who decided a batch its policy approves as it is queued (usage_rules.auto_approved_requesters)


def _is_number(value) -> bool:
    # ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and other scripts' digits (which it reads).
    return isinstance(value, int) and not isinstance(value, bool) or \
        isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18


def _batch_number(value, refusal: type[BadInputError] = BadInputError) -> int:
    """A BatchId: a positive integer (as int or digits)."""
    if not _is_number(value) or int(value) < 1:
        raise refusal(f"a BatchId is a positive integer, not {str(value)[:32]!r}")
    return int(value)


def _require_own_entity(submitter: Submitter | None, entity_id: EUI64) -> None:
    """A party submitting online may request Organisation Certificates only for its own Entity Identifier (its
    register entry's EUI-64): one supplier must not get a certificate naming another. The CLI's operator (no
    submitter) issues for any party, as the Registration Authority does."""
    if submitter is not None and submitter.eui64 is not None and entity_id.hex.upper() != submitter.eui64.upper():
        raise PolicyRefusal("4.1 eligibility", f"the request names Entity Identifier {entity_id}, not the submitting party's own "
                                               f"({EUI64(bytes.fromhex(submitter.eui64))})")


def _device_type(device_type: DeviceType | str | None) -> DeviceType | None:
    """A device type given, checked; None: each request's hwType decides."""
    return None if device_type is None else parsed(DeviceType, device_type)


class IssuingAuthority:
    """An Issuing OCA or Issuing DCA (or, for its ARL, a root) with its state, key and adopted policy.

    One object per thread; any number of objects may share a state (see `smki.operations`).
    """

    def __init__(self, state: Path | str, *, certificate: x509.Certificate | Path | None = None, key: KeyRef | None = None,
                 pin: PinSource | str | None = None, policy: CertificatePolicy | Path | str | None = None,
                 environment: Environment | str | None = None, actor: str = "operator",
                 audit_key: KeyRef | None = None, audit_pin: PinSource | str | None = None) -> None:
        self.state = state
        self.actor = actor
        self._certificate, self._key, self._pin = certificate, key, PinSource.hidden(pin)
        self._policy_given, self._environment_given = policy, environment
        self._audit_key, self._audit_pin = audit_key, PinSource.hidden(audit_pin)
        self._state = ActorState(state)  # opened by the first method that needs it
        self._audit = None
        self._signer = None
        self._policy: CertificatePolicy | None = None
        self._templates: ProvenTemplates | None = None  # ad hoc Device Certificates' proved templates

    # -- context ---------------------------------------------------------------------------------
    def __enter__(self) -> "IssuingAuthority":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._state.close()
        self._audit = self._signer = None

    # -- the parts, opened when first needed -----------------------------------------------------
    def _writable(self, create: bool = False):
        """The state, opened for writing; only adopting a policy starts a new one (every other operation
        needs an adopted policy, so a state that is not there yet is a mistyped one: refused, not made)."""
        return self._state.writable(create=create)

    def _readable(self):
        return self._state.readable()

    def _operation(self, name: str, *, creates_state: bool = False, dry_run: bool = False,
                   **subject: Any) -> AuditedOperation | DryRunOperation:
        """One audited operation on the state (the audit key's anchor checked when the trail is first opened);
        or its dry run, on the state opened read-only, recording nothing."""
        if dry_run:
            return self._state.dry_run(name, self._audit_key, self._audit_pin, subject)
        if self._audit is None:
            self._audit = open_audit_trail(self._writable(create=creates_state), self._audit_key, self._audit_pin)
        return AuditedOperation(self._audit, self.actor, name, subject)

    def _missing(self, what: str, argument: str) -> BadInputError:
        return BadInputError(f"this IssuingAuthority was given no {what}: give {argument}= for this operation")

    def _loaded_policy(self) -> CertificatePolicy:
        if self._policy is None:
            if self._policy_given is None:
                raise self._missing("Certificate Policy", "policy")
            given = self._policy_given
            self._policy = given if isinstance(given, CertificatePolicy) else load_policy(given)
        return self._policy

    def _adopted_policy(self, operation: AuditedOperation) -> CertificatePolicy:
        """The policy given, refused unless it is the one this state has adopted (and its trail records)."""
        policy = self._loaded_policy()
        require_adopted(operation.connection, policy)
        return policy

    def _environment(self) -> Environment:
        if self._environment_given is None:
            raise self._missing("environment", "environment")
        return parsed(Environment, self._environment_given)

    def _key_ref(self) -> KeyRef:
        if self._key is None:
            raise self._missing("HSM key", "key")
        return self._key

    def _issuer(self) -> x509.Certificate:
        if self._certificate is None:
            raise self._missing("certificate of its own", "certificate")
        if not isinstance(self._certificate, x509.Certificate):
            self._certificate = read_certificate(Path(self._certificate))
        return self._certificate

    def _key_name(self) -> str:
        key = self._key_ref()
        return f"HSM key {key.key_label!r} on token {key.token_label!r}"

    def _pin_value(self) -> str:
        """The token's user PIN, read from its source now (the batch's workers log in with it)."""
        key = self._key_ref()
        if isinstance(self._pin, str):
            return self._pin
        return (self._pin or PinSource.parse("prompt")).read(f"user PIN for token {key.token_label}")

    def _signing_key(self, pin: str | None = None):
        """The HSM key's Signer, logged in at the first signature and kept."""
        if self._signer is None:
            key = self._key_ref()
            if pin is not None or isinstance(self._pin, str):
                self._signer = signer_for(key, pin if pin is not None else self._pin)
            else:
                self._signer = open_signer(key, self._pin or PinSource.parse("prompt"))
        return self._signer

    def _signing(self, operation: AuditedOperation, out: Path | None, not_before) -> _Signing:
        environment = self._environment()
        policy = self._adopted_policy(operation)
        key = self._key_ref()
        start = start_of_validity(not_before)
        if out is not None:
            refuse_existing(out)
        return _Signing(policy, environment, key, start)

    def _sign(self, operation: AuditedOperation | DryRunOperation, signing: _Signing, certificate_type: str,
              build: Callable[[], x509.CertificateBuilder], issuer: x509.Certificate, out: Path | None,
              request_sha256: str | None = None) -> IssuedCertificate:
        """Lint the draft, sign with the HSM key (which must be the issuer certificate's), record, audit, release.
        A dry run stops after the lint: the draft is what the HSM key would have signed."""
        signer = self._signing_key()
        require_key_of(signer, issuer, self._key_name())
        lint = pre_issuance_check(certificate_type, (signing.policy.policy_oid(signing.environment),), issuer=issuer)
        file = Path(out) if out is not None else None
        if isinstance(operation, DryRunOperation):
            return would_issue(build(), lint, signing.policy, request_sha256=request_sha256, out=out)
        certificate = sign_certificate(build(), signer, pre_issuance_check=lint)
        record = record_and_release(operation, certificate, signing.policy, request_sha256=request_sha256, out=out)
        log.info("issued %s certificate %s%s", certificate_type, record.serial_hex, f", wrote {file}" if file is not None else "")
        return IssuedCertificate(certificate, record, signing.policy.identity, file)

    def _count_adhoc(self, operation: AuditedOperation | DryRunOperation, policy: CertificatePolicy, submitter: Submitter | None) -> None:
        """The usage rules for one ad hoc request of `submitter`: checked and counted in one write transaction (so
        that processes sharing the store count together); a refused request is not counted. A dry run only checks."""
        if submitter is None:
            return
        operation.subject["submitter"] = {"name": submitter.name, "channel": submitter.channel.value}
        rules, connection = policy.usage_rules, operation.connection
        if not rules.counts_adhoc(submitter.channel):
            return
        now = precise_now()

        def check() -> None:
            last = last_adhoc_submission(connection, submitter.name, submitter.channel.value)
            recent = adhoc_submissions_since(connection, submitter.name, submitter.channel.value, timestamp(now - DAY))
            rules.check_adhoc(submitter, now, parse_timestamp(last) if last else None, recent)

        if isinstance(operation, DryRunOperation):
            return check()
        if connection.in_transaction:  # a group's transaction (issue_devices): counted in it
            check()
            return record_adhoc_submission(connection, submitter.name, submitter.channel.value, timestamp(now))
        with transaction(connection):
            check()
            record_adhoc_submission(connection, submitter.name, submitter.channel.value, timestamp(now))

    @staticmethod
    def _refuse_certified_key(operation: AuditedOperation | DryRunOperation, public_key: ec.EllipticCurvePublicKey) -> None:
        """A key some recorded certificate already certifies is refused (CR:9999), as a batch refuses it."""
        if known_subject_keys(operation.connection, [key_identifier(public_key).hex().upper()]):
            raise RequestRejected(Outcome.DUPLICATE, DUPLICATE_REASON)

    def _device_certificates(self, operation: AuditedOperation, device_id: EUI64) -> int:
        """How many Device Certificates this authority already issued for the device (the per-device cap counts them)."""
        return device_certificate_counts(operation.connection, [device_id.hex]).get(device_id.hex, 0)

    def check_ready(self) -> None:
        """What every issuance needs, checked now rather than at the first request (a service's start): the state and
        its adopted policy (the one given), the environment, the issuer certificate, and the HSM key, logged in, which
        must be that certificate's key. The same SmkiError an issuance would raise, and nothing written."""
        require_adopted(self._writable(create=False), self._loaded_policy())
        self._environment()
        require_key_of(self._signing_key(), self._issuer(), self._key_name())

    # -- policy ----------------------------------------------------------------------------------
    def adopt_policy(self, policy: CertificatePolicy | Path | str) -> dict:
        """Adopt a policy (a file, or `builtin:NAME` for one smki ships): from now on this state issues and revokes only under it."""
        with self._operation(Operation.ADOPT_POLICY, creates_state=True) as operation:
            file = policy.path if isinstance(policy, CertificatePolicy) else policy
            policy = policy if isinstance(policy, CertificatePolicy) else load_policy(policy)
            operation.subject = {"kind": policy.hierarchy, "file": str(file)}
            previous = adopt(operation.connection, policy, self.actor, operation.audit)
        return {**policy.identity, "kind": policy.hierarchy, "replaces": previous and {k: previous[k] for k in ("version", "sha256")}}

    # -- certificates from requests --------------------------------------------------------------
    def issue_organisation(self, csr: bytes | Path, *, requester: RemotePartyRole | str, not_before: datetime | str | None = None,
                           out: Path | None = None, source: str | None = None, dry_run: bool = False,
                           submitter: Submitter | None = None) -> IssuedCertificate:
        """One Organisation Certificate from one PKCS#10 request (any SMKI encoding; a Path is read).

        The request's proof of possession and fields are checked; its role, EUI-64, optional CN and
        key usage become the certificate's; the requester's eligibility is the policy's (4.1).
        `submitter`: who submitted it online (the usage rules apply); None from the CLI.
        """
        with self._operation(Operation.ISSUE_ORGANISATION, dry_run=dry_run) as operation:
            signing = self._signing(operation, out, not_before)
            self._count_adhoc(operation, signing.policy, submitter)
            data, source = self._request(csr, source)
            request = parse_organisation_request(data, source)
            operation.subject.update(request=source, entity_id=request.entity_id.hex, role=request.role.ou)
            _require_own_entity(submitter, request.entity_id)
            params = signing.policy.organisation_certificate_params(
                signing.environment, requester=parsed(RemotePartyRole, requester), role=request.role, entity_id=request.entity_id,
                key_usage=request.key_usage, common_name=request.common_name, not_before=signing.not_before)
            issuer = self._issuer()
            return self._sign(operation, signing, CertificateType.ORGANISATION,
                              lambda: organisation_certificate(params, request.public_key, issuer), issuer, out, request.request_sha256)

    def issue_device(self, csr: bytes | Path, *, requester: RemotePartyRole | str, device_type: DeviceType | str | None = None,
                     not_before: datetime | str | None = None, out: Path | None = None, source: str | None = None,
                     dry_run: bool = False, submitter: Submitter | None = None) -> IssuedCertificate:
        """One Device Certificate from one PKCS#10 request. An ad hoc request replaces: the device must
        already hold a certificate from this authority (policy 4.2) and stays under the per-device cap;
        the request's hwType must be the device type's (7.1), or, with no device type (None), any device
        type's whose key usages allow the request's. `submitter`: who submitted it online (the usage
        rules apply: the web service's interval, the portal's daily cap); None from the CLI.
        A real run is `issue_devices` with a group of one (one code path); a refusal is raised."""
        if dry_run:
            return self._device_dry_run(csr, requester=requester, device_type=device_type, not_before=not_before, out=out,
                                        source=source, submitter=submitter)
        answer, = self.issue_devices([DeviceCsr(csr, requester, submitter, source, out)], device_type=device_type, not_before=not_before)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def issue_devices(self, requests: Iterable[DeviceCsr], *, device_type: DeviceType | str | None = None,
                      not_before: datetime | str | None = None) -> list[IssuedCertificate | Exception]:
        """Ad hoc Device Certificates for a group of requests, in one transaction: one answer per request, in order.

        Each request is decided on its own, as `issue_device` decides it (the usage rules and their counters
        for its submitter, eligibility, hwType and usage, the replacement rule, the per-device cap, a key
        already certified: CR:9999, against the store and the group's earlier requests); a refusal is that
        request's answer (the exception, audited as refused), the others go on. Each certificate is written
        from the batch's device template (proved by a lint of the first certificate of each hwType and
        usage), its HSM signature verified, and recorded with its audit entry in the transaction that makes
        it visible; nothing leaves before that commit. A fault of the group itself (the policy not adopted,
        the key, the store) is every request's answer, and nothing is issued."""
        requests = list(requests)
        audit = self._operation(Operation.ISSUE_DEVICE).audit
        read = [self._read_device_request(request) for request in requests]  # before the write lock: CPU only (proof of possession)
        try:
            with self._state.write_turn(), transaction(audit.connection):
                group = self._device_group(audit, device_type, not_before)
                decided = [self._decide_device(group, request, checked) for request, checked in zip(requests, read)]
        except Exception as fault:  # noqa: BLE001 - the group's fault: every request's answer, each audited
            self._audit_group_fault(audit, requests, fault)
            decided = [fault] * len(requests)
        answers = [self._release_device(group.signing.policy, answer) if isinstance(answer, tuple) else answer for answer in decided]
        if audit.signer is not None and not audit.checkpoint_deferred:
            checkpoint(audit, Operation.ISSUE_DEVICE, anchor=any(isinstance(answer, IssuedCertificate) for answer in answers))
        return answers

    def _device_group(self, audit, device_type, not_before) -> _DeviceGroup:
        """What every request of a group shares, checked once: the adopted policy, the environment, the key, the issuer."""
        operation = AuditedOperation(audit, self.actor, Operation.ISSUE_DEVICE)
        signing = self._signing(operation, None, not_before)
        issuer = self._issuer()
        signer = self._signing_key()
        require_key_of(signer, issuer, self._key_name())
        if self._templates is None or self._templates.issuer is not issuer:
            self._templates = ProvenTemplates(issuer)
        return _DeviceGroup(audit, signing, _device_type(device_type), issuer, describe(issuer).subject_key_id.hex().upper(), signer, self._templates)

    def _read_device_request(self, request: DeviceCsr) -> tuple[str, Any] | Exception:
        """The request read and checked (decoding, fields, proof of possession), or why not: raised in its turn by `_decide_device`."""
        try:
            data, source = self._request(request.csr, request.source)
            return source, parse_device_request(data, source)
        except Exception as refusal:  # noqa: BLE001 - this request's answer, given after its usage rules are counted
            return refusal

    def _decide_device(self, group: _DeviceGroup, request: DeviceCsr, read: tuple[str, Any] | Exception) -> tuple | Exception:
        """One request of a group: refused (the exception, its entry appended), or signed and recorded with its entry
        (a tuple for `_release_device`). Only the writes after the signature may fail the group."""
        operation = AuditedOperation(group.audit, self.actor, Operation.ISSUE_DEVICE)
        signing = group.signing
        try:
            if request.out is not None:
                refuse_existing(request.out)
            self._count_adhoc(operation, signing.policy, request.submitter)  # counted first: a request that is no CSR counts too
            if isinstance(read, Exception):
                raise read
            source, parsed_request = read
            operation.subject.update(request=source, device_id=parsed_request.device_id.hex)
            params = signing.policy.device_certificate_params(
                signing.environment, requester=parsed(RemotePartyRole, request.requester), device_id=parsed_request.device_id,
                device_type=group.device_type, key_usage=parsed_request.key_usage, not_before=signing.not_before,
                existing_certificates=self._device_certificates(operation, parsed_request.device_id), single_request=True,
                hw_type_oid=parsed_request.hw_type_oid)
            self._refuse_certified_key(operation, parsed_request.public_key)
            der = self._signed_device_certificate(group, params, parsed_request.public_key)
        except Exception as refusal:  # noqa: BLE001 - this request's answer; a fault not ours to name is audited as failed
            operation.audit.append(_refusal_entry(operation, refusal))
            return refusal
        record = CertificateRecord(
            serial_hex=serial_hex(der.serial), issuer_key_id=group.issuer_key_id, certificate_type=CertificateType.DEVICE,
            subject_key_id=der.subject_key_id, status="I", not_before=params.validity.not_before_utc.isoformat(),
            not_after=params.validity.not_after_utc.isoformat(), der=der.der, entity_id=parsed_request.device_id.hex,
            key_usage=params.key_usage.value, policy_name=signing.policy.name, policy_version=signing.policy.version,
            policy_sha256=signing.policy.sha256, request_sha256=parsed_request.request_sha256)
        operation.subject.update({"serial": record.serial_hex, "type": record.certificate_type, "entity_id": record.entity_id,
                                  "issuer_key_id": record.issuer_key_id, **({"file": str(request.out)} if request.out is not None else {})})
        insert_certificate(operation.connection, record)
        operation.audit.append(operation.success_entry(StateChange().issue(record.issuer_key_id, record.serial_hex).details(),
                                                       policy=signing.policy.identity))
        return record, request.out

    @staticmethod
    def _signed_device_certificate(group: _DeviceGroup, params, public_key: ec.EllipticCurvePublicKey) -> _SignedDevice:
        """The certificate from the proved template, signed in the HSM (the signature verified by the Signer)."""
        template = group.templates.for_request(params, public_key)
        point = public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        serial = new_serial_number()
        tbs = template.tbs_certificate(serial, point, params.device_id.octets, params.hw_type_oid, params.key_usage.value)
        signature = group.signer.sign_digest(hashlib.sha256(tbs).digest())
        return _SignedDevice(serial, subject_key_identifier(point).hex().upper(), certificate_der(tbs, signature))

    def _release_device(self, policy: CertificatePolicy, decided: tuple) -> IssuedCertificate:
        """After the group's commit: write the certificate's file, if one was named, and answer it."""
        record, out = decided
        certificate = x509.load_der_x509_certificate(record.der)
        if out is not None:
            write_new_file(out, certificate.public_bytes(Encoding.PEM))
        log.info("issued device certificate %s%s", record.serial_hex, f", wrote {out}" if out is not None else "")
        return IssuedCertificate(certificate, record, policy.identity, Path(out) if out is not None else None)

    def _audit_group_fault(self, audit, requests: list[DeviceCsr], fault: Exception) -> None:
        entries = [_refusal_entry(AuditedOperation(audit, self.actor, Operation.ISSUE_DEVICE,
                                                   {"request": request.source} if request.source else {}), fault) for request in requests]
        with transaction(audit.connection):
            audit.append(*entries)

    def _device_dry_run(self, csr: bytes | Path, *, requester, device_type, not_before, out, source, submitter) -> IssuedCertificate:
        """`issue_device`'s dry run: every check a real run makes, the exact draft linted; nothing signed or recorded."""
        with self._operation(Operation.ISSUE_DEVICE, dry_run=True) as operation:
            signing = self._signing(operation, out, not_before)
            self._count_adhoc(operation, signing.policy, submitter)
            data, source = self._request(csr, source)
            request = parse_device_request(data, source)
            operation.subject.update(request=source, device_id=request.device_id.hex)
            params = signing.policy.device_certificate_params(
                signing.environment, requester=parsed(RemotePartyRole, requester), device_id=request.device_id,
                device_type=_device_type(device_type), key_usage=request.key_usage, not_before=signing.not_before,
                existing_certificates=self._device_certificates(operation, request.device_id), single_request=True,
                hw_type_oid=request.hw_type_oid)
            self._refuse_certified_key(operation, request.public_key)
            issuer = self._issuer()
            return self._sign(operation, signing, CertificateType.DEVICE,
                              lambda: device_certificate(params, request.public_key, issuer), issuer, out, request.request_sha256)

    @staticmethod
    def _request(csr: bytes | str | Path, source: str | None) -> tuple[bytes, str]:
        """The request's bytes: given as bytes, as PEM text, or read from a file (a Path, or a str that is no PEM)."""
        if isinstance(csr, (bytes, bytearray)):
            return bytes(csr), source or "request"
        if isinstance(csr, str) and csr.lstrip().startswith("-----BEGIN"):
            return csr.encode("utf-8"), source or "request"
        if isinstance(csr, (str, os.PathLike)):
            return read_input(Path(csr), MAX_CSR_BYTES), source or str(csr)
        raise BadInputError(f"a request is bytes (PEM, DER or base64), PEM text or a file path, not {type(csr).__name__}")

    # -- certificates for public keys ------------------------------------------------------------
    def certify_organisation(self, public_key: ec.EllipticCurvePublicKey | Path, *, role: RemotePartyRole | str, entity_id: EUI64 | str,
                             usage: KeyUsage | str, requester: RemotePartyRole | str | None = None, common_name: str | None = None,
                             not_before: datetime | str | None = None, out: Path | None = None, dry_run: bool = False) -> IssuedCertificate:
        """An Organisation Certificate for a public key (a Path is read, PEM or DER SubjectPublicKeyInfo);
        the requester (default: the subject's role) is checked for eligibility (4.1)."""
        with self._operation(Operation.ISSUE_ORGANISATION, dry_run=dry_run) as operation:
            signing = self._signing(operation, out, not_before)
            role = parsed(RemotePartyRole, role)
            params = signing.policy.organisation_certificate_params(
                signing.environment, requester=parsed(RemotePartyRole, requester) if requester is not None else role, role=role,
                entity_id=parsed(EUI64, entity_id), key_usage=parsed(KeyUsage, usage), common_name=common_name,
                not_before=signing.not_before)
            issuer, subject_key = self._issuer(), self._public_key(public_key)
            return self._sign(operation, signing, CertificateType.ORGANISATION,
                              lambda: organisation_certificate(params, subject_key, issuer), issuer, out)

    def certify_device(self, public_key: ec.EllipticCurvePublicKey | Path, *, device_id: EUI64 | str, device_type: DeviceType | str,
                       usage: KeyUsage | str, requester: RemotePartyRole | str, not_before: datetime | str | None = None,
                       out: Path | None = None, dry_run: bool = False) -> IssuedCertificate:
        """A Device Certificate for a public key (empty subject, notAfter 99991231235959Z), under the
        per-device cap of the certificates this authority already issued for the device."""
        with self._operation(Operation.ISSUE_DEVICE, dry_run=dry_run) as operation:
            signing = self._signing(operation, out, not_before)
            device_id = parsed(EUI64, device_id)
            params = signing.policy.device_certificate_params(
                signing.environment, requester=parsed(RemotePartyRole, requester), device_id=device_id,
                device_type=parsed(DeviceType, device_type), key_usage=parsed(KeyUsage, usage), not_before=signing.not_before,
                existing_certificates=self._device_certificates(operation, device_id), single_request=False)
            issuer, subject_key = self._issuer(), self._public_key(public_key)
            return self._sign(operation, signing, CertificateType.DEVICE,
                              lambda: device_certificate(params, subject_key, issuer), issuer, out)

    @staticmethod
    def _public_key(public_key: ec.EllipticCurvePublicKey | Path):
        return read_public_key(Path(public_key)) if isinstance(public_key, (str, Path)) else public_key

    # -- a batch ---------------------------------------------------------------------------------
    def issue_batch(self, batch: Path, *, response: Path, status: Path, requester: RemotePartyRole | str, device_type: DeviceType | str | None = None,
                    not_before: datetime | str | None = None, workers: int | None = None, chunk_size: int = 1000,
                    verify_one_in: int = 1, progress: BatchProgress | None = None, dry_run: bool = False) -> BatchResult:
        """Device Certificates for a batch: a ZIP (or directory) of up to 50,000 `.csr` files.

        Batch-level faults (the file, its entries, the requester, the device type) refuse the whole
        batch with nothing issued; then each request is answered on its own (success, error,
        ineligible, anomaly), the per-device cap and duplicates included. The response ZIP and the
        status CSV are written once the whole run is durable. Running the same batch again answers
        only what is left.

        A dry run checks the batch and every request in this process (no workers), decides each
        answer as a real run would, and reports them; it signs, records and writes nothing.
        """
        from smki.issuing.batch_issuance import BatchPlan, BatchWorkers, batch_template, check_batch, issue_batch
        from smki.requests.batch import BatchResponse, open_batch

        batch, response, status = Path(batch), Path(response), Path(status)
        refuse_same_file({"--response": response, "--status": status, "the batch": batch})
        with self._operation(Operation.ISSUE_BATCH, dry_run=dry_run, batch=str(batch)) as operation:
            refuse_existing(response)
            refuse_existing(status)
            policy = self._adopted_policy(operation)
            issuer = self._issuer()
            key = self._key_ref()
            environment, checked_requester = self._environment(), parsed(RemotePartyRole, requester)
            checked_type = _device_type(device_type)
            start = start_of_validity(not_before)
            template = batch_template(issuer, policy, environment, start)
            issuer_key_id = describe(issuer).subject_key_id.hex().upper()

            def planned(checked_batch) -> tuple[BatchPlan, Callable[[int], None]]:
                """The run's plan, and the progress callback, once the batch is read and its size known."""
                plan = BatchPlan(checked_batch, issuer, policy, environment, checked_requester, checked_type, start, chunk_size=chunk_size)
                total = len(checked_batch.names)
                return plan, (lambda answered: progress(answered, total)) if progress is not None else (lambda answered: None)

            if dry_run:
                require_key_of(self._signing_key(), issuer, self._key_name())
                plan, report = planned(open_batch(batch, policy.batch_limit))
                run, totals = check_batch(operation.connection, self.actor, plan, template, issuer_key_id, progress=report)
                return BatchResult(run, totals, response, status, dry_run=True)
            pin = self._pin_value()
            require_key_of(self._signing_key(pin), issuer, self._key_name())
            worker_count = workers or os.cpu_count() or 1
            log.info("batch %s: starting %d worker process(es)", batch, worker_count)
            with BatchWorkers(key, pin, template, worker_count, verify_one_in) as batch_workers:  # they start while the batch is read
                checked_batch = open_batch(batch, policy.batch_limit)
                operation.subject["batch_id"] = checked_batch.batch_id
                plan, report = planned(checked_batch)
                with BatchResponse(response, status) as writer:
                    run = issue_batch(operation.connection, operation.audit, self.actor, plan, batch_workers, issuer_key_id, progress=report,
                                      answer=lambda o, der: writer.add(o.device_id, o.name, o.status, o.code, o.detail, o.serial_hex, der))
            totals = writer.counts
        log.info("batch %s: wrote %s and %s (%s)", run.batch_id[:16], response, status,
                 ", ".join(f"{name} {count}" for name, count in sorted(totals.items())))
        return BatchResult(run, dict(totals), response, status)

    # -- the batch queue (batches submitted online) ----------------------------------------------
    def submit_batch(self, batch: bytes | Iterable[tuple[str, bytes]], *, client_id: str, subscriber: Submitter,
                     requester: RemotePartyRole | str) -> QueuedBatch:
        """Queue a batch: a ZIP upload (the portal's format), or the (DeviceCSR ID, CSR DER) pairs of a SubmitCSRBatch.

        The batch is checked whole (as `issue_batch` checks a file; more than the policy's batch limit is
        refused as 4.2 batch_limit), the requester's eligibility, then the usage rules (one batch at a time,
        the daily cap). It is PENDING until the Registration Authority approves it, or PARSING at once when
        the policy names the submitter among its auto-approved requesters. Returns the queued batch (its
        `number` is the BatchId)."""
        client_id = checked_text(client_id, "a batch's client ID", MAX_CLIENT_ID)
        if not isinstance(subscriber, Submitter):
            raise BadInputError("a queued batch's subscriber is a Submitter (its register name and channel)")
        with self._operation(Operation.BATCH_SUBMIT, client_id=client_id, subscriber=subscriber.name,
                             channel=subscriber.channel.value) as operation:
            policy = self._adopted_policy(operation)
            checked_requester = parsed(RemotePartyRole, requester)
            policy.device_eligibility(self._environment(), checked_requester)  # a party that may request no Device Certificate
            upload = upload_of(batch)
            entries = count_entries(upload, policy)
            digest = sha256_hex(upload)
            operation.subject.update(entries=entries, upload_sha256=digest, requester=checked_requester.camel_name)
            rules, connection, now = policy.usage_rules, operation.connection, precise_now()
            status = BatchStatus.PARSING if rules.auto_approves(subscriber) else BatchStatus.PENDING
            with transaction(connection):
                rules.check_batch_submission(subscriber, entries, open_batch_count(connection, subscriber.name),
                                             batched_requests_since(connection, subscriber.name, timestamp(now - DAY)))
                number = enqueue_batch(connection, client_id=client_id, subscriber=subscriber.name, channel=subscriber.channel.value,
                                       requester=checked_requester.camel_name, entry_count=entries, upload=upload, upload_sha256=digest,
                                       status=status, submitted_at=timestamp(now),
                                       decided_by=AUTO_APPROVED if status is BatchStatus.PARSING else None)
                operation.audit.append(operation.success_entry({"status": status.value}, policy=policy.identity, batch=number))
                queued = queued_batch(connection, number)
        log.info("batch %d from %s: %d request(s) queued, %s", number, subscriber.name, entries, status.value)
        return queued

    @property
    def batch_limit(self) -> int:
        """The most CSRs one batch may hold under the policy given (4.2 batch_limit): a front end counts against it while parsing."""
        return self._loaded_policy().batch_limit

    def batches(self, *, subscriber: str | None = None, status: BatchStatus | str | None = None, limit: int = 1000) -> list[QueuedBatch]:
        """Queued batches, newest first (read-only); purged ones are not listed."""
        statuses = (parsed_status(status),) if status is not None else ()
        state = self.processing_state()
        return [batch.under(state) for batch in queued_batches(self._readable(), subscriber=subscriber, statuses=statuses, limit=limit)]

    def show_batch(self, number: int) -> QueuedBatch:
        """One queued batch (read-only); refused when there is none."""
        found = queued_batch(self._readable(), _batch_number(number))
        if found is None:
            raise BadInputError(f"no queued batch {number} in this authority's records")
        return found.under(self.processing_state())

    def approve_batch(self, number: int) -> QueuedBatch:
        """The Registration Authority approves a PENDING batch: it goes on to be parsed and processed."""
        return self._decide_batch(Operation.BATCH_APPROVE, _batch_number(number), BatchStatus.PARSING, None)

    def reject_batch(self, number: int, reason: str) -> QueuedBatch:
        """The Registration Authority rejects a PENDING batch (the reason is kept and audited): it goes no further."""
        return self._decide_batch(Operation.BATCH_REJECT, _batch_number(number), BatchStatus.REJECTED,
                                  checked_text(reason, "a rejection's reason", MAX_REASON))

    def _decide_batch(self, name: Operation, number: int, status: BatchStatus, reason: str | None) -> QueuedBatch:
        with self._operation(name, batch=number) as operation:
            connection = operation.connection
            with transaction(connection):
                current = queued_batch(connection, number)
                if current is None:
                    raise BadInputError(f"no queued batch {number} in this authority's records")
                if not change_status(connection, number, status, allowed_from=(BatchStatus.PENDING,), decided_at=timestamp(precise_now()),
                                     decided_by=self.actor, reason=reason):
                    raise ConflictError(f"batch {number} is {current.status.value}, not PENDING: it was decided already")
                operation.audit.append(operation.success_entry({"status": status.value, **({"reason": reason} if reason else {})},
                                                               subscriber=current.subscriber))
                decided = queued_batch(connection, number)
        log.info("batch %d: %s by %s", number, status.value, self.actor)
        return decided

    def batch_result(self, number: int, subscriber: Submitter | str) -> BatchAnswer:
        """A batch as its subscriber polls it: its status, and when COMPLETED every request's answer.
        A batch that is not the subscriber's (or none, or purged) is refused as unknown (FM:AA3), and the refusal audited."""
        name = subscriber.name if isinstance(subscriber, Submitter) else str(subscriber)
        with self._operation(Operation.BATCH_RESULT, batch=str(number)[:32], subscriber=name) as operation:
            batch = queued_batch(operation.connection, _batch_number(number, UnknownBatch)) if _is_number(number) else None
            if batch is None or batch.subscriber != name or batch.purged_at is not None:
                raise UnknownBatch(f"Unknown BatchId {str(number)[:32]!r} for subscriber {name}")
            batch = batch.under(processing_state(operation.connection))  # PAUSED while the processing is
            if batch.status is not BatchStatus.COMPLETED:
                return BatchAnswer(batch)
            return BatchAnswer(batch, answers_of(operation.connection, batch))

    def batch_files(self, number: int, subscriber: Submitter | str) -> tuple[QueuedBatch, bytes | None, bytes | None]:
        """A batch's response ZIP and status file (portal format), None until it is COMPLETED; refused as `batch_result` refuses."""
        answer = self.batch_result(number, subscriber)
        files = response_files(self._writable(), answer.batch.number) if answer.batch.status is BatchStatus.COMPLETED else None
        return (answer.batch, *(files or (None, None)))

    def purge_batches(self, now: datetime | None = None) -> list[int]:
        """Drop the uploads and response files of batches answered more than the retention period before `now`
        (and the ad hoc submissions older than a day, which no rule counts any more). Audited; returns the batches purged."""
        now = now or precise_now()
        with self._operation(Operation.BATCH_PURGE) as operation:
            policy = self._adopted_policy(operation)
            connection = operation.connection
            with transaction(connection):
                purged = purge_finished(connection, timestamp(now - policy.usage_rules.result_retention), timestamp(now))
                purge_adhoc_submissions(connection, timestamp(now - DAY))
                if purged:
                    operation.audit.append(operation.success_entry({"batches": purged}, policy=policy.identity))
        return purged

    def process_batches(self, worker: str | None = None, *, stop: Callable[[], bool] = lambda: False, once: bool = False,
                        lease_seconds: float = 60.0, poll_seconds: float = 5.0, workers: int | None = None, chunk_size: int = 1000) -> int:
        """Process queued batches, one at a time, until `stop()` is true (or, with `once`, until none can be taken now).

        Each batch is claimed with a lease this process renews while it works; a batch whose lease ran out (its
        processor died) is taken over, and its run resumed: only what is left is answered. Outside the policy's
        processing window batches are parsed and PAUSED. Returns how many batches this call moved on."""
        from smki.issuing.batch_processor import BatchProcessor

        processor = BatchProcessor(self, worker or worker_name(), lease_seconds, workers, chunk_size)
        moved = 0
        while not stop():
            if processor.next():
                moved += 1
                continue
            if once:
                break
            deadline = time.monotonic() + poll_seconds
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.2, poll_seconds))
        return moved

    # -- revocation ------------------------------------------------------------------------------
    def revoke(self, serial: int | str, reason: str, *, dry_run: bool = False) -> Revocation:
        """Revoke a certificate this authority issued, as the policy says (CRL entry, ARL entry or status R)."""
        return self._revoke(serial_text(serial), reason, Operation.REVOKE, dry_run)

    def reject(self, serial: int | str, *, dry_run: bool = False) -> Revocation:
        """The subscriber rejected this certificate at issue: where the policy says so
        (revocation.revoke_on_rejection) it is revoked at once, reason unspecified; refused otherwise."""
        return self._revoke(serial_text(serial), "unspecified", Operation.REJECT, dry_run)

    def _revoke(self, serial: str, reason: str, name: str, dry_run: bool = False) -> Revocation:
        with self._operation(name, dry_run=dry_run, serial=serial.upper(), reason=reason) as operation:
            policy = self._adopted_policy(operation)
            if name == Operation.REJECT and not policy.revoke_on_rejection:
                raise PolicyRefusal("4.9 revoke_on_rejection", f"this {policy.hierarchy} policy does not revoke rejected certificates")
            record = self._record_of(operation.connection, serial)
            method = policy.check_revocation(record.certificate_type, reason)
            now = utc_now()
            if isinstance(operation, DryRunOperation):
                reconcile_issuer(operation.connection, record.issuer_key_id)
                check_revocable(operation.connection, record.issuer_key_id, record.serial_hex)
                return Revocation(record.serial_hex, record.issuer_key_id, reason, method, now, dry_run=True)
            with transaction(operation.connection):
                reconcile_issuer(operation.connection, record.issuer_key_id)  # a revocation builds on the issuer's state: it must be the audited one
                record_revocation(operation.connection, record.issuer_key_id, record.serial_hex, now, reason)
                operation.audit.append(operation.success_entry(
                    StateChange().revoke(record.issuer_key_id, record.serial_hex, now.isoformat(), reason).details(),
                    policy=policy.identity, type=record.certificate_type, method=method))
        log.info("revoked %s (%s): %s", record.serial_hex, reason, method)
        return Revocation(record.serial_hex, record.issuer_key_id, reason, method, now)

    @staticmethod
    def _record_of(connection, serial: str) -> CertificateRecord:
        records = find_certificate(connection, serial)
        if not records:
            raise BadInputError(f"no certificate with serial {serial} in this authority's records")
        return records[0]

    # -- the CRL (or a root's ARL) ---------------------------------------------------------------
    def issue_crl(self, *, out: Path | None = None) -> IssuedCrl:
        """The CRL (an Issuing OCA) or ARL (a root): every revocation recorded, a persisted strictly
        increasing cRLNumber, nextUpdate from the policy, signed in the HSM, linted and verified."""
        with self._operation(Operation.ISSUE_CRL) as operation:  # renamed arl.issue once the issuer is known to be a root
            if out is not None:
                refuse_existing(out)
            policy = self._adopted_policy(operation)
            issuer = self._issuer()
            facts = describe(issuer)
            list_type = ListType.of_issuer(facts.certificate_type)
            operation.operation = Operation.issue_list(list_type)
            log.info("issuing the %s of issuer %s", list_type.name, facts.subject_key_id.hex().upper())
            return issue_list(operation, issuer, self._signing_key(), list_type, policy, out=out)

    # -- the records (read-only) -----------------------------------------------------------------
    def show(self, serial: int | str) -> list[CertificateRecord]:
        """The records of one serial (one per issuer at most); refused when there is none."""
        serial = serial_text(serial)
        records = find_certificate(self._readable(), serial)
        if not records:
            raise BadInputError(f"no certificate with serial {serial} in this authority's records")
        return records

    def list(self, *, certificate_type: str | None = None, status: str | None = None, entity_id: EUI64 | str | None = None,
             limit: int = 1000) -> list[CertificateRecord]:
        """Issued certificates, oldest first, filtered."""
        device = parsed(EUI64, entity_id).hex if entity_id is not None else None
        kind = CertificateType.parse(certificate_type) if certificate_type is not None else None
        return list_certificates(self._readable(), certificate_type=kind, status=repository_status(status) if status is not None else None,
                                 entity_id=device, limit=limit)

    def reconcile(self) -> Reconciliation:
        """Check, issuer by issuer, that the state tables agree with the audit trail, and that each
        adopted policy is the one the trail's last adoption of its kind records (read-only)."""
        connection = self._readable()
        return Reconciliation({issuer: differences(connection, issuer) for issuer in issuers(connection)},
                              adoption_differences(connection))

    def adopt_state(self) -> dict:
        """Once, after upgrading from an smki whose audit entries did not record state changes: record the
        state tables as they stand, in entries signed by the audit key. Needs the audit key."""
        from smki.issuing.state_adoption import adopt_legacy_state

        with self._operation(Operation.ADOPT_STATE) as operation:
            return adopt_legacy_state(operation.audit, self.actor)

    # -- pausing the batch queue's processing (the Registration Authority / operator) ---------------
    def processing_state(self) -> ProcessingState:
        """Whether the batch queue's processing is paused, since when, by whom and why (read-only)."""
        return processing_state(self._readable())

    def pause_processing(self, reason: str) -> ProcessingState:
        """Pause the processing of every queued batch, on every processor sharing this state (audited): nothing new is
        claimed, a batch being processed stops at its next chunk boundary and waits PAUSED, polls answer PAUSED.
        Refused (ConflictError) when it is paused already."""
        return self._set_processing(Operation.PROCESSING_PAUSE, True, checked_text(reason, "a pause's reason", MAX_REASON))

    def resume_processing(self) -> ProcessingState:
        """Resume the processing (audited): paused batches go on where they stopped. Refused (ConflictError) when it is not paused."""
        return self._set_processing(Operation.PROCESSING_RESUME, False, None)

    def _set_processing(self, name: Operation, paused: bool, reason: str | None) -> ProcessingState:
        with self._operation(name, **({"reason": reason} if reason else {})) as operation:
            connection = operation.connection
            with transaction(connection):
                current = processing_state(connection)
                if not set_processing(connection, paused, timestamp(precise_now()), self.actor, reason):
                    raise ConflictError(f"batch processing is {'paused' if current.paused else 'running'} already"
                                        + (f" (since {current.since}, by {current.by})" if current.since else ""))
                operation.audit.append(operation.success_entry({"paused": paused, **({"reason": reason} if reason else {})}))
                changed = processing_state(connection)
        log.info("batch processing %s by %s", "paused" if paused else "resumed", self.actor)
        return changed
