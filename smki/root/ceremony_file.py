"""Ceremony files: one strictly validated YAML file per root ceremony (unknown keys refused).

In the spirit of Let's Encrypt's ceremony tool: everything a ceremony does is written down
beforehand, reviewed, and its digest goes into the transcript. This module only reads and
checks the file (schema `smki/data/ceremonies/ceremony.schema.json`, duplicate keys refused, errors as
`file:line: field: what is wrong`) and turns it into a typed `Ceremony`; running it is
`smki.root.ceremony`. Paths in the file are relative to the file; its `policy:` may instead name a
policy smki ships (`builtin:organisation`, `builtin:device`), which is what the shipped examples do.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from smki.errors import BadInputError
from smki.hsm.config import default_module_path
from smki.policy import Environment
from smki.policy.loading import line_of, read_validated_yaml
from smki.shipped import builtin_policy, ceremony_schema
from smki.times import parse_utc


class CeremonyKind(enum.StrEnum):
    """What a ceremony does (the file's `ceremony` field, and the `ceremony.<kind>` audit operation)."""

    ROOT_KEY = "root-key"
    ISSUING_CA = "issuing-ca"
    ARL = "arl"
    ROOT_REKEY = "root-rekey"
    CONTINGENCY_RECOVERY = "contingency-recovery"

    @property
    def writes_keys(self) -> bool:
        """Does the ceremony create keys on the token (so opens a read-write session)?"""
        return self in (CeremonyKind.ROOT_KEY, CeremonyKind.ROOT_REKEY)


class TokenSetup(enum.StrEnum):
    """How a root-key ceremony's token comes to be (the file's `hsm.setup`)."""

    CREATE = "create"  # smki creates a SoftHSM token; its SO and user PINs derive from the custodians' secret
    TAKE_OVER = "take-over"  # a token the vendor's tool initialised: its user PIN is replaced, its SO PIN kept


class CeremonyFileError(BadInputError):
    """A ceremony file that cannot be run: `file:line: field: what is wrong`."""


@dataclass(frozen=True)
class KeySpec:
    label: str
    key_id: bytes


@dataclass(frozen=True)
class HsmSpec:
    module: str
    token: str
    key: KeySpec
    audit_key: KeySpec  # signs the root's audit checkpoints; lives beside the root key
    setup: TokenSetup = TokenSetup.CREATE  # root-key ceremonies only
    serial: str = ""  # the token's serial number, when its label does not single it out


# The audit key a ceremony file need not name: `<authority>-audit`, CKA_ID 02 (as the Issuing Authorities' audit keys).
DEFAULT_AUDIT_KEY_ID = bytes.fromhex("02")


@dataclass(frozen=True)
class ContingencySpec:
    key: KeySpec
    wrapping_key: KeySpec
    critical: bool


@dataclass(frozen=True)
class CertificateSpec:
    not_before: datetime
    not_after: datetime | None
    output: Path


@dataclass(frozen=True)
class Revocation:
    certificate: Path
    reason: str


@dataclass(frozen=True)
class Ceremony:
    """A checked ceremony file. Fields a ceremony kind does not use are None or empty."""

    ceremony_kind: CeremonyKind
    path: Path
    sha256: str
    name: str
    authority: str
    policy: Path | str  # a file, or `builtin:NAME` for a policy smki ships
    environment: Environment
    state: Path
    witnesses: tuple[str, ...]
    transcript: Path
    hsm: HsmSpec
    custodians: tuple[str, ...]  # root-key: every custodian; otherwise those presenting shares
    shares: Path  # directory of custodian share files
    certificate: CertificateSpec | None = None
    contingency: ContingencySpec | None = None
    issuer_certificate: Path | None = None
    subject_csr: Path | None = None
    subject_public_key: Path | None = None
    revoke: tuple[Revocation, ...] = ()
    output: Path | None = None
    new_key: KeySpec | None = None
    cross_certificate: Path | None = None
    wrapping_key: KeySpec | None = None

    def share_file(self, custodian: str) -> Path:
        return self.shares / f"{custodian}.share.json"

    def outputs(self) -> list[Path]:
        """Every file the ceremony writes: all must be absent before it starts."""
        paths = [self.transcript, self.transcript.with_suffix(".txt")]
        paths += [p for p in (self.certificate and self.certificate.output, self.output, self.cross_certificate) if p]
        if self.ceremony_kind is CeremonyKind.ROOT_KEY:
            paths += [self.share_file(name) for name in self.custodians]
        return paths


def _key(data: dict) -> KeySpec:
    return KeySpec(data["label"], bytes.fromhex(data["id"]))


def _date(text: str, path: Path, field: str) -> datetime:
    try:
        return parse_utc(str(text), f"{path}: certificate.{field}")
    except BadInputError as exc:
        raise CeremonyFileError(str(exc)) from None


def _policy(reference: str, path: Path, lines: dict, here) -> Path | str:
    """The ceremony's policy: `builtin:NAME` as it stands, a file relative to the ceremony file."""
    where = f"{path}:{line_of(lines, ('policy',))}: policy"
    try:
        kind = builtin_policy(reference)
    except BadInputError as exc:
        raise CeremonyFileError(f"{where}: {exc}") from None
    if kind is not None:
        return reference
    policy_file = here(reference)
    if not policy_file.is_file():  # said here, at its line, not later by the policy loader without one
        raise CeremonyFileError(f"{where}: {policy_file}: {'not a file' if policy_file.exists() else 'no such file'}")
    return policy_file


def load_ceremony(path: Path) -> Ceremony:
    path = Path(path)
    data, lines, raw = read_validated_yaml(path, ceremony_schema(), CeremonyFileError,
                                           "a ceremony file is a mapping with a `ceremony` type", what="ceremony")
    if "setup" in data["hsm"] and data["ceremony"] != CeremonyKind.ROOT_KEY:
        raise CeremonyFileError(f"{path}:{line_of(lines, ('hsm', 'setup'))}: hsm.setup: only a root-key ceremony sets up its token "
                                f"(this is a {data['ceremony']} ceremony)")
    base = path.resolve().parent
    here = lambda relative: (base / relative).resolve() if relative else None  # noqa: E731
    policy = _policy(data["policy"], path, lines, here)
    custodians = data["custodians"]
    certificate = data.get("certificate")
    certificate_spec = None
    if certificate:
        certificate_spec = CertificateSpec(_date(certificate["not_before"], path, "not_before"),
                                           _date(certificate["not_after"], path, "not_after") if certificate.get("not_after") else None,
                                           here(certificate["output"]))
    contingency = data.get("contingency")
    subject = data.get("subject", {})
    return Ceremony(
        ceremony_kind=CeremonyKind(data["ceremony"]), path=path, sha256=hashlib.sha256(raw).hexdigest(), name=data["name"], authority=data["authority"],
        policy=policy, environment=Environment.parse(data["environment"]), state=here(data["state"]),
        witnesses=tuple(data.get("witnesses", ())), transcript=here(data["transcript"]),
        hsm=HsmSpec(data["hsm"].get("module") or default_module_path(), data["hsm"]["token"], _key(data["hsm"]["key"]),
                    _key(data["hsm"]["audit_key"]) if data["hsm"].get("audit_key")
                    else KeySpec(f"{data['authority']}-audit", DEFAULT_AUDIT_KEY_ID),
                    TokenSetup(data["hsm"].get("setup", TokenSetup.CREATE)), data["hsm"].get("token_serial", "")),
        custodians=tuple(custodians.get("names") or custodians.get("present")), shares=here(custodians["shares"]),
        certificate=certificate_spec,
        contingency=ContingencySpec(_key(contingency["key"]), _key(contingency["wrapping_key"]), bool(contingency.get("critical", False)))
        if contingency else None,
        issuer_certificate=here(data.get("issuer_certificate")), subject_csr=here(subject.get("csr")),
        subject_public_key=here(subject.get("public_key")),
        revoke=tuple(Revocation(here(item["certificate"]), item["reason"]) for item in data.get("revoke", ())),
        output=here(data.get("output")), new_key=_key(data["new_key"]) if data.get("new_key") else None,
        cross_certificate=here(data.get("cross_certificate", {}).get("output")),
        wrapping_key=_key(data["wrapping_key"]) if data.get("wrapping_key") else None,
    )
