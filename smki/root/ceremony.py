"""Running a root ceremony: the Root Authorities' offline work, from a checked ceremony file.

Every ceremony follows the same order, as Let's Encrypt's ceremony tool does:
refuse if any output exists; load and require the policy; activate the key (m of n
custodian shares rebuild the token PIN in memory; a new root's PIN is random and split);
check that the HSM key is the issuer certificate's key; read the key's attributes back;
lint the draft; sign in the HSM; verify the result; record it in the root's own state
(its SQLite store and audit trail) in one transaction; then write the outputs and a
transcript for the witnesses to sign. A refusal before signing leaves nothing behind.

A root-key ceremony's token comes to be in one of two ways (the file's `hsm.setup`):

- create: smki creates a SoftHSM token whose SO and user PINs derive from the new secret; a failed
  ceremony deletes it.
- take-over: a token the HSM vendor's tool initialised, which must be empty. The ceremony logs in
  once with the PIN the vendor set (typed at the ceremony, never written), and only after the
  custodians have chosen their passphrases replaces it with C_SetPIN by a user PIN derived from the
  new secret. The SO PIN stays the vendor's (the token's security officer keeps it: smki never
  learns it), which is also the token's last resort: an SO can always set a new user PIN (C_InitPIN).
  A wrong vendor PIN, or a token not empty, is refused before anything is written (the root's state
  included) or changed. A ceremony that fails after C_SetPIN gives
  the token back as it found it: every object it made destroyed, the vendor's PIN set again; if even
  that fails, the message says what state the token is in.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pkcs11.exceptions as p11x
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.audit.trail import AuditEntry, AuditTrail, key_id_of
from smki.operations.names import Operation
from smki.root.ceremony_file import Ceremony, CeremonyKind, TokenSetup
from smki.root.checks import request_file_public_key, revocable_record
from smki.operations.audited import open_state
from smki.identifiers import CertificateType, ListType, PolicyKind
from smki.operations.lists import signed_list
from smki.operations.records import record_for
from smki.errors import BadInputError, ConflictError, HsmError, RefusedError, SmkiError
from smki.files import interrupts_held, refuse_existing, write_new_file
from smki.hsm import activation
from smki.hsm.anchor import TokenHeadAnchor
from smki.hsm.contingency import export_wrapping_key, find_wrapping_key, generate_contingency_keys, unwrap_public_key, wrap_public_key
from smki.hsm.keys import (KeyAttributes, destroy_token_objects, find_key_pair, generate_p256_key_pair, public_key_of, read_attributes,
                           token_object_count)
from smki.hsm.pins import PinSource, SourceKind
from smki.hsm.session import close_all, module_is_softhsm, open_session, reload_module
from smki.hsm.signer import Pkcs11Signer, require_key_of
from smki.hsm.softhsm import delete_token, init_token
from smki.policy import PolicyRefusal, load_policy
from smki.policy.adoption import adopt, adopted, require_adopted
from smki.policy.model import CertificatePolicy
from smki.profiles import (IssuingCaCertificateParams, issuing_ca_certificate, root_certificate, sign_certificate)
from smki.profiles.crl import RevokedEntry
from smki.profiles.describe import describe
from smki.profiles.files import read_certificate, read_public_key
from smki.profiles.extensions import ID_AES256_WRAP, ID_PE_WRAPPED_APEX_CONTIN_KEY, WrappedApexContingencyKey, wrapped_apex_contingency_key
from smki.profiles.lint import lint_certificate, pre_issuance_check, refuse_on_errors
from smki.store.certificates import insert_certificate
from smki.store.database import transaction
from smki.store.reconcile import StateChange, reconcile_issuer
from smki.store.revocations import last_crl_number, next_crl_number, record_revocation, revoked_entries
from smki.times import utc_now

log = logging.getLogger(__name__)

# Asked for each custodian: (custodian, purpose) -> passphrase. Never logged, never stored.
PassphraseSource = Callable[[str, str], str]


@dataclass(frozen=True)
class _TakenOver:
    """A taken-over token's two user PINs, held only while the ceremony runs: to give the token back if it fails."""

    vendor_pin: str = field(repr=False)
    new_pin: str = field(repr=False)


@dataclass(frozen=True)
class _VendorLogin:
    """A take-over's first step, taken before anything is written (the root's state included): the PIN the
    vendor set, proved by logging in with it, and the token found empty."""

    pin: str = field(repr=False)
    session: object = field(repr=False)


@dataclass
class _Run:
    ceremony: Ceremony
    operator: str
    passphrase: PassphraseSource
    vendor_login: _VendorLogin | None = None  # take-over only
    taken_over: _TakenOver | None = None  # set once C_SetPIN has replaced the vendor's PIN
    started: datetime = field(default_factory=utc_now)
    custodians_present: list[str] = field(default_factory=list)
    key_attributes: list[dict] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    outputs: list[tuple[Path, bytes, str, int]] = field(default_factory=list)  # (path, data, what, mode)
    policy: CertificatePolicy | None = None
    records: list = field(default_factory=list)
    revocations: list[tuple[str, str, str]] = field(default_factory=list)  # (issuer SKI, serial, reason)
    crl_number: int | None = None
    facts: dict = field(default_factory=dict)

    def output(self, path: Path, data: bytes, what: str, mode: int = 0o644) -> None:
        self.outputs.append((path, data, what, mode))


# -- activation -----------------------------------------------------------------------------------
def _custody(run: _Run) -> tuple[int, int]:
    return run.policy.custody("root")


def _new_root_token(run: _Run) -> str:
    """root-key: a random token secret, split among every custodian; the token made (or taken over) with its PINs."""
    ceremony = run.ceremony
    threshold, custodians = _custody(run)
    if len(ceremony.custodians) != custodians:
        raise PolicyRefusal("6.2.2 custody", f"the policy requires {custodians} custodians for a root key; the ceremony names {len(ceremony.custodians)}")
    if ceremony.hsm.setup is TokenSetup.TAKE_OVER:
        return _take_over_token(run, threshold, custodians)
    if not module_is_softhsm(ceremony.hsm.module):
        raise HsmError(f"{ceremony.hsm.module} is not SoftHSM: smki creates SoftHSM tokens only; initialise token {ceremony.hsm.token!r} "
                       "with the HSM vendor's tool and take it over (hsm.setup: take-over in the ceremony file)")
    secret = _split_new_secret(run, threshold, custodians)
    pins = activation.TokenPins.from_secret(secret)
    init_token(ceremony.hsm.token, pins.so_pin, pins.user_pin)
    reload_module(ceremony.hsm.module)  # SoftHSM reads its tokens at C_Initialize: this process must see the new one
    return pins.user_pin


def _split_new_secret(run: _Run, threshold: int, custodians: int) -> bytes:
    """A new random token secret, split among every custodian (their shares are the ceremony's outputs)."""
    ceremony = run.ceremony
    passphrases = {name: run.passphrase(name, "choose a passphrase for your new share") for name in ceremony.custodians}
    secret = activation.new_token_secret()
    shares = activation.split_secret(ceremony.authority, secret, threshold, passphrases)
    for share in shares:
        run.output(ceremony.share_file(share.custodian), share.to_json(), f"custodian share ({share.custodian})", 0o600)
    run.custodians_present = sorted(ceremony.custodians)
    run.facts["custody"] = {"threshold": threshold, "custodians": custodians}
    return secret


def _take_over_token(run: _Run, threshold: int, custodians: int) -> str:
    """An empty token the vendor initialised: its user PIN replaced (C_SetPIN) by one derived from the new secret."""
    hsm = run.ceremony.hsm
    vendor_pin, session = run.vendor_login.pin, run.vendor_login.session
    secret = _split_new_secret(run, threshold, custodians)  # the passphrases first: a custodian who stops here changes nothing
    new_pin = activation.TokenPins.from_secret(secret).user_pin
    try:
        session.set_pin(vendor_pin, new_pin)
    except p11x.PKCS11Error as exc:
        raise HsmError(f"token {hsm.token!r} refused the new user PIN (C_SetPIN: {type(exc).__name__}); its PIN is unchanged") from None
    run.taken_over = _TakenOver(vendor_pin, new_pin)
    run.vendor_login = None  # its session is closed next, and its PIN now kept once, for giving the token back
    close_all()  # logs out: the ceremony logs in again with the new PIN, which proves the token took it
    run.facts["token"] = {"setup": TokenSetup.TAKE_OVER.value, "user_pin": "replaced (C_SetPIN) by one derived from the custodians' secret",
                          "so_pin": "unchanged: the vendor's, held by the token's security officer (smki never learns it)"}
    return new_pin


def _vendor_login(ceremony: Ceremony, source: PinSource | None) -> _VendorLogin:
    """Log in with the PIN the vendor set (a wrong one is refused here) and find the token empty; or refuse, nothing changed."""
    hsm = ceremony.hsm
    source = source or PinSource(SourceKind.PROMPT, option="--vendor-pin-source")
    vendor_pin = source.read(f"the user PIN the vendor set on token {hsm.token}")
    session = open_session(hsm.module, hsm.token, vendor_pin, rw=True, serial=hsm.serial)
    held = token_object_count(session)
    if held:
        close_all()
        raise ConflictError(f"token {hsm.token!r} holds {held} object(s): a root key goes into an empty token "
                            "(clear or initialise it with the vendor's tool); nothing changed")
    return _VendorLogin(vendor_pin, session)


def _give_back(run: _Run, error: BaseException) -> None:
    """A taken-over token after a failed ceremony: its objects destroyed and the vendor's PIN set again.

    Raises HsmError saying what state the token is in when that cannot be done."""
    hsm, taken = run.ceremony.hsm, run.taken_over  # (its only caller, _undo, has closed the ceremony's sessions)
    try:
        session = open_session(hsm.module, hsm.token, taken.new_pin, rw=True, serial=hsm.serial)
        destroy_token_objects(session)
        session.set_pin(taken.new_pin, taken.vendor_pin)
    except (SmkiError, p11x.PKCS11Error) as exc:
        raise HsmError(f"{error}; and token {hsm.token!r} could not be given back ({exc or type(exc).__name__}): it may hold "
                       "this ceremony's keys and its user PIN is the one derived from the custodians' secret, which was not "
                       "written; its security officer can set a new user PIN with the SO PIN (C_InitPIN)") from None
    finally:
        close_all()


def _presented_pin(run: _Run) -> str:
    """Every other ceremony: m custodians present their shares; the PIN is rebuilt in memory only."""
    ceremony = run.ceremony
    threshold, _ = _custody(run)
    if len(ceremony.custodians) < threshold:
        raise RefusedError(f"{len(ceremony.custodians)} of {threshold} required custodians are named as present; the key stays unused")
    presented = []
    for name in ceremony.custodians:
        share = activation.CustodianShare.load(ceremony.share_file(name))
        if share.custodian != name:
            raise RefusedError(f"{ceremony.share_file(name)}: the share is {share.custodian}'s, not {name}'s")
        presented.append((share, run.passphrase(name, f"passphrase for your {ceremony.authority} share")))
    secret, names = activation.recover_secret(ceremony.authority, presented)
    run.custodians_present = names
    run.facts["custody"] = {"threshold": threshold, "presented": len(names)}
    return activation.TokenPins.from_secret(secret).user_pin


# -- keys -----------------------------------------------------------------------------------------
def _read_back(run: _Run, private_object, role: str) -> KeyAttributes:
    attributes = read_attributes(private_object)
    required = run.policy.required_key_attributes()
    actual = attributes.as_json()
    wrong = [f"{name}={actual[name]}" for name, want in required.items() if name in actual and actual[name] != want]
    run.key_attributes.append({"role": role, **actual, "policy_violations": wrong})
    if wrong:
        raise HsmError(f"key {attributes.label!r} has attributes the policy forbids: {', '.join(wrong)}; nothing signed")
    return attributes


def _signer_for(run: _Run, session, key, role: str) -> Pkcs11Signer:
    public_object, private_object = find_key_pair(session, key.label, key.key_id)
    _read_back(run, private_object, role)
    return Pkcs11Signer(private_object, public_key_of(public_object))


def _audit_signer(run: _Run, session) -> Pkcs11Signer:
    """The root's audit key, beside the root key in its token: made by the root-key ceremony, found by every other.

    It signs a checkpoint of the root's audit trail at the end of every ceremony, so a root's trail
    is as verifiable as an Issuing Authority's. Its public key goes into the transcript the witnesses
    sign, which is where an auditor takes it from.
    """
    spec = run.ceremony.hsm.audit_key
    if run.ceremony.ceremony_kind is CeremonyKind.ROOT_KEY:
        public_object, private_object = generate_p256_key_pair(session, spec.label, spec.key_id)
    else:
        public_object, private_object = find_key_pair(session, spec.label, spec.key_id)
    _read_back(run, private_object, "audit key")
    signer = Pkcs11Signer(private_object, public_key_of(public_object))
    run.facts["audit_key"] = {"label": spec.label, "id": spec.key_id.hex(), "key_id": key_id_of(signer.public_key),
                              "public_key_pem": signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()}
    return signer


def _head_anchor(ceremony: Ceremony) -> TokenHeadAnchor:
    """Where the root's trail head is anchored: beside its audit key, in the root's token."""
    spec = ceremony.hsm.audit_key
    return TokenHeadAnchor(ceremony.hsm.module, ceremony.hsm.token, spec.label, spec.key_id, ceremony.hsm.serial)


def _root_and_signer(run: _Run, session, role: str) -> tuple[x509.Certificate, Pkcs11Signer]:
    """The ceremony's issuer certificate and the HSM key, which must be that certificate's key."""
    root = read_certificate(run.ceremony.issuer_certificate)
    signer = _signer_for(run, session, run.ceremony.hsm.key, role)
    require_key_of(signer, root)
    return root, signer


# -- reading inputs -------------------------------------------------------------------------------
def _subject_public_key(ceremony: Ceremony):
    """The Issuing Authority's key: from its PKCS#10 request (proof of possession checked) or a public key file."""
    if ceremony.subject_csr:
        return request_file_public_key(ceremony.subject_csr)
    return read_public_key(ceremony.subject_public_key)


# -- after signing --------------------------------------------------------------------------------
def _verified(run: _Run, certificate: x509.Certificate, issuer: x509.Certificate, certificate_type: str | None, what: str) -> None:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise HsmError(f"the signed {what} does not verify against its issuer ({exc or 'bad signature'}); not released") from None
    if certificate_type is not None:  # the same lint as before signing, now on the signed certificate
        _, findings = lint_certificate(certificate.public_bytes(Encoding.DER), certificate_type=certificate_type,
                                       expected_policy_oids=(run.policy.policy_oid(run.ceremony.environment),),
                                       issuer_subject_der=issuer.subject.public_bytes())
        refuse_on_errors(findings, f"the signed {what} fails lint; not released")
    run.checks.append(f"{what}: signature verifies under the issuer's key" + ("; lint clean" if certificate_type else ""))


def _certificate_output(run: _Run, certificate: x509.Certificate, path: Path, what: str, certificate_type: str) -> None:
    run.records.append(record_for(certificate, policy_identity=(run.policy.name, run.policy.version, run.policy.sha256)))
    run.output(path, certificate.public_bytes(Encoding.PEM), what)
    run.facts.setdefault("certificates", []).append({"what": what, "type": certificate_type, "serial": f"{certificate.serial_number:032X}",
                                                    "subject": certificate.subject.rfc4514_string(),
                                                    "not_after": certificate.not_valid_after_utc.isoformat()})


# -- the ceremonies -------------------------------------------------------------------------------
def _root_key(run: _Run, session) -> None:
    ceremony = run.ceremony
    if ceremony.contingency is not None and run.policy.hierarchy is not PolicyKind.ORGANISATION:
        raise PolicyRefusal("6.1 contingency key", "only the Root OCA (organisation policy) has a contingency key")
    public_object, private_object = generate_p256_key_pair(session, ceremony.hsm.key.label, ceremony.hsm.key.key_id)
    _read_back(run, private_object, "root key")
    signer = Pkcs11Signer(private_object, public_key_of(public_object))
    extension = None
    if ceremony.contingency is not None:
        contingency_public, wrapping_key = generate_contingency_keys(
            session, ceremony.contingency.key.label, ceremony.contingency.key.key_id,
            ceremony.contingency.wrapping_key.label, ceremony.contingency.wrapping_key.key_id)
        _, contingency_private = find_key_pair(session, ceremony.contingency.key.label, ceremony.contingency.key.key_id)
        _read_back(run, contingency_private, "contingency key")
        wrapped = wrap_public_key(session, wrapping_key, contingency_public)
        extension = wrapped_apex_contingency_key(wrapped)
        run.facts["contingency"] = {"wrap_algorithm": ID_AES256_WRAP, "wrapped_sha256": hashlib.sha256(wrapped).hexdigest(),
                                    "critical": ceremony.contingency.critical, "wrapping_key": ceremony.contingency.wrapping_key.label}
    spec = ceremony.certificate
    params = run.policy.root_certificate_params(ceremony.environment, spec.not_before, extension, spec.not_after)
    if extension is not None:
        params = type(params)(**{**params.__dict__, "contingency_critical": ceremony.contingency.critical})
    lint = pre_issuance_check(CertificateType.ROOT, (run.policy.policy_oid(ceremony.environment),))
    certificate = sign_certificate(root_certificate(params, signer.public_key), signer, pre_issuance_check=lint)
    _verified(run, certificate, certificate, CertificateType.ROOT, "root certificate")
    _certificate_output(run, certificate, spec.output, "root certificate", CertificateType.ROOT)


def _issuing_ca(run: _Run, session) -> None:
    ceremony = run.ceremony
    root, signer = _root_and_signer(run, session, "root key")
    subject_key = _subject_public_key(ceremony)
    spec = ceremony.certificate
    params = run.policy.issuing_ca_certificate_params(ceremony.environment, spec.not_before, spec.not_after)
    lint = pre_issuance_check(CertificateType.ISSUING_CA, (run.policy.policy_oid(ceremony.environment),), issuer=root)
    certificate = sign_certificate(issuing_ca_certificate(params, subject_key, root), signer, pre_issuance_check=lint)
    _verified(run, certificate, root, CertificateType.ISSUING_CA, "Issuing Authority certificate")
    _certificate_output(run, certificate, spec.output, "Issuing Authority certificate", CertificateType.ISSUING_CA)


def _arl(run: _Run, session, connection) -> None:
    ceremony = run.ceremony
    root, signer = _root_and_signer(run, session, "root key")
    root_key_id = describe(root).subject_key_id.hex().upper()
    reconcile_issuer(connection, root_key_id)  # the ARL is signed from the root's state: it must be the audited one
    for item in ceremony.revoke:
        revoked = read_certificate(item.certificate)
        serial = f"{revoked.serial_number:032X}"
        record = revocable_record(connection, root_key_id, serial, where=str(item.certificate), remedy="; remove it from the ceremony file")
        run.policy.check_revocation(record.certificate_type, item.reason)
        run.revocations.append((root_key_id, serial, item.reason))
    already = revoked_entries(connection, root_key_id)
    entries = [RevokedEntry(int(serial, 16), datetime.fromisoformat(at), reason) for serial, at, reason in already]
    entries += [RevokedEntry(int(serial, 16), run.started, reason) for _, serial, reason in run.revocations]
    run.crl_number = last_crl_number(connection, root_key_id) + 1  # taken in _record, with the revocations
    run.facts["arl_issuer_key_id"] = root_key_id
    crl, _ = signed_list(root, signer, ListType.ARL, crl_number=run.crl_number, this_update_utc=run.started,
                         next_update_utc=run.policy.next_update(ListType.ARL, run.started), entries=sorted(entries, key=lambda e: e.serial_number))
    run.checks.append("ARL: signature verifies under the root's key; lint clean")
    run.output(ceremony.output, crl.public_bytes(Encoding.PEM), "ARL")
    run.facts["arl"] = {"crl_number": run.crl_number, "entries": len(entries), "next_update": crl.next_update_utc.isoformat(),
                        "revoked_now": [serial for _, serial, _ in run.revocations]}


def _root_rekey(run: _Run, session) -> None:
    ceremony = run.ceremony
    old_root, old_signer = _root_and_signer(run, session, "current root key")
    if ceremony.cross_certificate and not run.policy.root_cross_certify:
        raise PolicyRefusal("6.1.7 root_rekey", "the policy does not allow the old root to cross-certify the new one")
    public_object, private_object = generate_p256_key_pair(session, ceremony.new_key.label, ceremony.new_key.key_id)
    _read_back(run, private_object, "new root key")
    new_signer = Pkcs11Signer(private_object, public_key_of(public_object))
    spec = ceremony.certificate
    params = run.policy.root_certificate_params(ceremony.environment, spec.not_before, None, spec.not_after)
    lint = pre_issuance_check(CertificateType.ROOT, (run.policy.policy_oid(ceremony.environment),))
    new_root = sign_certificate(root_certificate(params, new_signer.public_key), new_signer, pre_issuance_check=lint)
    _verified(run, new_root, new_root, CertificateType.ROOT, "new root certificate")
    _certificate_output(run, new_root, spec.output, "new root certificate", CertificateType.ROOT)
    if ceremony.cross_certificate:
        # The old root certifies the new root's key under the root's name: relying parties that
        # trust only the old root reach the new one through it during the changeover.
        validity_end = min(params.validity.not_after_utc, old_root.not_valid_after_utc)
        cross_params = IssuingCaCertificateParams(params.subject, params.policy_oids, type(params.validity)(spec.not_before, validity_end),
                                                  params.path_length)
        lint = pre_issuance_check(CertificateType.CROSS_CERTIFICATE, (run.policy.policy_oid(ceremony.environment),), issuer=old_root)
        cross = sign_certificate(issuing_ca_certificate(cross_params, new_signer.public_key, old_root), old_signer, pre_issuance_check=lint)
        _verified(run, cross, old_root, CertificateType.CROSS_CERTIFICATE, "cross-certificate (old root -> new root key)")
        _certificate_output(run, cross, ceremony.cross_certificate, "cross-certificate", CertificateType.CROSS_CERTIFICATE)


def _contingency_recovery(run: _Run, session) -> None:
    ceremony = run.ceremony
    root, signer = _root_and_signer(run, session, "root key")
    try:
        extension = root.extensions.get_extension_for_oid(ID_PE_WRAPPED_APEX_CONTIN_KEY).value
    except x509.ExtensionNotFound:
        raise BadInputError(f"{ceremony.issuer_certificate}: the root certificate has no WrappedApexContingencyKey extension") from None
    value = WrappedApexContingencyKey.load(extension.value)
    wrapping_key = find_wrapping_key(session, ceremony.wrapping_key.label, ceremony.wrapping_key.key_id)
    key_value = export_wrapping_key(session, wrapping_key)
    contingency_public = unwrap_public_key(key_value, value["wrappedContinPubKey"].native)
    pem = contingency_public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    recovery = {"format": "smki-contingency-recovery/1", "root_serial": f"{root.serial_number:032X}",
                "wrap_algorithm": value["wrapAlgorithm"]["algorithm"].dotted, "wrapping_key_hex": key_value.hex(),
                "contingency_public_key_pem": pem.decode()}
    run.checks.append("the root certificate's wrapped contingency key unwraps under the exported key (RFC 3394 integrity check)")
    run.output(ceremony.output, json.dumps(recovery, indent=2).encode() + b"\n", "contingency recovery package", 0o600)
    run.facts["contingency_public_key_sha256"] = hashlib.sha256(pem).hexdigest()


# -- the transcript -------------------------------------------------------------------------------
def _transcript(run: _Run) -> dict:
    ceremony = run.ceremony
    return {
        "format": "smki-ceremony-transcript/1",
        "ceremony": {"type": ceremony.ceremony_kind, "name": ceremony.name, "file": str(ceremony.path), "sha256": ceremony.sha256},
        "authority": ceremony.authority,
        "date": run.started.isoformat(),
        "operator": run.operator,
        "custodians_present": run.custodians_present,
        "policy": run.policy.identity,
        "environment": ceremony.environment.value,
        "hsm": {"module": ceremony.hsm.module, "token": ceremony.hsm.token, "serial": ceremony.hsm.serial or None,
                **({"setup": ceremony.hsm.setup.value} if ceremony.ceremony_kind is CeremonyKind.ROOT_KEY else {})},
        "key_attributes": run.key_attributes,
        "checks": run.checks,
        "facts": run.facts,
        "outputs": [{"file": str(path), "what": what, "sha256": hashlib.sha256(data).hexdigest()} for path, data, what, _ in run.outputs],
        "witness_sign_off": [{"witness": name, "signature": "", "date": ""} for name in ceremony.witnesses],
    }


def _transcript_text(transcript: dict) -> str:
    lines = [f"SMKI ceremony transcript: {transcript['ceremony']['name']} ({transcript['ceremony']['type']})",
             f"date {transcript['date']}   operator {transcript['operator']}   authority {transcript['authority']}",
             f"ceremony file {transcript['ceremony']['file']}  sha256 {transcript['ceremony']['sha256']}",
             f"policy {transcript['policy']['name']} {transcript['policy']['version']}  sha256 {transcript['policy']['sha256']}",
             f"custodians present: {', '.join(transcript['custodians_present'])}",
             f"HSM: token {transcript['hsm']['token']} in {transcript['hsm']['module']}"
             + (f", set up by {transcript['hsm']['setup']}" if "setup" in transcript["hsm"] else ""),
             *(f"  {name.replace('_', ' ')}: {what}" for name, what in transcript["facts"].get("token", {}).items() if name != "setup"),
             "", "HSM key attributes read back:"]
    for key in transcript["key_attributes"]:
        flags = ", ".join(f"{name.upper()}={key[name]}" for name in ("local", "never_extractable", "sensitive", "always_sensitive", "extractable"))
        lines.append(f"  {key['role']}: {key['label']} id {key['key_id']}: {flags}")
    lines += ["", "Checks:", *(f"  {check}" for check in transcript["checks"]), "", "Outputs:"]
    lines += [f"  {o['file']}  sha256 {o['sha256']}  ({o['what']})" for o in transcript["outputs"]]
    lines += ["", "Witnesses: I saw this ceremony performed as written and these outputs produced."]
    lines += [f"  {w['witness']:<30} signature ______________________  date __________" for w in transcript["witness_sign_off"]]
    return "\n".join(lines) + "\n"


# -- the whole ceremony ---------------------------------------------------------------------------
_CEREMONIES = {CeremonyKind.ROOT_KEY: _root_key, CeremonyKind.ISSUING_CA: _issuing_ca, CeremonyKind.ROOT_REKEY: _root_rekey,
               CeremonyKind.CONTINGENCY_RECOVERY: _contingency_recovery}


def run_ceremony(ceremony: Ceremony, *, operator: str | None = None, passphrase: PassphraseSource | None = None,
                 vendor_pin: PinSource | None = None) -> dict:
    """Run the ceremony; return its transcript (also written with the outputs). `vendor_pin`: where the
    PIN the vendor set comes from, for a root-key ceremony that takes over its token (prompted otherwise)."""
    if vendor_pin is not None and ceremony.hsm.setup is not TokenSetup.TAKE_OVER:
        raise BadInputError(f"{vendor_pin.option} is for a root-key ceremony that takes over its token (hsm.setup: take-over); "
                            f"{ceremony.path} does not")
    for path in ceremony.outputs():
        refuse_existing(path)
    run = _Run(ceremony, operator or os.environ.get("USER") or getpass.getuser(), passphrase or _prompt)
    run.policy = load_policy(ceremony.policy)
    if ceremony.hsm.setup is TokenSetup.TAKE_OVER:
        # Before the root's state is made: a wrong vendor PIN, or a token already in use, leaves nothing written at all.
        run.vendor_login = _vendor_login(ceremony, vendor_pin)
    log.info("ceremony %s (%s) for %s: outputs checked, policy %s version %s", ceremony.name, ceremony.ceremony_kind.value,
             ceremony.authority, run.policy.name, run.policy.version)
    try:
        connection = open_state(ceremony.state)
    except BaseException:
        close_all()  # a take-over's vendor login ends with the ceremony
        raise
    audit = AuditTrail(connection)
    created_token = False
    with ExitStack() as held:
        try:
            if ceremony.ceremony_kind is CeremonyKind.ROOT_KEY:
                if (adopted(connection, run.policy.hierarchy) or {}).get("sha256") != run.policy.sha256:
                    adopt(connection, run.policy, run.operator, audit)
                require_adopted(connection, run.policy)  # an edited adoption row is not taken for the audited adoption
                pin = _new_root_token(run)
                created_token = True
            else:
                require_adopted(connection, run.policy)
                pin = _presented_pin(run)
            log.info("ceremony %s: custodians %s; logging in to token %r", ceremony.name, ", ".join(run.custodians_present), ceremony.hsm.token)
            session = open_session(ceremony.hsm.module, ceremony.hsm.token, pin, rw=ceremony.ceremony_kind.writes_keys, serial=ceremony.hsm.serial)
            del pin
            audit.signer = _audit_signer(run, session)  # from here on, a refusal is signed too
            audit.anchor = _head_anchor(ceremony)
            audit.check_anchor()  # every ceremony builds on the root's state: refuse a trail cut back behind its anchor
            log.info("ceremony %s: audit key and the trail's anchored head checked; %s", ceremony.name, ceremony.ceremony_kind.value)
            if ceremony.ceremony_kind is CeremonyKind.ARL:
                _arl(run, session, connection)
            else:
                _CEREMONIES[ceremony.ceremony_kind](run, session)
            transcript = _transcript(run)
            transcript_bytes = json.dumps(transcript, indent=2).encode() + b"\n"
            # From the commit on, the ceremony is finished, not abandoned: its shares are the only way back to the token's PIN.
            held.enter_context(interrupts_held(f"ceremony {ceremony.name} was recording its results and writing its outputs"))
            _record(run, connection, audit, hashlib.sha256(transcript_bytes).hexdigest())
            log.info("ceremony %s: %d certificate(s), %d revocation(s) recorded; checkpoint signed", ceremony.name, len(run.records),
                     len(run.revocations))
            anchor_failed = _anchor_committed(audit)
        except BaseException as error:
            _undo(run, connection, audit, error, created_token)
            raise
        finally:
            close_all()
        _write_outputs(run, transcript, transcript_bytes)
    log.info("ceremony %s: wrote %d output(s) and the transcript %s", ceremony.name, len(run.outputs), ceremony.transcript)
    if anchor_failed is not None:
        raise anchor_failed
    return transcript


def _undo(run: _Run, connection, audit: AuditTrail, error: BaseException, created_token: bool) -> None:
    """A failed ceremony: its refusal recorded, and the token it made deleted or the token it took over given back.

    Undone whole: a second Ctrl-C (operators press it again) must not stop the undoing half-way."""
    ceremony = run.ceremony
    with interrupts_held(f"ceremony {ceremony.name} was being undone"):
        if isinstance(error, SmkiError):
            _record_refusal(run, connection, audit, error, signed=not created_token)
        close_all()
        if created_token and ceremony.hsm.setup is TokenSetup.CREATE:
            delete_token(ceremony.hsm.token)  # a root ceremony that failed leaves no orphan token behind
        elif run.taken_over is not None:
            _give_back(run, error)  # nor a token with keys nobody asked for and a PIN nobody holds


def _write_outputs(run: _Run, transcript: dict, transcript_bytes: bytes) -> None:
    """The recorded ceremony's outputs (shares, certificates, ...) and its transcript, each never over a file."""
    for path, data, _, mode in run.outputs:
        write_new_file(path, data, mode)
    write_new_file(run.ceremony.transcript, transcript_bytes)
    write_new_file(run.ceremony.transcript.with_suffix(".txt"), _transcript_text(transcript).encode())


def _anchor_committed(audit: AuditTrail) -> HsmError | None:
    """The committed head anchored in the token (before close_all logs out); its failure, if it fails.

    The ceremony is on record by now: a failure here must not undo it (delete the token, give it back, or
    lose the shares), so it is returned, reported once the outputs are written. The trail stays good: a
    later run finds the anchor behind the head, as after any run whose anchoring failed."""
    try:
        audit.anchor_checkpointed()
    except SmkiError as exc:
        return HsmError(f"the ceremony is recorded and its outputs written, but its audit head could not be anchored in the token: {exc}")
    return None


def _record(run: _Run, connection, audit: AuditTrail, transcript_sha256: str) -> None:
    """The ceremony's records and its audit entry, in one transaction, before any output is released."""
    ceremony = run.ceremony
    change = StateChange()
    with transaction(connection):
        for record in run.records:
            insert_certificate(connection, record)
            change.issue(record.issuer_key_id, record.serial_hex)
        for issuer_key_id, serial, reason in run.revocations:
            record_revocation(connection, issuer_key_id, serial, run.started, reason)
            change.revoke(issuer_key_id, serial, run.started.isoformat(), reason)
        if run.crl_number is not None:
            change.crl(run.facts["arl_issuer_key_id"], next_crl_number(connection, run.facts["arl_issuer_key_id"], run.started))
        audit.append(AuditEntry(run.operator, Operation.ceremony(ceremony.ceremony_kind), "success",
                                {"ceremony": ceremony.name, "file_sha256": ceremony.sha256, "transcript_sha256": transcript_sha256,
                                 "outputs": [str(path) for path, *_ in run.outputs]},
                                change.details(custodians_present=run.custodians_present), run.policy.identity))
        audit.checkpoint(f"ceremony {ceremony.name}")


def _record_refusal(run: _Run, connection, audit: AuditTrail, error: SmkiError, signed: bool) -> None:
    """The refusal's audit entry; signed by the audit key when the ceremony got that far and the token survives.

    A refusal before the custodians' quorum cannot be signed (the key stays locked): the next
    ceremony's checkpoint covers it.
    """
    ceremony = run.ceremony
    with transaction(connection):
        audit.append(AuditEntry(run.operator, Operation.ceremony(ceremony.ceremony_kind), "refused",
                                {"ceremony": ceremony.name, "file_sha256": ceremony.sha256}, {"reason": str(error)}))
    if signed and audit.signer is not None:
        try:
            with transaction(connection):
                audit.checkpoint(f"ceremony {ceremony.name} (refused)")
        except SmkiError:
            pass  # the original refusal is what the operator must see; the entry waits for the next checkpoint


def _prompt(custodian: str, purpose: str) -> str:
    import click
    return click.prompt(f"{custodian}, {purpose}", hide_input=True, err=True)
