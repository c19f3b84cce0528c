"""What the portal's tests share: a test PKI whose device policy is a lab's (batches processed at any hour,
no ad hoc interval), lab TLS credentials registered in a real subscriber register, and the worker's
services over them, as `smki serve` opens them (each actor opened once, on the worker's actor thread)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from smki import IssuingAuthority, Librarian
from smki.identifiers import RemotePartyRole
from smki.register import SubscriberRegister
from smki.register.accounts import PortalAccounts
from smki.register.lab_credentials import make_lab_credentials
from smki.testing import TestPKI

SHIPPED = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
LAB_RULES = ('usage_rules:\n  batch_window: always\n  adhoc_interval: [{start: "00:00", end: "00:00", seconds: 0}]\n'
             '  batches_at_a_time: 5\n')
API_KEY = "portal-test-api-key"
PASSWORD = "correct horse battery staple"


def lab_device_policy(directory: Path) -> Path:
    text = (SHIPPED / "device.yaml").read_text()
    shipped_rules = text[text.index("usage_rules:"):text.index("\nrevocation:")]
    path = directory / "device-lab.yaml"
    path.write_text(text.replace(shipped_rules, LAB_RULES))
    return path


def portal_pki(directory: Path, token) -> TestPKI:
    """On the suite's token (`smki_token`): SoftHSM sees only the tokens made before it was loaded, and the suite's
    other tests log in to that token with its own PIN."""
    directory.mkdir(parents=True, exist_ok=True)
    return TestPKI.create(directory / "pki", token=token, policies={"device": lab_device_policy(directory)})


class RecordingRegister:
    """The real register, keeping the request audit entries the service hands it (as its trail would)."""

    def __init__(self, register: SubscriberRegister) -> None:
        self._register, self.entries = register, []
        self.database = register.database

    def identify(self, *args, **kwargs):
        return self._register.identify(*args, **kwargs)

    def list(self):
        return self._register.list()

    def close(self) -> None:
        self._register.close()

    def audit_requests(self, entries) -> None:
        self.entries.extend(entries)


class PortalServices:
    """One worker's services over a test PKI: its actors opened when first used, on the actor thread."""

    build = "portal-test"

    def __init__(self, pki: TestPKI, database: Path) -> None:
        self.pki, self.database = pki, database
        self.register_object = RecordingRegister(SubscriberRegister(database))
        self._opened: dict = {}

    def _authority(self, name: str, hierarchy: str) -> IssuingAuthority:
        pki = self.pki
        return IssuingAuthority(pki.state(name), certificate=pki.certificate_file(name), key=pki.key(name), pin=pki.token.pin,
                                policy=pki.policy_file(hierarchy), environment=pki.environment, actor="portal-service")

    def _once(self, name, open_it):
        if name not in self._opened:
            self._opened[name] = open_it()
        return self._opened[name]

    def issuing_oca(self):
        return self._once("oca", lambda: self._authority("issuing-oca", "organisation"))

    def issuing_dca(self):
        return self._once("dca", lambda: self._authority("issuing-dca", "device"))

    def librarian(self):
        return self._once("librarian", lambda: Librarian(self.pki.librarian.database, actor="portal-service"))

    def repository(self):
        return self._once("repository", lambda: self.librarian().web_application(api_key=API_KEY))

    def register(self):
        return self.register_object

    def health(self) -> dict:
        return {"store": "ok"}

    def close(self) -> None:
        """Close the actors opened (their HSM sessions logged out), on the thread that opened them."""
        for actor in self._opened.values():
            close = getattr(actor, "close", None)
            if close is not None:
                close()
        self._opened.clear()
        self.register_object.close()


def lab(directory: Path, database: Path):
    """Lab TLS credentials (a supplier, a network operator, the operator), registered in the service's register."""
    with SubscriberRegister(database, actor="test") as register:
        return make_lab_credentials(directory, roles=[RemotePartyRole.SUPPLIER, RemotePartyRole.NETWORK_OPERATOR], register=register)


def add_account(database: Path, username: str, subscriber: str, password: str = PASSWORD) -> None:
    with PortalAccounts(database, actor="test") as accounts:
        accounts.add(username, subscriber=subscriber, password=password)


def batch_zip(pki: TestPKI, count: int, first_serial: int) -> bytes:
    """A portal batch: one Base64 .csr per device (ESME Device CSRs for new EUI-64s)."""
    import base64

    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for index in range(count):
            eui64 = f"00-DB-12-34-{(first_serial >> 8) & 0xFF:02X}-{first_serial & 0xFF:02X}-{index >> 8:02X}-{index & 0xFF:02X}"
            request = pki.device_csr(eui64, device_type="ESME")
            archive.writestr(f"device-{index:04}.csr", base64.b64encode(request.der))
    return stream.getvalue()


class World:
    """A portal's world: the test PKI, the service's store with the lab's subscribers, and two password accounts
    (jo for lab-supplier, nora for lab-networkOperator)."""

    def __init__(self, directory: Path, token) -> None:
        self.directory = directory
        self.pki = portal_pki(directory, token)
        self.database = directory / "service.db"
        self.credentials = lab(directory / "lab", self.database)
        self.clients = {client.name: client for client in self.credentials.clients}
        add_account(self.database, "jo", "lab-supplier")
        add_account(self.database, "nora", "lab-networkOperator")

    def issued(self) -> int:
        return len(self.pki.issuing_oca.list()) + len(self.pki.issuing_dca.list())
