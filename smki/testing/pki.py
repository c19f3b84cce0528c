"""`TestPKI`: a complete SMKI test PKI on a private SoftHSM token, in one call.

Both hierarchies (Root OCA -> Issuing OCA, Root DCA -> Issuing DCA) are made by the real actors,
as an operator would make them: keys on a token, the shipped Certificate Policies adopted in each
authority's state, roots self-signed, Issuing Authorities certified by their roots, and every CA
certificate lodged with a Librarian. Names and OIDs are the test PKI's (ZAZ1), from the policies'
`test` environment. The conveniences below then drive the same actors a production caller would.
"""

from __future__ import annotations

import secrets
import shutil
import weakref
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.errors import BadInputError
from smki.hsm.config import KeyRef
from smki.identifiers import EUI64, DeviceType, KeyUsage, PolicyKind, RemotePartyRole
from smki.issuing.authority import IssuingAuthority
from smki.librarian.librarian import Librarian
from smki.operations.keys import generate_key
from smki.operations.values import parsed
from smki.operations.results import IssuedCertificate, IssuedCrl, Revocation
from smki.policy import CertificatePolicy, Environment, load_policy
from smki.policy.loading import policy_reference
from smki.profiles.lint import Finding, lint_certificate
from smki.profiles.pathvalidation import PathResult, validate_path
from smki.root.authority import RootAuthority
from smki.shipped import builtin_name
from smki.testing import csr
from smki.testing.softhsm import SoftHsmStore, TestToken

ACTOR = "test-pki"  # who the audit trails name for the PKI's own operations
PUBLISHED = "published"


Hierarchy = PolicyKind  # the two SMKI hierarchies, as their policies name them
_SHORT = {Hierarchy.ORGANISATION: "oca", Hierarchy.DEVICE: "dca"}  # in the kit's file and key names


def authority_name(level: str, hierarchy: Hierarchy | str) -> str:
    """The name `state`, `key` and `certificate_file` take: "root" or "issuing", then "oca" or "dca"."""
    return f"{level}-{_SHORT[Hierarchy(hierarchy)]}"


def shipped_policy(hierarchy: Hierarchy | str) -> str:
    """The Certificate Policy smki ships for a hierarchy, as every command and actor names it: `builtin:<kind>`."""
    return builtin_name(Hierarchy(hierarchy))


@dataclass(frozen=True)
class TestCertificate:
    """A certificate the PKI issued, and the software private key it made for it (None when the caller gave the key).

    Unpacks as `issued, private_key = pki.device_certificate(...)`."""

    __test__ = False

    issued: IssuedCertificate
    private_key: ec.EllipticCurvePrivateKey | None = None

    def __iter__(self):
        return iter((self.issued, self.private_key))

    @property
    def certificate(self) -> x509.Certificate:
        return self.issued.certificate

    @property
    def serial_hex(self) -> str:
        return self.issued.serial_hex

    @property
    def pem(self) -> bytes:
        return self.issued.pem

    @property
    def der(self) -> bytes:
        return self.issued.der


@dataclass(frozen=True)
class TestRequest:
    """A valid SMKI PKCS#10 request (DER) and the private key that signed it."""

    __test__ = False

    der: bytes
    private_key: ec.EllipticCurvePrivateKey


class ServedRepository:
    """The SMKI Repository web service of the PKI's Librarian, on a free loopback port."""

    def __init__(self, server, api_key: str) -> None:
        self.server, self.api_key = server, api_key
        self._running = True

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def shutdown(self) -> None:
        """Stop serving (once: the fixture and the PKI's close may both ask)."""
        if self._running:
            self._running = False
            self.server.shutdown()

    def __enter__(self) -> "ServedRepository":
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


@dataclass
class _Ca:
    """One hierarchy's two authorities: states, keys, certificates, policy."""

    hierarchy: Hierarchy
    policy: Path | str  # a file, or `builtin:NAME`
    root_state: Path
    issuing_state: Path
    root: RootAuthority
    issuing: IssuingAuthority
    root_key: KeyRef
    issuing_key: KeyRef


def _certificate_of(item) -> x509.Certificate:
    if isinstance(item, (TestCertificate, IssuedCertificate)):
        return item.certificate
    if isinstance(item, x509.Certificate):
        return item
    raise BadInputError(f"not a certificate: {type(item).__name__}")


def _key_id(certificate: x509.Certificate, extension_class) -> bytes | None:
    try:
        value = certificate.extensions.get_extension_for_class(extension_class).value
    except x509.ExtensionNotFound:
        return None
    return value.key_identifier if extension_class is x509.AuthorityKeyIdentifier else value.digest


def _fresh_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class TestPKI:
    """Root OCA, Root DCA, Issuing OCA, Issuing DCA and a Librarian, on one private SoftHSM token.

    Make one with `TestPKI.create(directory)` (or `TestPKI.create()` for a temporary directory
    removed by `close()`); use it as a context manager to close it.
    """

    __test__ = False

    def __init__(self, directory: Path, token: TestToken, cas: dict[Hierarchy, _Ca], librarian: Librarian,
                 environment: Environment, *, remove_directory: bool = False) -> None:
        self.directory, self.token, self.environment = directory, token, environment
        self._cas, self.librarian = cas, librarian
        # A temporary directory goes when the PKI is closed, or else when it is collected or the process ends.
        self._remove_directory = weakref.finalize(self, shutil.rmtree, directory, True) if remove_directory else None
        self._crls: list[IssuedCrl] = []
        self._servers: list[ServedRepository] = []

    # -- making one -------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path | str | None = None, *, token: TestToken | None = None,
               policies: dict[Hierarchy | str, Path | str] | None = None, environment: Environment | str = Environment.TEST,
               not_before: datetime | None = None) -> "TestPKI":
        """Make the whole PKI in `directory` (a new temporary one, removed on close, when None).

        `token`: the SoftHSM token for the four CA keys (default: this process's token in its SoftHSM
        store, see smki.testing.softhsm; each PKI has its own keys on it). `policies`: per hierarchy, the Certificate Policy
        file or `builtin:NAME` (default: the shipped ones, `builtin:organisation` and `builtin:device`). `not_before`: the CA certificates' start (default: today).
        """
        remove = directory is None
        directory = Path(tempfile.mkdtemp(prefix="smki-test-pki-") if directory is None else directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            environment = environment if isinstance(environment, Environment) else Environment.parse(environment)
            token = token or SoftHsmStore.for_process().shared_token()
            chosen = {Hierarchy(key): policy_reference(value) for key, value in (policies or {}).items()}
            librarian = Librarian(directory / "repository.db", actor=ACTOR)
            cas = {hierarchy: cls._build_hierarchy(directory, token, hierarchy, chosen.get(hierarchy) or shipped_policy(hierarchy),
                                                   environment, not_before, librarian)
                   for hierarchy in Hierarchy}
        except BaseException:
            if remove:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(directory, token, cas, librarian, environment, remove_directory=remove)

    @staticmethod
    def _build_hierarchy(directory: Path, token: TestToken, hierarchy: Hierarchy, policy: Path | str, environment: Environment,
                         not_before: datetime | None, librarian: Librarian) -> _Ca:
        """Keys, states with the policy adopted, the root self-signed, the Issuing Authority certified; both lodged."""
        short = _SHORT[hierarchy]
        tag = secrets.token_hex(3)  # key labels unique on a token that several test PKIs share
        root_state, issuing_state = directory / f"root-{short}", directory / f"issuing-{short}"
        certificates = directory / "certificates"
        certificates.mkdir(exist_ok=True)
        for state in (root_state, issuing_state):
            state.mkdir(exist_ok=True)
        root_key = generate_key(root_state, token.next_key_ref(f"root-{short}-{tag}"), token.pin, actor=ACTOR).key
        issuing_generated = generate_key(issuing_state, token.next_key_ref(f"issuing-{short}-{tag}"), token.pin, actor=ACTOR)
        common = dict(pin=token.pin, policy=policy, environment=environment, actor=ACTOR)
        root = RootAuthority(root_state, key=root_key, **common)
        root.adopt_policy()
        root_certificate = root.self_sign(not_before=not_before, out=certificates / f"root-{short}.pem").certificate
        issuing_certificate = root.certify_issuing_authority(issuing_generated.public_key, not_before=not_before,
                                                             out=certificates / f"issuing-{short}.pem").certificate
        issuing = IssuingAuthority(issuing_state, certificate=issuing_certificate, key=issuing_generated.key, **common)
        issuing.adopt_policy(policy)
        librarian.lodge(root_certificate, trust_root=True)
        librarian.lodge(issuing_certificate)
        return _Ca(hierarchy, policy, root_state, issuing_state, root, issuing, root_key, issuing_generated.key)

    def close(self) -> None:
        """Stop the served repositories, close the actors; remove the directory if `create` made it."""
        for server in self._servers:
            server.shutdown()
        self._servers.clear()
        for ca in self._cas.values():
            ca.root.close()
            ca.issuing.close()
        self.librarian.close()
        if self._remove_directory is not None:
            self._remove_directory()

    def __enter__(self) -> "TestPKI":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the actors ---------------------------------------------------------------------------------------------

    @property
    def root_oca(self) -> RootAuthority:
        return self._cas[Hierarchy.ORGANISATION].root

    @property
    def root_dca(self) -> RootAuthority:
        return self._cas[Hierarchy.DEVICE].root

    @property
    def issuing_oca(self) -> IssuingAuthority:
        return self._cas[Hierarchy.ORGANISATION].issuing

    @property
    def issuing_dca(self) -> IssuingAuthority:
        return self._cas[Hierarchy.DEVICE].issuing

    def policy_file(self, hierarchy: Hierarchy | str) -> Path | str:
        """The hierarchy's policy, as `--policy` takes it: its file, or `builtin:NAME` for a shipped one (the default)."""
        return self._cas[Hierarchy(hierarchy)].policy

    def state(self, authority: str) -> Path:
        """The state directory of "root-oca", "root-dca", "issuing-oca" or "issuing-dca" (for the CLI's --state-dir)."""
        states = {f"{level}-{_SHORT[ca.hierarchy]}": getattr(ca, f"{level}_state") for ca in self._cas.values() for level in ("root", "issuing")}
        if authority not in states:
            raise BadInputError(f"no authority {authority!r} (one of {', '.join(sorted(states))})")
        return states[authority]

    def key(self, authority: str) -> KeyRef:
        """The key on the token of "root-oca", "root-dca", "issuing-oca" or "issuing-dca" (`.uri` for the CLI's --key-uri)."""
        keys = {f"{level}-{_SHORT[ca.hierarchy]}": getattr(ca, f"{level}_key") for ca in self._cas.values() for level in ("root", "issuing")}
        if authority not in keys:
            raise BadInputError(f"no authority {authority!r} (one of {', '.join(sorted(keys))})")
        return keys[authority]

    # -- certificates ---------------------------------------------------------------------------------------------

    @property
    def root_oca_certificate(self) -> x509.Certificate:
        return self._ca_certificate(Hierarchy.ORGANISATION, "root")

    @property
    def root_dca_certificate(self) -> x509.Certificate:
        return self._ca_certificate(Hierarchy.DEVICE, "root")

    @property
    def issuing_oca_certificate(self) -> x509.Certificate:
        return self._ca_certificate(Hierarchy.ORGANISATION, "issuing")

    @property
    def issuing_dca_certificate(self) -> x509.Certificate:
        return self._ca_certificate(Hierarchy.DEVICE, "issuing")

    def _ca_certificate(self, hierarchy: Hierarchy, level: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.directory / "certificates" / f"{level}-{_SHORT[hierarchy]}.pem").read_bytes())

    @property
    def anchors(self) -> list[x509.Certificate]:
        return [self.root_oca_certificate, self.root_dca_certificate]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [self.issuing_oca_certificate, self.issuing_dca_certificate]

    def certificate_file(self, authority: str) -> Path:
        """The PEM file of "root-oca", "root-dca", "issuing-oca" or "issuing-dca"."""
        path = self.directory / "certificates" / f"{authority}.pem"
        if not path.is_file():
            raise BadInputError(f"no CA certificate {authority!r}")
        return path

    def organisation_certificate(self, eui64: EUI64 | str, public_key: ec.EllipticCurvePublicKey | None = None, *,
                                 role: RemotePartyRole | str = "supplier", usage: KeyUsage | str = "DS",
                                 requester: RemotePartyRole | str | None = None, common_name: str | None = None,
                                 not_before: datetime | None = None) -> TestCertificate:
        """An Organisation Certificate from the Issuing OCA (for a fresh software key when `public_key` is None)."""
        private_key = None if public_key is not None else _fresh_key()
        issued = self.issuing_oca.certify_organisation(
            public_key or private_key.public_key(), role=role, entity_id=eui64, usage=usage, requester=requester,
            common_name=common_name, not_before=not_before)
        return TestCertificate(issued, private_key)

    def device_certificate(self, eui64: EUI64 | str, public_key: ec.EllipticCurvePublicKey | None = None, *,
                           device_type: DeviceType | str = "ESME", usage: KeyUsage | str = "DS",
                           requester: RemotePartyRole | str = "supplier", not_before: datetime | None = None) -> TestCertificate:
        """A Device Certificate from the Issuing DCA (for a fresh software key when `public_key` is None)."""
        private_key = None if public_key is not None else _fresh_key()
        issued = self.issuing_dca.certify_device(
            public_key or private_key.public_key(), device_id=eui64, device_type=device_type, usage=usage,
            requester=requester, not_before=not_before)
        return TestCertificate(issued, private_key)

    # -- requests -------------------------------------------------------------------------------------------------

    def organisation_csr(self, eui64: EUI64 | str, private_key: ec.EllipticCurvePrivateKey | None = None, *,
                         role: RemotePartyRole | str = "supplier", usage: KeyUsage | str = "DS",
                         common_name: str | None = None) -> TestRequest:
        """A valid SMKI PKCS#10 request for an Organisation Certificate (signed by a fresh key when none is given)."""
        private_key = private_key or _fresh_key()
        der = csr.organisation_csr(private_key, usage=parsed(KeyUsage, usage).x509_name, role=parsed(RemotePartyRole, role).ou,
                                   eui64=parsed(EUI64, eui64).hex, common_name=common_name)
        return TestRequest(der, private_key)

    def device_csr(self, eui64: EUI64 | str, private_key: ec.EllipticCurvePrivateKey | None = None, *,
                   usage: KeyUsage | str = "DS", device_type: DeviceType | str = "ESME") -> TestRequest:
        """A valid SMKI PKCS#10 request for a Device Certificate, with the device type's hwType from the policy."""
        private_key = private_key or _fresh_key()
        hw_type = self._policy(Hierarchy.DEVICE).hw_type_oid(self.environment, parsed(DeviceType, device_type))
        der = csr.build_csr(private_key, b"\x30\x00", [csr.key_usage(parsed(KeyUsage, usage).x509_name),
                                                      csr.hardware_module_name_san(parsed(EUI64, eui64).hex, hw_type)])
        return TestRequest(der, private_key)

    def csr(self, eui64: EUI64 | str, private_key: ec.EllipticCurvePrivateKey | None = None, *,
            hierarchy: Hierarchy | str = Hierarchy.ORGANISATION, **fields) -> TestRequest:
        """A valid request of either hierarchy (`fields` as organisation_csr or device_csr take them)."""
        make = self.device_csr if Hierarchy(hierarchy) is Hierarchy.DEVICE else self.organisation_csr
        return make(eui64, private_key, **fields)

    def issue_organisation(self, request: TestRequest | bytes, *, requester: RemotePartyRole | str = "supplier") -> IssuedCertificate:
        """An Organisation Certificate from a PKCS#10 request, as `smki ca issue-org` issues it."""
        return self.issuing_oca.issue_organisation(_request_der(request), requester=requester)

    def issue_device(self, request: TestRequest | bytes, *, device_type: DeviceType | str = "ESME",
                     requester: RemotePartyRole | str = "supplier") -> IssuedCertificate:
        """A Device Certificate from a PKCS#10 request (an ad hoc request replaces: the device needs one already)."""
        return self.issuing_dca.issue_device(_request_der(request), requester=requester, device_type=device_type)

    # -- revocation, lint, verify ---------------------------------------------------------------------------------

    def revoke(self, certificate, reason: str = "keyCompromise") -> Revocation:
        """Revoke a certificate the PKI issued (an Organisation Certificate onto the next CRL, a Device
        Certificate by status R, an Issuing Authority onto its root's ARL)."""
        cert = _certificate_of(certificate)
        return self._authority_that_issued(cert).revoke(f"{cert.serial_number:X}", reason)

    def crl(self) -> IssuedCrl:
        """The Issuing OCA's next CRL (every Organisation Certificate revoked so far), remembered for `verify`."""
        issued = self.issuing_oca.issue_crl()
        self._crls.append(issued)
        return issued

    def arl(self, hierarchy: Hierarchy | str = Hierarchy.ORGANISATION) -> IssuedCrl:
        """The root's next ARL, remembered for `verify`."""
        issued = self._cas[Hierarchy(hierarchy)].root.issue_arl()
        self._crls.append(issued)
        return issued

    def lint(self, certificate) -> list[Finding]:
        """smki's lint findings for a certificate, against its hierarchy's policy OID."""
        cert = _certificate_of(certificate)
        hierarchy = self.hierarchy_of(cert)
        _, findings = lint_certificate(cert.public_bytes(Encoding.DER),
                                       expected_policy_oids=(self._policy(hierarchy).policy_oid(self.environment),),
                                       issuer_subject_der=cert.issuer.public_bytes())
        return findings

    def verify(self, certificate, *, at: datetime | None = None, crls: list | None = None) -> PathResult:
        """Validate the path to a root of the PKI, at `at` (now), with `crls` (default: the latest CRL and ARLs made here)."""
        cert = _certificate_of(certificate)
        lists = [item.crl if isinstance(item, IssuedCrl) else item for item in (self._latest_crls() if crls is None else crls)]
        return validate_path(cert, self.anchors, self.intermediates, at=at or datetime.now(timezone.utc),
                             expected_policy_oids=(self._policy(self.hierarchy_of(cert)).policy_oid(self.environment),), crls=lists)

    def hierarchy_of(self, certificate) -> Hierarchy:
        """Which hierarchy issued a certificate (by its authority key identifier), or holds a CA certificate."""
        cert = _certificate_of(certificate)
        key_ids = {_key_id(cert, x509.AuthorityKeyIdentifier), _key_id(cert, x509.SubjectKeyIdentifier)}
        for hierarchy in Hierarchy:
            ca_key_ids = {_key_id(self._ca_certificate(hierarchy, level), x509.SubjectKeyIdentifier) for level in ("root", "issuing")}
            if key_ids & ca_key_ids:
                return hierarchy
        raise BadInputError(f"certificate {cert.serial_number:X} was not issued by this test PKI")

    # -- the Librarian --------------------------------------------------------------------------------------------

    def lodge_and_publish(self, *items, directory: Path | None = None):
        """Lodge certificates (TestCertificate, IssuedCertificate, x509) and CRLs (IssuedCrl, x509 CRL) with the
        Librarian, then publish the repository to `directory` (default: <pki>/published); return the Publication."""
        directory = directory or self.directory / PUBLISHED
        certificates = [_certificate_of(item) for item in items if not isinstance(item, (IssuedCrl, x509.CertificateRevocationList))]
        crls = [item.crl if isinstance(item, IssuedCrl) else item for item in items if isinstance(item, (IssuedCrl, x509.CertificateRevocationList))]
        if certificates:
            self.librarian.lodge_many(certificates)
        for crl in crls:
            self.librarian.lodge_crl(crl)
        return self.librarian.publish(directory)

    def serve_repository(self, *, api_key: str | None = None, published: Path | None = None) -> ServedRepository:
        """The SMKI Repository web service on a free loopback port (stopped by `close()`)."""
        api_key = api_key or secrets.token_hex(16)
        published = published or self.directory / PUBLISHED  # what lodge_and_publish publishes, before or after this call
        published.mkdir(exist_ok=True)
        from smki.web.server import serve_repository  # aiohttp only when a test serves

        service = self.librarian.web_application(api_key=api_key, published=published)
        served = ServedRepository(serve_repository(service, "127.0.0.1", 0), api_key)
        self._servers.append(served)
        return served

    # -- helpers --------------------------------------------------------------------------------------------------

    def _policy(self, hierarchy: Hierarchy) -> CertificatePolicy:
        return load_policy(self._cas[hierarchy].policy)

    def _authority_that_issued(self, certificate: x509.Certificate):
        hierarchy = self.hierarchy_of(certificate)
        issuer_key_id = _key_id(certificate, x509.AuthorityKeyIdentifier)
        root_key_id = _key_id(self._ca_certificate(hierarchy, "root"), x509.SubjectKeyIdentifier)
        ca = self._cas[hierarchy]
        return ca.root if issuer_key_id == root_key_id else ca.issuing

    def _latest_crls(self) -> list[IssuedCrl]:
        latest: dict[str, IssuedCrl] = {}
        for issued in self._crls:  # oldest first: a later list from the same issuer replaces an earlier one
            latest[issued.issuer_key_id] = issued
        return list(latest.values())


def _request_der(request: TestRequest | bytes) -> bytes:
    return request.der if isinstance(request, TestRequest) else request


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """A public key as PEM SubjectPublicKeyInfo (what the CLI's --public-key reads)."""
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
