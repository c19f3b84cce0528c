"""`smki cert`: sign one certificate of each GBCS profile with an HSM key, under the policy.

Every OID, name, validity and path length comes from the Certificate Policy file the
authority has adopted (`smki policy adopt`); the request-specific values (role, EUI-64,
usage, device type, the public key) are options. Each certificate is checked against the
policy, recorded in the authority's state with the policy's version and digest, audited,
and only then written out.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.operations.release import record_and_release
from smki.cli.common import (AuditedOperation, audit_key_ref, emit, json_option, key_options, key_ref_from_options, module_option,
                             pin_source_option, state_option)
from smki.errors import BadInputError
from smki.files import refuse_existing
from smki.hsm.signer import open_signer, require_key_of
from smki.identifiers import EUI64, DeviceType, KeyUsage, RemotePartyRole
from smki.policy import Environment, load_policy
from smki.policy.adoption import require_adopted
from smki.profiles import device_certificate, organisation_certificate, sign_certificate
from smki.profiles.files import parse_utc, read_certificate, read_public_key
from smki.profiles.lint import pre_issuance_check
from smki.profiles.validity import utc_midnight
from smki.store.certificates import list_certificates


def _signed_output(certificate: x509.Certificate, out: Path, as_json: bool, operation, policy,
                   request_sha256: str | None = None) -> None:
    """Record the certificate and its audit entry in one transaction, then release it as a file."""
    record = record_and_release(operation, certificate, policy, request_sha256=request_sha256, out=out)
    data = {"file": str(out), "serial": record.serial_hex, "subject": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(), "not_after": certificate.not_valid_after_utc.isoformat(),
            "policy": policy.identity}
    emit(as_json, data, lambda d: f"wrote {d['file']}  serial {d['serial']}  issuer {d['issuer'] or '(empty)'}  policy {d['policy']['version']}")


def signing_options(func):
    """Where the signing key is, the authority's state, the policy and the output."""
    for option in reversed([
        module_option(), pin_source_option(), state_option,
        click.option("--policy", "policy_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="The Certificate Policy file the authority has adopted (policies/organisation.yaml or device.yaml)."),
        click.option("--environment", required=True, help="test or production: which OIDs of the policy apply."),
        click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PEM file (never overwritten)."),
        click.option("--not-before", help="Start of validity, ISO 8601 (default: today 00:00:00Z)."),
        json_option,
    ]):
        func = option(func)
    return key_options(func)


def _not_before(text: str | None) -> datetime:
    return parse_utc(text, "--not-before") if text else utc_midnight(datetime.now(timezone.utc))


def issued_key_options(func):
    """--issuer-cert (the CA certifying) and --public-key (the key it certifies)."""
    func = click.option("--public-key", required=True, type=click.Path(path_type=Path), help="The public key to certify (PEM or DER SubjectPublicKeyInfo).")(func)
    return click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The issuing CA's certificate.")(func)


class Issuance:
    """What every `smki cert` command does around its profile: state, adopted policy, key, output."""

    def __init__(self, options: dict, operation_name: str) -> None:
        self.options = options
        self.operation = AuditedOperation(options["state_dir"], options["actor"], options["audit_key_uri"],
                                          options["audit_pin_source"], operation_name)

    def __enter__(self):
        self.operation.__enter__()
        try:
            o = self.options
            self.environment = Environment.parse(o["environment"])
            self.policy = load_policy(o["policy_file"])
            require_adopted(self.operation.connection, self.policy)
            self.key = key_ref_from_options(o["module_path"], o["key_uri"], o["token_label"], o["key_label"], o["key_id"])
            self.not_before = _not_before(o["not_before"])
            refuse_existing(o["out"])
        except BaseException as error:  # `with` does not call __exit__ when __enter__ raises: audit the refusal here
            self.operation.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def __exit__(self, *exc_info):
        return self.operation.__exit__(*exc_info)

    def sign(self, certificate_type: str, build, issuer: x509.Certificate | None = None, request_sha256: str | None = None) -> None:
        """Lint the draft, sign with the HSM key (which must be the issuer certificate's key), record, audit, write.

        `build(signing_public_key)` returns the certificate builder (a root certifies the signing key itself).
        """
        signer = open_signer(self.key, self.options["pin_source"])
        if issuer is not None:
            require_key_of(signer, issuer, f"HSM key {self.key.key_label!r} on token {self.key.token_label!r}")
        lint = pre_issuance_check(certificate_type, (self.policy.policy_oid(self.environment),), issuer=issuer)
        certificate = sign_certificate(build(signer.public_key), signer, pre_issuance_check=lint)
        _signed_output(certificate, self.options["out"], self.options["as_json"], self.operation, self.policy, request_sha256)


@click.group("cert")
def cert_group() -> None:
    """Sign single certificates of the six GBCS profiles under the adopted Certificate Policy."""


def _root_authority(options: dict, certificate: Path | None = None):
    """The Root Authority the signing options name (its state, key, policy, environment, audit key)."""
    from smki.root.authority import RootAuthority

    return RootAuthority(options["state_dir"], certificate=certificate,
                         key=key_ref_from_options(options["module_path"], options["key_uri"], options["token_label"],
                                                  options["key_label"], options["key_id"]),
                         pin=options["pin_source"], policy=options["policy_file"], environment=options["environment"],
                         actor=options["actor"], audit_key=audit_key_ref(options["audit_key_uri"]), audit_pin=options["audit_pin_source"])


def _emit_issued(as_json: bool, issued) -> None:
    emit(as_json, issued.summary(),
         lambda d: f"wrote {d['file']}  serial {d['serial']}  issuer {d['issuer'] or '(empty)'}  policy {d['policy']['version']}")


@cert_group.command("root")
@signing_options
def root_command(**options):
    """A self-signed Root OCA or Root DCA certificate for the key in the HSM (names, OIDs, validity from the policy)."""
    with _root_authority(options) as root:
        issued = root.self_sign(not_before=options["not_before"], out=options["out"])
    _emit_issued(options["as_json"], issued)


@cert_group.command("issuing-ca")
@signing_options
@issued_key_options
def issuing_ca_command(**options):
    """An Issuing OCA or Issuing DCA certificate, signed by the root key in the HSM."""
    with _root_authority(options, certificate=options["issuer_cert"]) as root:
        issued = root.certify_issuing_authority(options["public_key"], not_before=options["not_before"], out=options["out"])
    _emit_issued(options["as_json"], issued)


@cert_group.command("organisation")
@signing_options
@issued_key_options
@click.option("--requester", help="The requesting party's role (default: the subject's role), checked for eligibility (4.1).")
@click.option("--role", required=True, help="RemotePartyRole of the subject: name (supplier) or code (02).")
@click.option("--entity-id", required=True, help="The organisation's EUI-64 (16 hex digits).")
@click.option("--usage", required=True, help="DS (digitalSignature) or KA (keyAgreement).")
@click.option("--common-name", help="Friendly name (CN), as the policy allows.")
def organisation_command(**options):
    """An Organisation Certificate, signed by the Issuing OCA key in the HSM."""
    with Issuance(options, "certificate.issue.organisation") as issuance:
        role = RemotePartyRole.parse(options["role"])
        requester = RemotePartyRole.parse(options["requester"]) if options["requester"] else role
        params = issuance.policy.organisation_certificate_params(
            issuance.environment, requester=requester, role=role, entity_id=EUI64.parse(options["entity_id"]),
            key_usage=KeyUsage.parse(options["usage"]), common_name=options["common_name"], not_before=issuance.not_before)
        issuer, subject_key = read_certificate(options["issuer_cert"]), read_public_key(options["public_key"])
        issuance.sign("organisation", lambda _: organisation_certificate(params, subject_key, issuer), issuer)


@cert_group.command("device")
@signing_options
@issued_key_options
@click.option("--requester", required=True, help="The requesting party's role, checked for eligibility (4.1).")
@click.option("--device-id", required=True, help="The device's EUI-64 (16 hex digits).")
@click.option("--device-type", required=True, help="GSME, ESME, CHF, GPF, HCALCS, PPMID or TYPE2 (hwType from the policy).")
@click.option("--usage", required=True, help="DS (digitalSignature) or KA (keyAgreement).")
def device_command(**options):
    """A Device Certificate (empty subject, notAfter 99991231235959Z), signed by the Issuing DCA key.

    The per-device cap counts the certificates this authority already issued for the device.
    """
    with Issuance(options, "certificate.issue.device") as issuance:
        device_id = EUI64.parse(options["device_id"])
        existing = len(list_certificates(issuance.operation.connection, certificate_type="device", entity_id=device_id.hex))
        params = issuance.policy.device_certificate_params(
            issuance.environment, requester=RemotePartyRole.parse(options["requester"]), device_id=device_id,
            device_type=DeviceType.parse(options["device_type"]), key_usage=KeyUsage.parse(options["usage"]),
            not_before=issuance.not_before, existing_certificates=existing, single_request=False)
        issuer, subject_key = read_certificate(options["issuer_cert"]), read_public_key(options["public_key"])
        issuance.sign("device", lambda _: device_certificate(params, subject_key, issuer), issuer)
