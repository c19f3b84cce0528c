"""`smki lint`: is this a correct SMKI certificate, and if not, why."""

from __future__ import annotations

import enum
import functools
from pathlib import Path

import click

from smki.cli.configured import ConfiguredCommand
from smki.cli.common import emit, json_option
from smki.errors import EXIT_BAD_INPUT, EXIT_REFUSED, BadInputError
from smki.files import MAX_CRL_BYTES, MAX_LINT_BYTES, read_input
from smki.identifiers import PolicyKind
from smki.policy import Environment, load_policy
from smki.profiles.lint import CERTIFICATE_RULES, lint_certificate
from smki.profiles.lint.crl_rules import CRL_RULES, lint_crl
from smki.profiles.files import load_certificate, load_crl, read_certificate
from smki.profiles.lint.certificate_view import CERTIFICATE_TYPES
from smki.profiles.pem import PemLabel, der_object, pem_blocks, single_object
from smki.shipped import BUILTIN_POLICIES, builtin_name


class Artefact(enum.Enum):
    """What one object in a file given to `smki lint` is."""

    CERTIFICATE = "certificate"
    CRL = "crl"
    CSR = "csr"


_ARTEFACTS = {PemLabel.CERTIFICATE: Artefact.CERTIFICATE, PemLabel.CRL: Artefact.CRL, PemLabel.CSR: Artefact.CSR, PemLabel.NEW_CSR: Artefact.CSR}


def _der_artefact(der: bytes) -> Artefact:
    """certificate, crl or csr, from the DER's shape (a CRL's TBS has no [0] version tag; a CSR's has INTEGER 0 and a Name)."""
    from asn1crypto import core
    try:
        outer = core.Sequence.load(der)
        tbs = core.Sequence.load(outer[0].dump())
        first = tbs[0].dump()
    except (ValueError, TypeError, IndexError):
        return Artefact.CERTIFICATE  # let the certificate parser report what is wrong
    if first[:1] == b"\xa0":
        return Artefact.CERTIFICATE
    if first == b"\x02\x01\x00" and len(outer) == 3 and tbs[2].dump()[:1] == b"\x30" and len(tbs) == 4:
        return Artefact.CSR
    return Artefact.CRL


def _artefacts(path: Path) -> list[tuple[str, Artefact, bytes]]:
    """(label, artefact, DER) of each certificate, CRL or CSR in a PEM (one or more blocks, only whitespace
    around them) or DER (exactly one object) file."""
    try:
        data = read_input(path, MAX_LINT_BYTES)
    except BadInputError as exc:  # each result already names its file
        raise BadInputError(str(exc).removeprefix(f"{path}: ")) from None
    if data[:1] == b"\x30":
        return [(str(path), _der_artefact(data), der_object(data, ""))]
    blocks = pem_blocks(data, "", tuple(_ARTEFACTS))
    return [(f"{path}" + (f"#{index + 1}" if len(blocks) > 1 else ""), _ARTEFACTS[label], der) for index, (label, der) in enumerate(blocks)]


def _lint_one(artefact: Artefact, der: bytes, certificate_type, expected, rfc5280: bool):
    """(type, findings as JSON) of one artefact; BadInputError when it cannot be parsed."""
    if artefact is Artefact.CRL:
        lint_type, findings = lint_crl(der)
        return lint_type, [f.as_json() for f in findings]
    if artefact is Artefact.CSR:
        return _lint_csr(der)
    lint_type, findings = lint_certificate(der, certificate_type=certificate_type, expected_policy_oids=expected,
                                           policy_roles=shipped_policy_roles())
    rows = [f.as_json() for f in findings]
    if rfc5280:
        from smki.profiles.lint.pkix import rfc5280_findings
        rows += [{"rule": "pkilint." + text.split(" ")[0], "severity": "error" if "(ERROR)" in text or "(FATAL)" in text else "warning",
                  "message": text} for text in rfc5280_findings(der)]
    return lint_type, rows


def _lint_csr(der: bytes):
    """A CSR is checked by the intake rules an Issuing Authority applies; a refusal is one finding with its outcome code."""
    from smki.requests import RequestRejected, parse_device_request, parse_organisation_request
    from smki.requests.outcomes import Outcome

    device = b"\x06\x08\x2b\x06\x01\x05\x05\x07\x08\x04" in der  # id-on-hardwareModuleName requested
    try:
        (parse_device_request if device else parse_organisation_request)(der)
        return ("device-csr" if device else "organisation-csr"), []
    except RequestRejected as exc:
        if exc.outcome in (Outcome.NOT_DECODABLE, Outcome.NOT_PKCS10):
            raise BadInputError(exc.reason) from None
        return ("device-csr" if device else "organisation-csr"), [{"rule": f"smki.csr.{exc.outcome.name.lower()}", "severity": "error",
                                                                     "message": f"{exc.outcome.code} {exc.reason}"}]


def _files(paths: tuple[Path, ...]):
    for path in paths:
        if path.is_dir():
            # Dangling links are included: they are files someone meant to be linted, and get an error.
            yield from sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
        else:
            yield path


def expected_policy_oids(environment: str | None, policy_oids: tuple[str, ...]) -> tuple[str, ...]:
    """The policy OIDs a certificate must carry: given, or both shipped policies' OIDs for the environment."""
    if not environment:
        return tuple(policy_oids)
    env = Environment.parse(environment)
    return tuple(policy_oids) + tuple(load_policy(name).policy_oid(env) for name in BUILTIN_POLICIES)


@functools.cache
def shipped_policy_roles() -> tuple[str, ...]:
    """OU codes of the roles the shipped Organisation Certificate policy names."""
    return tuple(role.ou for role in load_policy(builtin_name(PolicyKind.ORGANISATION)).organisation_roles)


@click.command("lint", cls=ConfiguredCommand)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--type", "certificate_type", type=click.Choice(CERTIFICATE_TYPES), help="Lint as this type (default: detected).")
@click.option("--environment", help="Require the shipped policies' OIDs for test or production.")
@click.option("--policy-oid", "policy_oids", multiple=True, help="Require one of these policy OIDs (repeatable).")
@click.option("--rules", "list_rules", is_flag=True, help="List the rules and exit.")
@click.option("--rfc5280", is_flag=True, help="Also run pkilint's RFC 5280 certificate validators (pip install smki[rfc5280]).")
@json_option
def lint_command(paths, certificate_type, environment, policy_oids, list_rules, rfc5280, as_json) -> None:
    """Lint SMKI certificates, CRLs, ARLs and CSRs (PEM or DER, files or directories) against shared/docs/smki-profiles.md.

    Exit 0: no error findings; 1: some certificate has an error finding; 3: some file could
    not be read or parsed (the others are still checked).
    """
    if list_rules:
        emit(as_json, [{"rule": r.rule_id, "severity": r.severity.name.lower(), "checks": r.description} for r in CERTIFICATE_RULES + CRL_RULES],
             lambda rows: "\n".join(f"{r['rule']:<42} {r['severity']:<8} {r['checks']}" for r in rows))
        return
    if not paths:
        raise click.UsageError("give the files or directories to lint (or --rules)")
    expected = expected_policy_oids(environment, policy_oids)
    results, unreadable, refused = [], False, False
    for path in _files(paths):
        try:
            artefacts = _artefacts(path)
        except (BadInputError, OSError) as exc:
            results.append({"file": str(path), "error": str(exc) if isinstance(exc, BadInputError) else exc.strerror})
            unreadable = True
            continue
        for label, artefact, der in artefacts:
            try:
                lint_type, findings = _lint_one(artefact, der, certificate_type, expected, rfc5280)
            except BadInputError as exc:
                results.append({"file": label, "error": str(exc)})
                unreadable = True
                continue
            refused |= any(f["severity"] == "error" for f in findings)
            results.append({"file": label, "type": lint_type, "findings": findings})
    emit(as_json, results, _text)
    if unreadable or refused:
        raise SystemExit(EXIT_BAD_INPUT if unreadable else EXIT_REFUSED)


def _text(results: list[dict]) -> str:
    lines = []
    for result in results:
        if "error" in result:
            lines.append(f"{result['file']}: cannot lint: {result['error']}")
        elif not result["findings"]:
            lines.append(f"{result['file']}: {result['type']}: clean")
        else:
            lines.append(f"{result['file']}: {result['type']}:")
            lines += [f"  {f['severity']:<8} {f['rule']}: {f['message']}" for f in result["findings"]]
    return "\n".join(lines)


def _load_certificates(paths) -> list:
    certificates = []
    for path in paths:
        try:
            artefacts = _artefacts(Path(path))
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from None
        except OSError as exc:
            raise BadInputError(f"{path}: {exc.strerror}") from None
        certificates += [load_certificate(der, label, "not a DER X.509 certificate") for label, _, der in artefacts]
    return certificates


def _load_crls(paths) -> list:
    return [load_crl(single_object(read_input(Path(path), MAX_CRL_BYTES), (PemLabel.CRL,), str(path)), str(path)) for path in paths]


@click.command("verify", cls=ConfiguredCommand)
@click.argument("leaf", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--anchor", "anchors", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A trust anchor certificate (a root, or an Issuing CA you trust directly). Repeatable.")
@click.option("--intermediate", "intermediates", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="Repeatable.")
@click.option("--crl", "crl_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="A CRL or ARL to check revocation against. Repeatable.")
@click.option("--at", "at_text", help="Validate at this time: ISO 8601 or unix seconds (default: now).")
@click.option("--environment", help="Require the shipped policies' OIDs for test or production.")
@click.option("--policy-oid", "policy_oids", multiple=True, help="Require one of these policy OIDs. Repeatable.")
@json_option
def verify_command(leaf, anchors, intermediates, crl_files, at_text, environment, policy_oids, as_json) -> None:
    """Validate LEAF's path to a trust anchor by AKI -> SKI: signatures, names, constraints, policy, time, revocation.

    Exit 0 valid, 1 invalid (with the reason), 3 unreadable input.
    """
    from datetime import datetime, timezone

    from smki.profiles.pathvalidation import validate_path
    from smki.times import parse_utc

    at = datetime.now(timezone.utc) if at_text is None else parse_utc(at_text, "--at", unix_seconds=True)
    [certificate] = [read_certificate(leaf)]  # exactly one: a bundle's first certificate is not "the leaf"
    result = validate_path(certificate, _load_certificates(anchors), _load_certificates(intermediates), at=at,
                           expected_policy_oids=expected_policy_oids(environment, policy_oids), crls=_load_crls(crl_files))
    data = {"valid": result.valid, "reason": result.reason, "at": at.isoformat(), "revocation_checked": result.revocation_checked,
            "chain": [c.subject.rfc4514_string() or "(empty subject)" for c in result.chain]}
    emit(as_json, data, lambda d: (f"{leaf}: OK ({' <- '.join(reversed(d['chain']))})" if d["valid"] else f"{leaf}: INVALID: {d['reason']}"))
    if not result.valid:
        raise SystemExit(EXIT_REFUSED)
