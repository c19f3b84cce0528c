"""GBCS certificate profiles: parameters (from the policy) -> certificates, and their rules."""

from smki.profiles.certificates import (
    DeviceCertificateParams, IssuingCaCertificateParams, OrganisationCertificateParams,
    RootCertificateParams, device_certificate, issuing_ca_certificate, organisation_certificate,
    draft_certificate, root_certificate, sign_certificate,
)
from smki.profiles.keyids import key_identifier
from smki.profiles.names import EMPTY_NAME, ca_name, organisation_subject
from smki.profiles.validity import DEVICE_NOT_AFTER, Validity

__all__ = [
    "DEVICE_NOT_AFTER", "EMPTY_NAME", "DeviceCertificateParams", "IssuingCaCertificateParams",
    "OrganisationCertificateParams", "RootCertificateParams", "Validity", "ca_name",
    "device_certificate", "draft_certificate", "issuing_ca_certificate", "key_identifier", "organisation_certificate",
    "organisation_subject", "root_certificate", "sign_certificate",
]
