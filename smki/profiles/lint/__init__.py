"""Conformance: lint rules for SMKI certificates, and the pre-issuance check every signature passes."""

from smki.profiles.lint.certificate_rules import CERTIFICATE_RULES
from smki.profiles.lint.findings import Finding, Rule, Severity, errors_of, refuse_on_errors
from smki.profiles.lint.linter import lint_certificate, pre_issuance_check

__all__ = ["CERTIFICATE_RULES", "Finding", "Rule", "Severity", "errors_of", "refuse_on_errors", "lint_certificate", "pre_issuance_check"]
