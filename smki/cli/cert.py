"""`smki cert`: sign one certificate of each GBCS profile with an HSM key, under the policy.

Every OID, name, validity and path length comes from the Certificate Policy file the
authority has adopted (`smki policy adopt`); the request-specific values (role, EUI-64,
usage, device type, the public key) are options. Each certificate is checked against the
policy, recorded in the authority's state with the policy's version and digest, audited,
and only then written out: by `RootAuthority` (root, issuing-ca) or `IssuingAuthority`
(organisation, device); these commands only read options and print.
"""

from __future__ import annotations

from pathlib import Path

import click

from smki.cli.configured import ConfiguredGroup
from smki.cli.common import POLICY, POLICY_HELP, audit_key_ref, emit, json_option, key_options, key_ref_from_options, module_option, pin_source_option, state_option
from smki.issuing.authority import IssuingAuthority
from smki.operations.results import IssuedCertificate


def emit_issued(as_json: bool, issued: IssuedCertificate) -> None:
    """Print what the authority issued (or, in a dry run, would issue): the file, serial, issuer and the policy that allowed it."""
    emit(as_json, issued.summary(), lambda d: (
        f"dry run: would write {d['file'] or '(no file)'}  subject {d['subject'] or '(empty)'}  issuer {d['issuer'] or '(empty)'}  "
        f"not after {d['not_after']}  policy {d['policy']['version']}: every check passed, the certificate lints clean; "
        "nothing signed, recorded or written" if d.get("dry_run") else
        f"wrote {d['file']}  serial {d['serial']}  issuer {d['issuer'] or '(empty)'}  policy {d['policy']['version']}"))


dry_run_option = click.option(
    "--dry-run", is_flag=True,
    help="Run every check the real run makes (policy, eligibility, the request, the HSM key and PIN against the "
    "issuer certificate, the lint of the exact to-be-signed certificate) and print what would be done; then stop. "
    "A dry run is not an operation: nothing is signed with the CA key, no file is written and the state is unchanged "
    "(no serial, record or audit entry). A refusal is the same refusal, with the same exit code.")


def issuing_authority(options: dict) -> IssuingAuthority:
    """The Issuing Authority the command's options describe (with a signing key when the command has key options)."""
    signs = "module_path" in options
    key = key_ref_from_options(options["module_path"], options["key_uri"], options["token_label"], options["key_label"],
                               options["key_id"], options["token_serial"]) if signs else None
    return IssuingAuthority(options["state_dir"], certificate=options.get("issuer_cert"), key=key, pin=options.get("pin_source"),
                            policy=options.get("policy_file"), environment=options.get("environment"), actor=options["actor"],
                            audit_key=audit_key_ref(options["audit_key_uri"], options.get("module_path")), audit_pin=options["audit_pin_source"])


def signing_options(func):
    """Where the signing key is, the authority's state, the policy and the output."""
    for option in reversed([
        module_option(), pin_source_option(), state_option,
        click.option("--policy", "policy_file", required=True, type=POLICY,
                     help=f"The Certificate Policy the authority has adopted: {POLICY_HELP}."),
        click.option("--environment", required=True, help="test or production: which OIDs of the policy apply."),
        click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PEM file (never overwritten)."),
        click.option("--not-before", help="Start of validity, ISO 8601 (default: today 00:00:00Z)."),
        json_option,
    ]):
        func = option(func)
    return key_options(func)


def issued_key_options(func):
    """--issuer-cert (the CA certifying) and --public-key (the key it certifies)."""
    func = click.option("--public-key", required=True, type=click.Path(path_type=Path), help="The public key to certify (PEM or DER SubjectPublicKeyInfo).")(func)
    return click.option("--issuer-cert", required=True, type=click.Path(path_type=Path), help="The issuing CA's certificate.")(func)


@click.group("cert", cls=ConfiguredGroup)
def cert_group() -> None:
    """Sign single certificates of the six GBCS profiles under the adopted Certificate Policy."""


def _root_authority(options: dict, certificate: Path | None = None):
    """The Root Authority the signing options name (its state, key, policy, environment, audit key)."""
    from smki.root.authority import RootAuthority

    return RootAuthority(options["state_dir"], certificate=certificate,
                         key=key_ref_from_options(options["module_path"], options["key_uri"], options["token_label"],
                                                  options["key_label"], options["key_id"], options["token_serial"]),
                         pin=options["pin_source"], policy=options["policy_file"], environment=options["environment"],
                         actor=options["actor"], audit_key=audit_key_ref(options["audit_key_uri"], options.get("module_path")), audit_pin=options["audit_pin_source"])


@cert_group.command("root")
@signing_options
@dry_run_option
def root_command(**options):
    """A self-signed Root OCA or Root DCA certificate for the key in the HSM (names, OIDs, validity from the policy)."""
    with _root_authority(options) as root:
        issued = root.self_sign(not_before=options["not_before"], out=options["out"], dry_run=options["dry_run"])
    emit_issued(options["as_json"], issued)


@cert_group.command("issuing-ca")
@signing_options
@issued_key_options
@dry_run_option
def issuing_ca_command(**options):
    """An Issuing OCA or Issuing DCA certificate, signed by the root key in the HSM."""
    with _root_authority(options, certificate=options["issuer_cert"]) as root:
        issued = root.certify_issuing_authority(options["public_key"], not_before=options["not_before"], out=options["out"],
                                                dry_run=options["dry_run"])
    emit_issued(options["as_json"], issued)


@cert_group.command("organisation")
@signing_options
@issued_key_options
@click.option("--requester", help="The requesting party's role (default: the subject's role), checked for eligibility (4.1).")
@click.option("--role", required=True, help="RemotePartyRole of the subject: name (supplier) or code (02).")
@click.option("--entity-id", required=True, help="The organisation's EUI-64 (16 hex digits).")
@click.option("--usage", required=True, help="DS (digitalSignature) or KA (keyAgreement).")
@click.option("--common-name", help="Friendly name (CN), as the policy allows.")
@dry_run_option
def organisation_command(**options):
    """An Organisation Certificate, signed by the Issuing OCA key in the HSM."""
    with issuing_authority(options) as authority:
        issued = authority.certify_organisation(options["public_key"], role=options["role"], entity_id=options["entity_id"],
                                                usage=options["usage"], requester=options["requester"], common_name=options["common_name"],
                                                not_before=options["not_before"], out=options["out"], dry_run=options["dry_run"])
    emit_issued(options["as_json"], issued)


@cert_group.command("device")
@signing_options
@issued_key_options
@click.option("--requester", required=True, help="The requesting party's role, checked for eligibility (4.1).")
@click.option("--device-id", required=True, help="The device's EUI-64 (16 hex digits).")
@click.option("--device-type", required=True, help="GSME, ESME, CHF, GPF, HCALCS, PPMID or TYPE2 (hwType from the policy).")
@click.option("--usage", required=True, help="DS (digitalSignature) or KA (keyAgreement).")
@dry_run_option
def device_command(**options):
    """A Device Certificate (empty subject, notAfter 99991231235959Z), signed by the Issuing DCA key.

    The per-device cap counts the certificates this authority already issued for the device.
    """
    with issuing_authority(options) as authority:
        issued = authority.certify_device(options["public_key"], device_id=options["device_id"], device_type=options["device_type"],
                                          usage=options["usage"], requester=options["requester"], not_before=options["not_before"],
                                          out=options["out"], dry_run=options["dry_run"])
    emit_issued(options["as_json"], issued)
