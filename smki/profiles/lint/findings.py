"""Lint findings and rules, in the manner of pkilint: small named rules, each with an id,
a severity and a message; validators are lists of rules."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from smki.errors import RefusedError


class Severity(enum.IntEnum):
    ERROR = 1  # breaks smki-profiles.md (a GBCS section 12 or SMKI "must")
    WARNING = 2  # differs from what the test PKI does, without breaking a rule
    NOTICE = 3


@dataclass(frozen=True)
class Finding:
    rule_id: str
    severity: Severity
    message: str

    def as_json(self) -> dict:
        return {"rule": self.rule_id, "severity": self.severity.name.lower(), "message": self.message}


@dataclass(frozen=True)
class Rule:
    rule_id: str
    severity: Severity
    description: str
    check: Callable  # (view) -> message | None
    cheap: bool = True  # structural and fast: run on every certificate of a batch

    def run(self, view) -> Finding | None:
        message = self.check(view)
        return Finding(self.rule_id, self.severity, message) if message else None


def errors_of(findings: list[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.severity is Severity.ERROR]


def refuse_on_errors(findings: list[Finding], what: str) -> None:
    """The one place error findings become a refusal (exit 1), for every actor: `what` names the
    check in the message, e.g. "pre-issuance lint refused the certificate"."""
    errors = errors_of(findings)
    if errors:
        raise RefusedError(f"{what}: " + "; ".join(f"{f.rule_id}: {f.message}" for f in errors))
