"""Lab TLS credentials for the online services: a test transport CA, a server certificate and one client
certificate per RemotePartyRole, shaped as the IKI's (SEC Appendix N): RSA 2048 with SHA-256; a client's subject
O = the organisation's name, OU = its RemotePartyRole code, CN = the name of its system.

For labs and tests only. The CA's name says so ("LAB ONLY"), its key is never written (the command's run is
its whole life: a lab that wants more certificates makes a new set), and a real deployment uses its
IKI-issued credentials instead. The leaf keys are software RSA keys written 0600: they are transport keys,
not SMKI CA keys, which live in the HSM.

`make_lab_credentials(DIR)` writes, refusing (exit 5) to overwrite anything and writing nothing when it refuses:

    lab-transport-ca.pem                     the CA certificate (the service's client_ca, the clients' trust anchor)
    server.pem, server.key.pem               for localhost, 127.0.0.1, ::1 and any --host names
    client-<role>.pem, client-<role>.key.pem one per role asked for, and client-operator.* for the operator
    credentials.json                         the index: files, subjects, EUI-64s, fingerprints, interfaces
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smki.errors import BadInputError, ConflictError
from smki.files import output_directory, refuse_existing, write_new_file
from smki.identifiers import EUI64, RemotePartyRole
from smki.register.model import Interface
from smki.register.register import certificate_fingerprint

FORMAT = "smki-lab-credentials/1"
INDEX = "credentials.json"
CA_FILE = "lab-transport-ca.pem"
CA_NAME = "SMKI LAB ONLY Transport CA (not IKI)"
LAB_ORGANISATION = "SMKI Lab"
DEFAULT_ROLES = (RemotePartyRole.SUPPLIER, RemotePartyRole.NETWORK_OPERATOR, RemotePartyRole.OTHER)
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
OPERATOR = "operator"
OPERATOR_ROLE = RemotePartyRole.ISSUING_AUTHORITY  # the Issuing Authority's own staff
# Lab EUI-64s from the documentation range IANA keeps for examples (00-00-5E-EF-10-00-00-00 to -FF-FF-FF, RFC 9542):
# no real party has one. The last octet is the role's code; the operator's is set apart by its sixth octet.
_LAB_EUI64_PREFIX = bytes.fromhex("00005EEF1000")
RSA_BITS = 2048
CA_DAYS, LEAF_DAYS = 5 * 365, 2 * 365
PARTY_INTERFACES = frozenset(Interface) - {Interface.OPERATOR}
OPERATOR_INTERFACES = frozenset({Interface.OPERATOR, Interface.PORTAL})


@dataclass(frozen=True)
class LabClient:
    """One client certificate of the lab, and what registering it grants."""

    name: str  # its system's name: the certificate's CN, and the register's subscriber name
    role: RemotePartyRole
    eui64: EUI64
    interfaces: frozenset[Interface]
    certificate: Path
    key: Path
    fingerprint: str

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.camel_name, "ou": self.role.ou, "eui64": self.eui64.hyphenated,
                "interfaces": sorted(i.value for i in self.interfaces), "certificate": self.certificate.name,
                "key": self.key.name, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class LabCredentials:
    directory: Path
    ca_certificate: Path
    server_certificate: Path
    server_key: Path
    server_names: tuple[str, ...]
    clients: tuple[LabClient, ...]

    def summary(self) -> dict[str, Any]:
        return {"format": FORMAT, "directory": str(self.directory), "ca": self.ca_certificate.name,
                "server": {"certificate": self.server_certificate.name, "key": self.server_key.name,
                           "names": list(self.server_names)},
                "clients": [client.summary() for client in self.clients]}


@dataclass(frozen=True)
class _Issued:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def lab_eui64(role: RemotePartyRole, operator: bool = False) -> EUI64:
    return EUI64(_LAB_EUI64_PREFIX + bytes([0x01 if operator else 0x00, role.value]))


def make_lab_credentials(directory: Path | str, *, roles: Iterable[RemotePartyRole | str] = DEFAULT_ROLES,
                         hosts: Iterable[str] = (), operator: bool = True, organisation: str = LAB_ORGANISATION,
                         now: datetime | None = None, register=None) -> LabCredentials:
    """Make and write the lab's credentials into `directory` (created if missing); see the module's description.

    With `register` (a SubscriberRegister), also register each client by its certificate's fingerprint, under
    its system's name; a name the register already holds is refused (exit 5) before anything is made."""
    directory = output_directory(directory, "lab credentials directory")
    parsed_roles = tuple(dict.fromkeys(r if isinstance(r, RemotePartyRole) else RemotePartyRole.parse(r) for r in roles))
    names = _server_names(hosts)
    organisation = _organisation(organisation)
    parties = [(f"lab-{role.camel_name}", role, lab_eui64(role), PARTY_INTERFACES) for role in parsed_roles]
    if operator:
        parties.append((f"lab-{OPERATOR}", OPERATOR_ROLE, lab_eui64(OPERATOR_ROLE, operator=True), OPERATOR_INTERFACES))
    files = [CA_FILE, "server.pem", "server.key.pem", INDEX,
             *(f"client-{_file_part(name)}{suffix}" for name, *_ in parties for suffix in (".pem", ".key.pem"))]
    for file in files:  # everything checked before anything is made: a refusal writes nothing
        refuse_existing(directory / file)
    if register is not None:
        _refuse_registered(register, [name for name, *_ in parties])

    start = (now or datetime.now(timezone.utc)).replace(microsecond=0) - timedelta(minutes=5)  # a little clock skew
    ca = _ca(start)
    server = _leaf(ca, _name(organisation, None, "localhost"), start, server_names=names)
    clients = [(party, _leaf(ca, _name(f"{organisation} {party[1].camel_name}", party[1].ou, party[0]), start))
               for party in parties]

    written: list[Path] = []
    try:
        _write(directory / CA_FILE, _pem(ca.certificate), 0o644, written)
        _write(directory / "server.pem", _pem(server.certificate), 0o644, written)
        _write(directory / "server.key.pem", _key_pem(server.key), 0o600, written)
        lab_clients = []
        for (name, role, eui64, interfaces), issued in clients:
            certificate, key = directory / f"client-{_file_part(name)}.pem", directory / f"client-{_file_part(name)}.key.pem"
            _write(certificate, _pem(issued.certificate), 0o644, written)
            _write(key, _key_pem(issued.key), 0o600, written)
            lab_clients.append(LabClient(name, role, eui64, interfaces, certificate, key,
                                         certificate_fingerprint(issued.certificate.public_bytes(Encoding.DER))))
        credentials = LabCredentials(directory, directory / CA_FILE, directory / "server.pem", directory / "server.key.pem",
                                     names, tuple(lab_clients))
        _write(directory / INDEX, (json.dumps(credentials.summary(), indent=2, sort_keys=True) + "\n").encode(), 0o644, written)
    except BaseException:
        for path in written:  # all or nothing
            path.unlink(missing_ok=True)
        raise
    if register is not None:
        for client in credentials.clients:
            register.add(client.name, client.eui64, [client.role], client.interfaces, certificate=client.certificate)
    return credentials


def _refuse_registered(register, names: list[str]) -> None:
    taken = [name for name in names if register.find(name) is not None]
    if taken:
        raise ConflictError(f"the register already holds {', '.join(taken)}: register these lab credentials in another "
                            "register, or register them by hand under other names (`smki subscribers add`)")


def _write(path: Path, data: bytes, mode: int, written: list[Path]) -> None:
    write_new_file(path, data, mode)
    written.append(path)


def _file_part(name: str) -> str:
    return name.removeprefix("lab-")


def _organisation(text: str) -> str:
    if not isinstance(text, str) or not text.strip() or not text.isprintable() or len(text) > 40:
        raise BadInputError("the lab organisation name is 1 to 40 printable characters")
    return text.strip()


def _server_names(hosts: Iterable[str]) -> tuple[str, ...]:
    names = list(DEFAULT_HOSTS)
    for host in hosts:
        host = str(host).strip()
        if not host or not all(c.isalnum() or c in ".-:*" for c in host) or len(host) > 253:
            raise BadInputError("a --host is a DNS name or an IP address (letters, digits, . - : and *)")
        names.append(host)
    return tuple(dict.fromkeys(names))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _name(organisation: str, ou: str | None, common_name: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)]
    if ou is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _ca(start: datetime) -> _Issued:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, LAB_ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(start)
                   .not_valid_after(start + timedelta(days=CA_DAYS))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))
    return _Issued(certificate, key)


def _leaf(ca: _Issued, subject: x509.Name, start: datetime, server_names: tuple[str, ...] = ()) -> _Issued:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False)
    return _Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())

