"""The Root Authority as one object: its ceremonies, and the same work for roots driven outside
a ceremony (labs, tests, `smki.testing`, `smki cert root|issuing-ca`).

A ceremony (`run_ceremony`) activates the root key from custodian shares and writes a transcript;
the methods of a `RootAuthority` instead sign with a key the caller names, but they apply the same
policy checks and leave the same records and audit entries: each is one `AuditedOperation` on the
shared floor, whose success is committed with the state it changes and whose refusal is audited
when it leaves. Nothing is written to a file before the state that describes it has committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from cryptography import x509

from smki.audit.trail import AuditTrail
from smki.errors import BadInputError
from smki.files import refuse_existing
from smki.hsm.config import KeyRef
from smki.hsm.pins import PinSource, SourceKind
from smki.hsm.signer import Pkcs11Signer, open_signer, require_key_of, signer_for
from smki.identifiers import CertificateType, ListType
from smki.operations.audited import ActorState, AuditedOperation, DryRunOperation, open_audit_trail
from smki.operations.lists import issue_list
from smki.operations.names import Operation
from smki.operations.release import record_and_release, would_issue
from smki.operations.values import serial_text
from smki.operations.results import IssuedCertificate, IssuedCrl, Revocation
from smki.policy import Environment, load_policy
from smki.policy.adoption import adopt, require_adopted
from smki.policy.model import CertificatePolicy
from smki.profiles import issuing_ca_certificate, root_certificate, sign_certificate
from smki.profiles.describe import describe
from smki.times import start_of_validity, utc_now
from smki.profiles.files import read_certificate
from smki.profiles.lint import pre_issuance_check
from smki.root import ceremony as ceremonies
from smki.root.ceremony_file import CeremonyKind, load_ceremony
from smki.root.checks import IssuingAuthorityKey, issuing_authority_key, revocable_record
from smki.store.database import transaction
from smki.store.reconcile import StateChange, reconcile_issuer
from smki.store.revocations import record_revocation


class CeremonyTranscript(dict):
    """What a ceremony returns: its transcript (the JSON the witnesses sign, as written), plus
    `files`, the transcript's own two files (JSON and text), which are not part of it."""

    def __init__(self, transcript: dict, files: tuple[Path, Path]) -> None:
        super().__init__(transcript)
        self.files = files

    def summary(self) -> dict:
        return dict(self)


# Asked for a custodian's passphrase: a function (custodian, purpose) -> passphrase, or a mapping from
# custodian to PinSource or passphrase; anyone the mapping leaves out is prompted for theirs.
Passphrases = Callable[[str, str], str] | Mapping[str, PinSource | str]


class RootAuthority:
    """A Root OCA or Root DCA and its state (issued certificates, revocations, ARL numbers, audit trail).

    `certificate` is the root's own certificate (not needed to self-sign; after `self_sign` it is
    the one just signed); `key` the root key in the HSM, `pin` its token's user PIN. Opening does
    no I/O: the database is opened by the first method (read-only for a dry run), and the policy and
    certificate read, and the HSM opened, inside its audited operation, so a refusal there is audited.

    One object per thread; any number of objects may share a state (see `smki.operations`).
    """

    def __init__(self, state: Path | str, *, certificate: x509.Certificate | Path | None = None, key: KeyRef | None = None,
                 pin: PinSource | str | None = None, policy: CertificatePolicy | Path | str | None = None,
                 environment: Environment | str | None = None, actor: str = "operator",
                 audit_key: KeyRef | None = None, audit_pin: PinSource | str | None = None) -> None:
        self.state, self.actor, self.key = state, actor, key
        self.audit_key, self._audit_pin, self._pin = audit_key, PinSource.hidden(audit_pin), PinSource.hidden(pin)
        self._certificate, self._policy, self._environment = certificate, policy, environment
        self._state = ActorState(state)
        self._audit: AuditTrail | None = None
        self._signer: Pkcs11Signer | None = None

    # -- ceremonies ---------------------------------------------------------------------------------
    @staticmethod
    def check_ceremony(ceremony_file: Path) -> dict:
        """Validate a ceremony file and say what it would do; touches no HSM and writes nothing.

        Refused as `run_ceremony` would refuse it: an invalid file, a policy that does not load,
        an output that exists."""
        ceremony = load_ceremony(ceremony_file)
        policy = load_policy(ceremony.policy)
        for path in ceremony.outputs():
            refuse_existing(path)
        return {"ceremony": ceremony.ceremony_kind, "name": ceremony.name, "sha256": ceremony.sha256, "authority": ceremony.authority,
                "policy": policy.identity, "custody": dict(zip(("threshold", "custodians"), policy.custody("root"))),
                "custodians": list(ceremony.custodians), "token": ceremony.hsm.token, "key": ceremony.hsm.key.label,
                **({"token_setup": ceremony.hsm.setup.value} if ceremony.ceremony_kind is CeremonyKind.ROOT_KEY else {}),
                "outputs": [str(path) for path in ceremony.outputs()]}

    @staticmethod
    def run_ceremony(ceremony_file: Path, *, operator: str | None = None, passphrase: Passphrases | None = None,
                     vendor_pin: PinSource | str | None = None) -> CeremonyTranscript:
        """Run a ceremony file (see smki/root/ceremony.py); return its transcript (a dict), also written
        beside the outputs. `operator` defaults to $USER; custodians not given a passphrase are prompted.
        `vendor_pin`: the PIN the vendor set, for a root-key ceremony that takes over its token (prompted otherwise)."""
        ceremony = load_ceremony(ceremony_file)
        transcript = ceremonies.run_ceremony(ceremony, operator=operator, passphrase=_passphrase_reader(passphrase),
                                             vendor_pin=PinSource.hidden(vendor_pin))
        return CeremonyTranscript(transcript, (ceremony.transcript, ceremony.transcript.with_suffix(".txt")))

    # -- outside a ceremony -------------------------------------------------------------------------
    def adopt_policy(self, policy: CertificatePolicy | Path | str | None = None) -> dict:
        """Adopt `policy` (default: the authority's own) in this root's state, as `smki policy adopt` does."""
        with self._operation(Operation.ADOPT_POLICY) as operation:
            policy = self._load_policy(policy)
            operation.subject = {"kind": policy.hierarchy, "file": str(policy.path)}
            previous = adopt(self.connection, policy, self.actor, operation.audit)
        return {**policy.identity, "kind": policy.hierarchy, "replaces": previous and {k: previous[k] for k in ("version", "sha256")}}

    def self_sign(self, *, not_before: datetime | str | None = None, out: Path | None = None, dry_run: bool = False) -> IssuedCertificate:
        """The self-signed root certificate for the root key (names, OIDs and validity from the policy).
        A dry run makes every check and lints the exact certificate, and signs, records and writes nothing."""
        with self._operation(Operation.SELF_SIGN, dry_run) as operation:
            policy, environment, start = self._signing_terms(operation, not_before, out)
            signer = self._open_signer()
            params = policy.root_certificate_params(environment, start)
            lint = pre_issuance_check(CertificateType.ROOT, (policy.policy_oid(environment),))
            if dry_run:
                return would_issue(root_certificate(params, signer.public_key), lint, policy, out=out)
            certificate = sign_certificate(root_certificate(params, signer.public_key), signer, pre_issuance_check=lint)
            record = record_and_release(operation, certificate, policy, out=out)
        if self._certificate is None:
            self._certificate = certificate  # the root is now this certificate's: it certifies and revokes under it
        return IssuedCertificate(certificate, record, policy.identity, out)

    def certify_issuing_authority(self, public_key_or_csr: IssuingAuthorityKey, *, not_before: datetime | str | None = None,
                                  out: Path | None = None, dry_run: bool = False) -> IssuedCertificate:
        """An Issuing OCA or DCA certificate for the key handed over (a public key, or a PKCS#10 request
        whose signature must verify), signed by the root key, which must be the root certificate's.
        A dry run makes every check and lints the exact certificate, and signs, records and writes nothing."""
        with self._operation(Operation.CERTIFY_ISSUING_AUTHORITY, dry_run) as operation:
            policy, environment, start = self._signing_terms(operation, not_before, out)
            root = self._root_certificate()
            subject_key = issuing_authority_key(public_key_or_csr)
            signer = self._open_signer(root)
            params = policy.issuing_ca_certificate_params(environment, start)
            lint = pre_issuance_check(CertificateType.ISSUING_CA, (policy.policy_oid(environment),), issuer=root)
            if dry_run:
                return would_issue(issuing_ca_certificate(params, subject_key, root), lint, policy, out=out)
            certificate = sign_certificate(issuing_ca_certificate(params, subject_key, root), signer, pre_issuance_check=lint)
            record = record_and_release(operation, certificate, policy, out=out)
        return IssuedCertificate(certificate, record, policy.identity, out)

    def revoke(self, serial: str | int, reason: str) -> Revocation:
        """Revoke a certificate this root issued, onto its next ARL: refused for a serial it never issued,
        one already revoked, or a reason the policy does not allow for that certificate type."""
        with self._operation(Operation.REVOKE) as operation:
            serial = serial_text(serial)
            operation.subject = {"serial": serial, "reason": reason}
            policy = self._adopted_policy()
            root_key_id = _key_id(self._root_certificate())
            now = utc_now()
            with transaction(self.connection):  # the write lock from here: the state checked is the state changed
                reconcile_issuer(self.connection, root_key_id)  # a revocation builds on the root's state: it must be the audited one
                record = revocable_record(self.connection, root_key_id, serial)
                method = policy.check_revocation(record.certificate_type, reason)
                record_revocation(self.connection, root_key_id, record.serial_hex, now, reason)
                operation.audit.append(operation.success_entry(
                    StateChange().revoke(root_key_id, record.serial_hex, now.isoformat(), reason).details(), policy=policy.identity,
                    type=record.certificate_type, method=method))
        return Revocation(record.serial_hex, root_key_id, reason, method, now)

    def issue_arl(self, *, out: Path | None = None) -> IssuedCrl:
        """The root's ARL: every revocation recorded, the next persisted cRLNumber, nextUpdate from the
        policy; signed by the root key, linted and verified before it is recorded or released."""
        with self._operation(Operation.ISSUE_ARL) as operation:
            if out is not None:
                refuse_existing(out)
            policy = self._adopted_policy()
            root = self._root_certificate()
            return issue_list(operation, root, self._open_signer(root), ListType.ARL, policy, out=out)

    # -- life cycle ---------------------------------------------------------------------------------
    @property
    def connection(self):
        """The root's state, opened for writing when first needed (a dry run never opens it so)."""
        return self._state.writable()

    def close(self) -> None:
        self._signer = None
        self._audit = None
        self._state.close()

    def __enter__(self) -> "RootAuthority":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the parts, taken up inside an operation ----------------------------------------------------
    def _operation(self, name: str, dry_run: bool = False) -> AuditedOperation | DryRunOperation:
        """One audited operation; with an audit key, its token's anchor is checked before anything is done.
        A dry run's operation checks the anchor too, and records nothing (no entry, no checkpoint)."""
        if dry_run:
            return self._state.dry_run(name, self.audit_key, self._audit_pin)
        if self._audit is None:
            self._audit = open_audit_trail(self.connection, self.audit_key, self._audit_pin)  # checks the anchor
        else:
            self._audit.check_anchor()
        return AuditedOperation(self._audit, self.actor, name)

    def _load_policy(self, policy: CertificatePolicy | Path | str | None) -> CertificatePolicy:
        policy = self._policy if policy is None else policy
        if policy is None:
            raise BadInputError("RootAuthority: no policy given: name the Certificate Policy file the root has adopted")
        return policy if isinstance(policy, CertificatePolicy) else load_policy(policy)

    def _adopted_policy(self, connection=None) -> CertificatePolicy:
        """The authority's policy, which its state (or `connection` to it) must have adopted (refused, exit 5, otherwise)."""
        policy = self._policy = self._load_policy(None)
        require_adopted(connection if connection is not None else self.connection, policy)
        return policy

    def _signing_terms(self, operation: AuditedOperation | DryRunOperation, not_before: datetime | str | None,
                       out: Path | None) -> tuple[CertificatePolicy, Environment, datetime]:
        """What every certificate this root signs needs, checked in the CLI's order before the HSM is opened."""
        if self._environment is None:
            raise BadInputError("RootAuthority: no environment given: test or production")
        environment = self._environment if isinstance(self._environment, Environment) else Environment.parse(self._environment)
        policy = self._adopted_policy(operation.connection)
        start = start_of_validity(not_before)
        if out is not None:
            refuse_existing(out)
        return policy, environment, start

    def _root_certificate(self) -> x509.Certificate:
        if self._certificate is None:
            raise BadInputError("RootAuthority: no root certificate given: name it, or self-sign one first")
        if not isinstance(self._certificate, x509.Certificate):
            self._certificate = read_certificate(Path(self._certificate))
        return self._certificate

    def _open_signer(self, certificate: x509.Certificate | None = None) -> Pkcs11Signer:
        """The root key (logged in once); when it will sign under `certificate`, it must be that certificate's key."""
        if self.key is None:
            raise BadInputError("RootAuthority: no key given: name the root key in the HSM (a KeyRef)")
        if self._signer is None:
            pin = self._pin if self._pin is not None else PinSource(SourceKind.PROMPT)
            self._signer = signer_for(self.key, pin) if isinstance(pin, str) else open_signer(self.key, pin)
        if certificate is not None:
            require_key_of(self._signer, certificate, f"HSM key {self.key.key_label!r} on token {self.key.token_label!r}")
        return self._signer


def _passphrase_reader(passphrase: Passphrases | None) -> Callable[[str, str], str] | None:
    """The ceremony's (custodian, purpose) -> passphrase from what the caller gave (None: the ceremony prompts)."""
    if passphrase is None or callable(passphrase):
        return passphrase
    given = dict(passphrase)

    def read(custodian: str, purpose: str) -> str:
        source = given.get(custodian, PinSource(SourceKind.PROMPT))
        return source if isinstance(source, str) else source.read(f"{custodian}: {purpose}")

    return read


def _key_id(certificate: x509.Certificate) -> str:
    return describe(certificate).subject_key_id.hex().upper()
