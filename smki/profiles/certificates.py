"""The six GBCS certificate profiles: parameters in, an unsigned certificate builder out.

Every value that can vary (names, policy OIDs, validity, hwType) is a parameter: the
Certificate Policy supplies it. What is fixed by GBCS section 12 is fixed here:
extension order and criticality, 8-octet method-2 key identifiers, 16-octet serials,
string types, the empty device subject, the device notAfter, AKI as keyIdentifier only.

Extension order follows the test PKI: CA certificates KU, BC, CP, SKI, AKI;
Organisation KU, SKI, CP, AKI; Device KU, SKI, SAN, CP, AKI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

from smki.errors import BadInputError, HsmError
from smki.hsm.signer import Signer, SignerPrivateKey, SoftwareSigner
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles.extensions import hardware_module_name
from smki.profiles.keyids import key_identifier
from smki.profiles.names import EMPTY_NAME, organisation_subject
from smki.profiles.public_keys import check_public_key
from smki.profiles.serials import new_serial_number
from smki.profiles.validity import DEVICE_NOT_AFTER, Validity

PolicyOid = str


def _policy_oids(oids: tuple[PolicyOid, ...]) -> tuple[PolicyOid, ...]:
    if not oids:
        raise BadInputError("a certificate needs at least one policy OID")
    for oid in oids:
        try:
            ObjectIdentifier(oid)
        except ValueError:
            raise BadInputError(f"malformed policy OID {oid!r}") from None
    return tuple(oids)


@dataclass(frozen=True)
class RootCertificateParams:
    """A self-signed Root OCA or Root DCA (subject OU 00)."""

    subject: x509.Name
    policy_oids: tuple[PolicyOid, ...]
    validity: Validity
    path_length: int | None = 1
    # The Root OCA's WrappedApexContingencyKey extension (RFC 5934), and its criticality.
    contingency_extension: x509.UnrecognizedExtension | None = None
    contingency_critical: bool = False

    def __post_init__(self) -> None:
        _policy_oids(self.policy_oids)


@dataclass(frozen=True)
class IssuingCaCertificateParams:
    """An Issuing OCA or Issuing DCA certificate, signed by its root."""

    subject: x509.Name
    policy_oids: tuple[PolicyOid, ...]
    validity: Validity
    path_length: int | None = 0

    def __post_init__(self) -> None:
        _policy_oids(self.policy_oids)


@dataclass(frozen=True)
class OrganisationCertificateParams:
    role: RemotePartyRole
    entity_id: EUI64
    key_usage: KeyUsage
    policy_oid: PolicyOid
    validity: Validity
    common_name: str | None = None

    def __post_init__(self) -> None:
        _policy_oids((self.policy_oid,))
        if self.role in (RemotePartyRole.ROOT, RemotePartyRole.ISSUING_AUTHORITY):
            raise BadInputError(f"role {self.role.camel_name} is for CA certificates, not Organisation Certificates")


@dataclass(frozen=True)
class DeviceCertificateParams:
    device_id: EUI64
    hw_type_oid: str
    key_usage: KeyUsage
    policy_oid: PolicyOid
    validity: Validity

    def __post_init__(self) -> None:
        _policy_oids((self.policy_oid, self.hw_type_oid))
        if self.validity.not_after_utc != DEVICE_NOT_AFTER:
            raise BadInputError("a Device Certificate's notAfter must be 99991231235959Z")


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )


def _end_entity_key_usage(usage: KeyUsage) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=usage is KeyUsage.DIGITAL_SIGNATURE, content_commitment=False,
        key_encipherment=False, data_encipherment=False,
        key_agreement=usage is KeyUsage.KEY_AGREEMENT, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def _certificate_policies(oids: tuple[PolicyOid, ...]) -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier(oid), None) for oid in oids])


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return x509.AuthorityKeyIdentifier(key_identifier=ski, authority_cert_issuer=None, authority_cert_serial_number=None)


def _base(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, validity: Validity) -> x509.CertificateBuilder:
    check_public_key(public_key, "subject public key")
    return (
        x509.CertificateBuilder()
        .serial_number(new_serial_number())
        .issuer_name(issuer)
        .subject_name(subject)
        .not_valid_before(validity.not_before_utc)
        .not_valid_after(validity.not_after_utc)
        .public_key(public_key)
    )


def _check_issuer_policy(issuer: x509.Certificate, policy_oids: tuple[PolicyOid, ...]) -> None:
    """The issuer is under every policy the new certificate asserts: a test CA never signs a certificate
    carrying the production OID, nor the other way round (it could never validate)."""
    issuer_policies = _policy_identifiers(issuer)
    missing = [oid for oid in policy_oids if oid not in issuer_policies]
    if missing:
        raise BadInputError(f"the issuer certificate is not under policy {missing[0]} (it asserts "
                            f"{', '.join(sorted(issuer_policies)) or 'no policy'}): is the environment the issuer's?")


def _check_issuer(issuer: x509.Certificate, validity: Validity, policy_oids: tuple[PolicyOid, ...]) -> None:
    """The issuer can issue this: its validity contains the new one, and it is under the new one's policy."""
    _check_issuer_policy(issuer, policy_oids)
    issuer_validity = Validity(issuer.not_valid_before_utc, issuer.not_valid_after_utc)
    if not issuer_validity.contains(validity):
        raise BadInputError(
            f"validity {validity.not_before_utc:%Y-%m-%d}..{validity.not_after_utc:%Y-%m-%d} lies outside the issuer's "
            f"{issuer_validity.not_before_utc:%Y-%m-%d}..{issuer_validity.not_after_utc:%Y-%m-%d}"
        )


def _policy_identifiers(certificate: x509.Certificate) -> set[str]:
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return set()
    return {policy.policy_identifier.dotted_string for policy in policies}


def root_certificate(params: RootCertificateParams, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    """Self-signed root: KU, BC, CP, SKI (and the contingency key); no AKI."""
    builder = (
        _base(params.subject, params.subject, public_key, params.validity)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=params.path_length), critical=True)
        .add_extension(_certificate_policies(params.policy_oids), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(public_key)), critical=False)
    )
    if params.contingency_extension is not None:
        builder = builder.add_extension(params.contingency_extension, critical=params.contingency_critical)
    return builder


def issuing_ca_certificate(params: IssuingCaCertificateParams, public_key: ec.EllipticCurvePublicKey, issuer: x509.Certificate) -> x509.CertificateBuilder:
    """Issuing OCA/DCA: KU, BC, CP, SKI, AKI."""
    _check_issuer(issuer, params.validity, params.policy_oids)
    return (
        _base(params.subject, issuer.subject, public_key, params.validity)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=params.path_length), critical=True)
        .add_extension(_certificate_policies(params.policy_oids), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(public_key)), critical=False)
        .add_extension(_authority_key_identifier(issuer), critical=False)
    )


def organisation_certificate(params: OrganisationCertificateParams, public_key: ec.EllipticCurvePublicKey, issuer: x509.Certificate) -> x509.CertificateBuilder:
    """Organisation Certificate: KU, SKI, CP, AKI."""
    _check_issuer(issuer, params.validity, (params.policy_oid,))
    subject = organisation_subject(params.role, params.entity_id, params.common_name)
    return (
        _base(subject, issuer.subject, public_key, params.validity)
        .add_extension(_end_entity_key_usage(params.key_usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(public_key)), critical=False)
        .add_extension(_certificate_policies((params.policy_oid,)), critical=True)
        .add_extension(_authority_key_identifier(issuer), critical=False)
    )


def device_certificate(params: DeviceCertificateParams, public_key: ec.EllipticCurvePublicKey, issuer: x509.Certificate) -> x509.CertificateBuilder:
    """Device Certificate: empty subject; KU, SKI, SAN (HardwareModuleName, critical), CP, AKI."""
    if params.validity.not_before_utc < issuer.not_valid_before_utc:
        raise BadInputError("a Device Certificate cannot start before its issuer's certificate")
    _check_issuer_policy(issuer, (params.policy_oid,))
    san = x509.SubjectAlternativeName([hardware_module_name(params.hw_type_oid, params.device_id)])
    return (
        _base(EMPTY_NAME, issuer.subject, public_key, params.validity)
        .add_extension(_end_entity_key_usage(params.key_usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(public_key)), critical=False)
        .add_extension(san, critical=True)
        .add_extension(_certificate_policies((params.policy_oid,)), critical=True)
        .add_extension(_authority_key_identifier(issuer), critical=False)
    )


PreIssuanceCheck = Callable[[x509.Certificate], None]


def draft_certificate(builder: x509.CertificateBuilder, pre_issuance_check: PreIssuanceCheck) -> x509.Certificate:
    """The exact to-be-signed certificate, signed by a throw-away software key of the CA's curve and
    passed through the pre-issuance check (which raises to refuse it): what the CA key would sign,
    without the CA key. A dry run stops here; `sign_certificate` signs the same TBS with the CA key."""
    draft = builder.sign(SoftwareSigner().private_key, hashes.SHA256())
    pre_issuance_check(draft)
    return draft


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer, *, pre_issuance_check: PreIssuanceCheck | None = None) -> x509.Certificate:
    """Sign with the CA's Signer; lint first, verify after.

    The pre-issuance check (lint) sees the exact to-be-signed certificate, signed by a
    throw-away software key (as Let's Encrypt's ceremony tool does), before the CA key
    is used; it raises to stop the issuance. After signing, the TBS must be identical
    and the signature must verify under the CA's public key.
    """
    draft_tbs = draft_certificate(builder, pre_issuance_check).tbs_certificate_bytes if pre_issuance_check is not None else None
    signing_key = SignerPrivateKey(signer)
    certificate = builder.sign(signing_key, hashes.SHA256())
    if draft_tbs is not None and certificate.tbs_certificate_bytes != draft_tbs:
        raise HsmError("the signed certificate differs from the one that was linted; not released")
    # The Signer verified its signature over the bytes it was given; the certificate must carry
    # exactly that signature over exactly those bytes (a comparison, not a second ECDSA verify).
    if signing_key.last_signed != (certificate.tbs_certificate_bytes, certificate.signature):
        raise HsmError("the certificate does not carry the verified signature over its own TBS; not released")
    return certificate
