"""`smki cert`: build and sign one certificate of each GBCS profile with an HSM key.

These are the low-level building blocks: every value is an option. Ceremonies and the
Issuing Authorities drive the same profiles with values taken from the Certificate Policy.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.audit.trail import AuditEntry
from smki.authorities.records import record_for
from smki.cli.common import (AuditedOperation, emit, json_option, key_options, key_ref_from_options, module_option,
                             pin_source_option, state_option)
from smki.store.certificates import insert_certificate
from smki.store.database import transaction
from smki.errors import BadInputError
from smki.files import refuse_existing, write_new_file
from smki.hsm.pins import PinSource
from smki.hsm.signer import open_signer
from smki.identifiers import EUI64, DeviceType, KeyUsage, RemotePartyRole
from smki.profiles import (
    DEVICE_NOT_AFTER, DeviceCertificateParams, IssuingCaCertificateParams, OrganisationCertificateParams,
    RootCertificateParams, Validity, ca_name, device_certificate, issuing_ca_certificate, organisation_certificate,
    root_certificate, sign_certificate,
)
from smki.profiles.public_keys import check_subject_public_key_info
from smki.profiles.serials import serial_hex
from smki.profiles.validity import utc_midnight


def parse_utc(text: str, option: str) -> datetime:
    """An ISO 8601 date or date-time, taken as UTC when it has no offset."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInputError(f"{option}: {text!r} is not an ISO 8601 date or date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def parse_ca_subject(text: str) -> x509.Name:
    """'OU=00,CN=ZA' -> a CA name with PrintableString attributes in that order."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise BadInputError(f"--subject: {part!r} is not ATTRIBUTE=value")
        pairs.append((name.strip().upper(), value.strip()))
    return ca_name(pairs)


def read_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise BadInputError(f"{path}: not a PEM or DER certificate") from None


def read_public_key(path: Path):
    """A subject public key from a PEM or DER SubjectPublicKeyInfo file: P-256, uncompressed, or refused."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
    if data.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----"):
        # Decode the armour ourselves: the raw DER must be checked (a compressed point is refused).
        body = b"".join(line for line in data.strip().splitlines() if not line.startswith(b"-----"))
        try:
            data = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise BadInputError(f"{path}: PEM public key has invalid Base64") from None
    return check_subject_public_key_info(data, str(path))


def _signed_output(certificate: x509.Certificate, out: Path, as_json: bool, operation: AuditedOperation) -> None:
    """Record the certificate and its audit entry in one transaction, then release it as a file."""
    record = record_for(certificate)
    operation.subject = {"serial": record.serial_hex, "type": record.certificate_type, "entity_id": record.entity_id,
                         "issuer_key_id": record.issuer_key_id, "file": str(out)}
    with transaction(operation.connection):
        insert_certificate(operation.connection, record)
        operation.audit.append(AuditEntry(operation.actor, operation.operation, "success", operation.subject))
    write_new_file(out, certificate.public_bytes(Encoding.PEM))
    data = {"file": str(out), "serial": serial_hex(certificate.serial_number), "subject": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(), "not_after": certificate.not_valid_after_utc.isoformat()}
    emit(as_json, data, lambda d: f"wrote {d['file']}  serial {d['serial']}  issuer {d['issuer'] or '(empty)'}")


def signing_options(func):
    for option in reversed([module_option(), pin_source_option(), state_option]):
        func = option(func)
    return key_options(func)


def common_output(func):
    for option in reversed([
        click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PEM file (never overwritten)."),
        click.option("--not-before", help="Start of validity, ISO 8601 (default: today 00:00:00Z)."),
        json_option,
    ]):
        func = option(func)
    return func


def _not_before(text: str | None) -> datetime:
    return parse_utc(text, "--not-before") if text else utc_midnight(datetime.now(timezone.utc))


def issued_key_options(func):
    """--issuer-cert (the CA certifying) and --public-key (the key it certifies)."""
    func = click.option("--public-key", required=True, type=click.Path(path_type=Path), help="The public key to certify (PEM or DER SubjectPublicKeyInfo).")(func)
    return click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The issuing CA's certificate.")(func)


@click.group("cert")
def cert_group() -> None:
    """Build and sign single certificates of the six GBCS profiles (low-level; values as options)."""


@cert_group.command("root")
@signing_options
@common_output
@click.option("--subject", required=True, help="CA name, e.g. 'OU=00,CN=ZA' (PrintableString, in this order).")
@click.option("--policy-oid", "policy_oids", multiple=True, required=True, help="certificatePolicies OID (repeatable).")
@click.option("--not-after", required=True, help="End of validity, ISO 8601.")
@click.option("--path-length", type=int, default=1, show_default=True, help="basicConstraints pathLenConstraint.")
def root_command(module_path, key_uri, token_label, key_label, key_id, pin_source, state_dir, actor, audit_key_uri, audit_pin_source, out, not_before, as_json, subject, policy_oids, not_after, path_length):
    """A self-signed Root OCA or Root DCA certificate for the key in the HSM."""
    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, "certificate.issue.root") as operation:
        key = key_ref_from_options(module_path, key_uri, token_label, key_label, key_id)
        params = RootCertificateParams(parse_ca_subject(subject), tuple(policy_oids),
                                       Validity(_not_before(not_before), parse_utc(not_after, "--not-after")), path_length)
        refuse_existing(out)
        signer = open_signer(key, PinSource.parse(pin_source))
        _signed_output(sign_certificate(root_certificate(params, signer.public_key), signer), out, as_json, operation)


@cert_group.command("issuing-ca")
@signing_options
@common_output
@issued_key_options
@click.option("--subject", required=True, help="CA name, e.g. 'OU=07,CN=Z1'.")
@click.option("--policy-oid", "policy_oids", multiple=True, required=True, help="certificatePolicies OID (repeatable).")
@click.option("--not-after", required=True, help="End of validity, ISO 8601.")
@click.option("--path-length", type=int, default=0, show_default=True)
def issuing_ca_command(module_path, key_uri, token_label, key_label, key_id, pin_source, state_dir, actor, audit_key_uri, audit_pin_source, out, not_before, as_json, issuer_cert, public_key, subject, policy_oids, not_after, path_length):
    """An Issuing OCA or Issuing DCA certificate, signed by the root key in the HSM."""
    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, "certificate.issue.issuing-ca") as operation:
        key = key_ref_from_options(module_path, key_uri, token_label, key_label, key_id)
        issuer, subject_key = read_certificate(issuer_cert), read_public_key(public_key)
        params = IssuingCaCertificateParams(parse_ca_subject(subject), tuple(policy_oids),
                                            Validity(_not_before(not_before), parse_utc(not_after, "--not-after")), path_length)
        _issue(operation, issuing_ca_certificate(params, subject_key, issuer), key, pin_source, issuer, out, as_json)


@cert_group.command("organisation")
@signing_options
@common_output
@issued_key_options
@click.option("--role", required=True, help="RemotePartyRole: name (supplier) or code (02).")
@click.option("--entity-id", required=True, help="The organisation's EUI-64 (16 hex digits).")
@click.option("--usage", required=True, help="DS (digitalSignature) or KA (keyAgreement).")
@click.option("--common-name", help="Optional friendly name (CN).")
@click.option("--policy-oid", required=True, help="The Organisation policy OID.")
@click.option("--not-after", required=True, help="End of validity, ISO 8601.")
def organisation_command(module_path, key_uri, token_label, key_label, key_id, pin_source, state_dir, actor, audit_key_uri, audit_pin_source, out, not_before, as_json, issuer_cert, public_key, role, entity_id, usage, common_name, policy_oid, not_after):
    """An Organisation Certificate, signed by the Issuing OCA key in the HSM."""
    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, "certificate.issue.organisation") as operation:
        key = key_ref_from_options(module_path, key_uri, token_label, key_label, key_id)
        params = OrganisationCertificateParams(RemotePartyRole.parse(role), EUI64.parse(entity_id), KeyUsage.parse(usage), policy_oid,
                                               Validity(_not_before(not_before), parse_utc(not_after, "--not-after")), common_name)
        issuer, subject_key = read_certificate(issuer_cert), read_public_key(public_key)
        _issue(operation, organisation_certificate(params, subject_key, issuer), key, pin_source, issuer, out, as_json)


@cert_group.command("device")
@signing_options
@common_output
@issued_key_options
@click.option("--device-id", required=True, help="The device's EUI-64 (16 hex digits).")
@click.option("--device-type", required=True, help="GSME, ESME, CHF, GPF, HCALCS, PPMID or TYPE2.")
@click.option("--hw-type-oid", required=True, help="HardwareModuleName hwType OID for this device type.")
@click.option("--usage", required=True, help="DS (digitalSignature) or KA (keyAgreement).")
@click.option("--policy-oid", required=True, help="The Device policy OID.")
def device_command(module_path, key_uri, token_label, key_label, key_id, pin_source, state_dir, actor, audit_key_uri, audit_pin_source, out, not_before, as_json, issuer_cert, public_key, device_id, device_type, hw_type_oid, usage, policy_oid):
    """A Device Certificate (empty subject, notAfter 99991231235959Z), signed by the Issuing DCA key."""
    with AuditedOperation(state_dir, actor, audit_key_uri, audit_pin_source, "certificate.issue.device") as operation:
        key = key_ref_from_options(module_path, key_uri, token_label, key_label, key_id)
        DeviceType.parse(device_type)  # validated here; the hwType OID for it comes from the policy
        params = DeviceCertificateParams(EUI64.parse(device_id), hw_type_oid, KeyUsage.parse(usage), policy_oid,
                                         Validity(_not_before(not_before), DEVICE_NOT_AFTER))
        issuer, subject_key = read_certificate(issuer_cert), read_public_key(public_key)
        _issue(operation, device_certificate(params, subject_key, issuer), key, pin_source, issuer, out, as_json)


def _issue(operation: AuditedOperation, builder: x509.CertificateBuilder, key, pin_source: str, issuer: x509.Certificate, out: Path, as_json: bool) -> None:
    """Sign with the issuer's HSM key, which must be the issuer certificate's key, and write the output."""
    refuse_existing(out)
    signer = open_signer(key, PinSource.parse(pin_source))
    if signer.public_key.public_numbers() != issuer.public_key().public_numbers():
        raise BadInputError(f"HSM key {key.key_label!r} on token {key.token_label!r} does not match the issuer certificate's public key")
    _signed_output(sign_certificate(builder, signer), out, as_json, operation)
