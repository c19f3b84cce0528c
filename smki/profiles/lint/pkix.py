"""pkilint's RFC 5280 certificate validators (`smki lint --rfc5280`, and the tests' independent check).

pkilint is an optional dependency (`pip install smki[rfc5280]`); it is imported only here.

pkilint maps attribute 2.5.4.45 to DirectoryString, but X.520 uniqueIdentifier is a
BIT STRING (UniqueIdentifier), as every SMKI Organisation Certificate encodes it; with
the stock mapping even the real ZAZ1 certificates fail to decode. The mapping is
corrected here and nothing else is changed.
"""

from __future__ import annotations

from pkilint import loader
from pkilint.pkix import certificate, extension, name
from pkilint.validation import ValidationFindingSeverity
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280

ATTRIBUTE_TYPES = {**name.ATTRIBUTE_TYPE_MAPPINGS, univ.ObjectIdentifier("2.5.4.45"): rfc5280.UniqueIdentifier()}

_VALIDATOR = certificate.create_pkix_certificate_validator_container(
    certificate.create_decoding_validators(ATTRIBUTE_TYPES, extension.EXTENSION_MAPPINGS),
    [
        certificate.create_issuer_validator_container([]),
        certificate.create_validity_validator_container(),
        certificate.create_subject_validator_container([]),
        certificate.create_extensions_validator_container([]),
        certificate.create_spki_validator_container([]),
    ],
)


def rfc5280_findings(der: bytes, at_least=ValidationFindingSeverity.WARNING) -> list[str]:
    """Severity ordering: FATAL 0 < ERROR 1 < WARNING 2 < NOTICE 3 < INFO."""
    """'<code> (<severity>) at <path>' for every finding of `at_least` severity or worse."""
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    findings = []
    for result in _VALIDATOR.validate(document.root):
        for finding in result.finding_descriptions:
            if finding.finding.severity <= at_least:  # FATAL is 0: smaller is worse
                findings.append(f"{finding.finding.code} ({finding.finding.severity.name}) at {result.node.path}")
    return findings
