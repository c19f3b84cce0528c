"""The SMKI Portal's handlers through aiohttp's test client, on web-core's application (make_app) over a real
test PKI on SoftHSM and a real subscriber register: password logins and their cookie, CSRF refusals, the
lockout, session expiry, escaping, bad uploads (nothing issued, each refusal audited), client certificates
(as a trusted proxy forwards them), another subscriber's batch, the operator view and the repository's access.
The browser's view of the same pages is tests/test_portal_browser.py."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from portal_support import API_KEY, PASSWORD, PortalServices, World, add_account, batch_zip, lab
from smki.identifiers import RemotePartyRole
from smki.register.accounts import AccountLocked, LoginRefused, PortalAccounts, SessionExpired
from smki.register.lab_credentials import lab_eui64
from smki.web.app import make_app
from smki.web.context import EXECUTOR, Outcome
from smki.web.portal.visitors import ACCOUNTS, LOGIN_COOKIE, SESSION_COOKIE, WorkerAccounts
from smki.web.settings import Limits, RepositorySettings, ServiceSettings, TlsSettings


LAB_SUPPLIER_EUI64 = lab_eui64(RemotePartyRole.SUPPLIER)  # lab-supplier's own Entity Identifier: the only one it may request for online

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def world(tmp_path_factory, smki_token):
    world = World(tmp_path_factory.mktemp("portal"), smki_token)
    yield world
    world.pki.close()


class Browser:
    """A client keeping its cookies by hand (aiohttp's jar would hold back Secure cookies on plain HTTP), optionally
    presenting a client certificate as a trusted TLS proxy forwards it."""

    def __init__(self, client: TestClient, certificate: Path | None = None) -> None:
        self.client, self.cookies = client, {}
        self.headers = {"X-SSL-Client-Cert": quote(certificate.read_text())} if certificate else {}
        self.set_cookies: list = []

    def _keep(self, response) -> None:
        for header in response.headers.getall("Set-Cookie", []):
            cookie = SimpleCookie(header)
            for name, morsel in cookie.items():
                self.set_cookies.append(morsel)
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)

    def _headers(self) -> dict:
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return {**self.headers, **({"Cookie": cookie} if cookie else {})}

    async def get(self, path: str):
        response = await self.client.get(path, headers=self._headers(), allow_redirects=False)
        self._keep(response)
        return response, await response.text()

    async def post(self, path: str, data):
        response = await self.client.post(path, data=data, headers=self._headers(), allow_redirects=False)
        self._keep(response)
        return response, await response.text()

    async def csrf(self, path: str) -> str:
        response, text = await self.get(path)
        assert response.status == 200, text
        return CSRF.search(text).group(1)

    async def login(self, username: str = "jo", password: str = PASSWORD):
        token = await self.csrf("/portal/login")
        return await self.post("/portal/login", {"csrf": token, "username": username, "password": password})


def run_portal(world: World, scenario, *, accounts: PortalAccounts | None = None, public_search: bool = False):
    """Run `scenario(client, services)` against a fresh app (a worker) over the world's PKI and register."""
    services = PortalServices(world.pki, world.database)
    settings = ServiceSettings(path=None, tls=TlsSettings(proxy=True), repository=RepositorySettings(public_search=public_search))

    async def main():
        app = make_app(services, settings)
        if accounts is not None:
            app[ACCOUNTS] = WorkerAccounts(accounts)
        async with TestClient(TestServer(app, host="127.0.0.1"), cookie_jar=aiohttp.DummyCookieJar()) as client:
            try:
                return await scenario(client, services)
            finally:
                await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], services.close)
    return asyncio.run(main()), services


def audited(services: PortalServices, operation: str) -> list:
    return [entry for entry in services.register_object.entries if entry.operation == operation]


# -- logging in -------------------------------------------------------------------------------------------------

def test_a_password_login_gives_a_secure_httponly_strict_session_cookie(world):
    async def scenario(client, services):
        browser = Browser(client)
        response, _ = await browser.login()
        assert response.status == 303 and response.headers["Location"] == "/portal/"
        session = next(m for m in browser.set_cookies if m.key == SESSION_COOKIE)
        assert session["secure"] and session["httponly"] and session["samesite"] == "Strict" and session["path"] == "/"
        response, text = await browser.get("/portal/")
        assert response.status == 200 and "lab-supplier" in text and "Signed in as" in text
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        return True
    _, services = run_portal(world, scenario)
    assert [entry.status for entry in audited(services, "portal-login")] == ["303"]


def test_no_session_is_sent_to_the_login_page(world):
    async def scenario(client, services):
        response, _ = await Browser(client).get("/portal/batches")
        return response.status, response.headers.get("Location")
    assert run_portal(world, scenario)[0] == (303, "/portal/login")


def test_a_login_without_its_csrf_token_is_refused_with_a_page(world):
    async def scenario(client, services):
        browser = Browser(client)
        await browser.csrf("/portal/login")  # the login cookie is set; the form's token is left out
        response, text = await browser.post("/portal/login", {"username": "jo", "password": PASSWORD})
        assert LOGIN_COOKIE in browser.cookies and SESSION_COOKIE not in browser.cookies
        return response.status, text
    (status, text), services = run_portal(world, scenario)
    assert status == 403 and "CSRF" in text and "<h1>Form refused</h1>" in text
    assert [entry.outcome for entry in audited(services, "portal-login")] == ["refused"]


def test_five_wrong_passwords_lock_the_account_and_the_right_one_is_then_refused(world):
    add_account(world.database, "lockme", "lab-supplier")

    async def scenario(client, services):
        browser = Browser(client)
        statuses = []
        for _ in range(5):
            response, text = await browser.login("lockme", "not the password at all")
            statuses.append(response.status)
        assert "locked until" in text
        response, text = await browser.login("lockme", PASSWORD)
        return statuses, response.status, text, SESSION_COOKIE in browser.cookies
    (statuses, status, text, has_session), services = run_portal(world, scenario)
    assert statuses == [401] * 5 and status == 401 and not has_session
    assert "locked" in text and PASSWORD not in text
    with PortalAccounts(world.database) as accounts:
        assert accounts.find("lockme").locked_until is not None
    assert len(audited(services, "portal-login")) == 6


def test_the_lockout_ends_after_an_hour_and_counts_only_failures_within_one(tmp_path, world):
    now = [datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)]
    database = tmp_path / "service.db"
    lab(tmp_path / "lab", database)
    add_account(database, "sam", "lab-supplier")
    with PortalAccounts(database, clock=lambda: now[0]) as accounts:
        for _ in range(4):
            with pytest.raises(LoginRefused):
                accounts.login("sam", "wrong password!")
        now[0] += timedelta(hours=1, seconds=1)  # those four are now older than an hour
        with pytest.raises(LoginRefused) as refused:
            accounts.login("sam", "wrong password!")
        assert not isinstance(refused.value, AccountLocked)
        for _ in range(4):
            with pytest.raises(LoginRefused):
                accounts.login("sam", "wrong password!")
        with pytest.raises(AccountLocked):
            accounts.login("sam", PASSWORD)
        now[0] += timedelta(minutes=59)
        with pytest.raises(AccountLocked):
            accounts.login("sam", PASSWORD)
        now[0] += timedelta(minutes=2)
        session, token = accounts.login("sam", PASSWORD)
        assert accounts.session(token).username == "sam"


def test_an_expired_session_gets_a_clear_page_and_must_log_in_again(world):
    now = [datetime.now(timezone.utc)]
    accounts = PortalAccounts(world.database, clock=lambda: now[0])

    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        response, _ = await browser.get("/portal/")
        assert response.status == 200
        token = CSRF.search(_).group(1)
        now[0] += timedelta(minutes=31)  # past the session's 30 idle minutes
        response, text = await browser.post("/portal/organisation", {"csrf": token, "csr_text": "x"})
        assert SESSION_COOKIE not in browser.cookies  # the cookie is cleared
        return response.status, text
    (status, text), services = run_portal(world, scenario, accounts=accounts)
    assert status == 401 and "session has expired" in text and 'href="/portal/login"' in text
    assert any(entry.status == "401" for entry in audited(services, "portal-organisation-submit"))


def test_the_store_never_holds_the_session_token_nor_the_password(world):
    with PortalAccounts(world.database) as accounts:
        _, token = accounts.login("jo", PASSWORD)
    stored = world.database.read_bytes()
    assert token.encode() not in stored and PASSWORD.encode() not in stored


def test_a_session_of_a_suspended_subscriber_ends(tmp_path, world):
    database = tmp_path / "service.db"
    lab(tmp_path / "lab", database)
    add_account(database, "kim", "lab-supplier")
    from smki.register import SubscriberRegister
    with PortalAccounts(database) as accounts, SubscriberRegister(database) as register:
        _, token = accounts.login("kim", PASSWORD)
        register.suspend("lab-supplier")
        with pytest.raises(SessionExpired):
            accounts.session(token)
        with pytest.raises(LoginRefused):
            accounts.login("kim", PASSWORD)


# -- forms: CSRF, bad input, escaping ---------------------------------------------------------------------------

def test_a_form_without_its_csrf_token_is_refused_and_nothing_is_issued(world):
    csr = world.pki.organisation_csr(LAB_SUPPLIER_EUI64, role="supplier", usage="DS").der
    before = world.issued()

    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        data = FormData()
        data.add_field("csr", csr, filename="supplier.csr")
        return await browser.post("/portal/organisation", data)
    (response, text), services = run_portal(world, scenario)
    assert response.status == 403 and "CSRF" in text
    assert world.issued() == before
    assert [e.status for e in audited(services, "portal-organisation-submit")] == ["403"]


def test_an_organisation_csr_is_issued_and_shown_with_its_downloads(world):
    csr = world.pki.organisation_csr(LAB_SUPPLIER_EUI64, role="supplier", usage="KA").der
    before = world.issued()

    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        data = FormData()
        data.add_field("csrf", await browser.csrf("/portal/organisation"))
        data.add_field("csr", csr, filename="supplier.csr")
        return await browser.post("/portal/organisation", data)
    (response, text), services = run_portal(world, scenario)
    assert response.status == 200, text
    assert world.issued() == before + 1
    pem = re.search(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", text).group(0)
    issued = x509.load_pem_x509_certificate(pem.encode())
    assert f"{issued.serial_number:X}" in text and LAB_SUPPLIER_EUI64.hex in text
    assert 'download="' in text and "data:application/pkix-cert;base64," in text


@pytest.mark.parametrize("filename, body, status, words", [
    ("not-a-csr.csr", b"this is not a certificate signing request", 400, "CSR"),
    ("big.csr", b"A" * (70 * 1024), 413, "over"),
    ("../../etc/passwd", b"whatever", 400, "path parts"),
    ("sub/dir.csr", b"whatever", 400, "path parts"),
])
def test_a_bad_upload_gets_a_page_with_its_status_an_audit_entry_and_nothing_issued(world, filename, body, status, words):
    before = world.issued()

    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        data = FormData()
        data.add_field("csrf", await browser.csrf("/portal/organisation"))
        data.add_field("csr", body, filename=filename)
        return await browser.post("/portal/organisation", data)
    (response, text), services = run_portal(world, scenario)
    assert response.status == status and words in text and 'class="error"' in text
    assert "Traceback" not in text
    assert world.issued() == before
    assert [e.status for e in audited(services, "portal-organisation-submit")] == [str(status)]


def test_markup_in_a_file_name_and_in_a_reference_is_shown_escaped(world):
    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        answers = []
        for name in ('<img src=x onerror="alert(1)">.zip', '<script>alert("x")</script>.zip'):
            data = FormData(quote_fields=False)  # the name as a hostile client sends it, unescaped
            data.add_field("csrf", await browser.csrf("/portal/batches"))
            data.add_field("batch", b"not a zip at all", filename=name)
            answers.append(await browser.post("/portal/batches", data))
        return answers
    ((first, first_text), (second, second_text)), _ = run_portal(world, scenario)
    assert first.status == 400 and "not a ZIP" in first_text and "&lt;img src=x onerror=" in first_text
    assert second.status == 400 and "path parts" in second_text and "&lt;script&gt;alert(" in second_text
    assert "<img src=x" not in first_text and "<script>alert" not in second_text


def test_markup_in_a_certificate_subject_is_shown_escaped(world):
    evil = '<img src=x onerror="alert(1)">'
    csr = world.pki.organisation_csr(LAB_SUPPLIER_EUI64, role="supplier", usage="DS", common_name=evil).der

    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        data = FormData()
        data.add_field("csrf", await browser.csrf("/portal/organisation"))
        data.add_field("csr_text", csr.hex())  # not an encoding the portal takes: the refusal's text is shown escaped
        first = await browser.post("/portal/organisation", data)
        data = FormData()
        data.add_field("csrf", await browser.csrf("/portal/organisation"))
        data.add_field("csr", csr, filename="evil.csr")
        return first, await browser.post("/portal/organisation", data)
    ((first, first_text), (response, text)), _ = run_portal(world, scenario)
    assert first.status == 400
    assert response.status == 200  # issued (the policy takes any CN text): the CN is on the page as text, not markup
    assert evil not in text and "<img" not in text and "&lt;img src=x onerror=" in text


# -- client certificates ----------------------------------------------------------------------------------------

def test_a_client_certificate_opens_the_portal_with_a_bound_session_and_csrf_tokens(world):
    async def scenario(client, services):
        browser = Browser(client, world.clients["lab-supplier"].certificate)
        response, text = await browser.get("/portal/")
        first = browser.cookies.get(SESSION_COOKIE)
        assert response.status == 200 and "lab-supplier" in text and first
        response, text = await browser.get("/portal/batches")
        assert browser.cookies[SESSION_COOKIE] == first and CSRF.search(text)
        # The same cookie with another certificate is not that session.
        other = Browser(client, world.clients["lab-networkOperator"].certificate)
        other.cookies = dict(browser.cookies)
        response, text = await other.get("/portal/")
        return response.status, text, other.cookies[SESSION_COOKIE] != first
    status, text, renewed = run_portal(world, scenario)[0]
    assert status == 200 and "lab-networkOperator" in text and renewed


def test_the_operator_view_needs_an_operators_certificate(world):
    async def scenario(client, services):
        password, supplier = Browser(client), Browser(client, world.clients["lab-supplier"].certificate)
        await password.login()
        operator = Browser(client, world.clients["lab-operator"].certificate)
        return [(await b.get("/portal/operator"))[0].status for b in (password, supplier, operator)]
    assert run_portal(world, scenario)[0] == [403, 403, 200]


def test_a_batch_is_approved_by_the_operator_and_another_subscribers_batch_is_refused(world):
    upload = batch_zip(world.pki, 3, 0x0101)

    async def scenario(client, services):
        supplier = Browser(client, world.clients["lab-supplier"].certificate)
        data = FormData()
        data.add_field("csrf", await supplier.csrf("/portal/batches"))
        data.add_field("batch", upload, filename="three.zip", content_type="application/zip")
        response, _ = await supplier.post("/portal/batches", data)
        assert response.status == 303, _
        number = int(response.headers["Location"].rsplit("=", 1)[1])
        response, text = await supplier.get("/portal/batches")
        assert f'id="batch-{number}"' in text and "PENDING" in text
        other = Browser(client)
        await other.login("nora")
        refused = [(await other.get(f"/portal/batches/{number}{suffix}"))[0].status for suffix in ("", "/status.csv")]
        operator = Browser(client, world.clients["lab-operator"].certificate)
        token = CSRF.search((await operator.get("/portal/operator"))[1]).group(1)
        forged, _ = await operator.post(f"/portal/operator/batches/{number}/approve", {"csrf": "forged"})
        approved, _ = await operator.post(f"/portal/operator/batches/{number}/approve", {"csrf": token})
        response, text = await supplier.get(f"/portal/batches/{number}")
        return refused, forged.status, approved.status, text, number
    (refused, forged, approved, text, number), services = run_portal(world, scenario)
    assert refused == [404, 404] and forged == 403 and approved == 303
    assert "PARSING" in text or "QUEUED" in text
    batch = world.pki.issuing_dca.show_batch(number)
    assert batch.decided_by == "lab-operator"


def test_the_operator_pauses_and_resumes_the_batch_processing_and_a_non_operator_is_refused(world):
    dca = world.pki.issuing_dca

    async def scenario(client, services):
        supplier = Browser(client, world.clients["lab-supplier"].certificate)
        supplier_token = await supplier.csrf("/portal/batches")
        by_supplier, _ = await supplier.post("/portal/operator/processing/pause", {"csrf": supplier_token, "reason": "not mine"})
        operator = Browser(client, world.clients["lab-operator"].certificate)
        response, page_text = await operator.get("/portal/operator")
        token = CSRF.search(page_text).group(1)
        running = 'id="processing-state"' in page_text and "Pause processing" in page_text
        forged, _ = await operator.post("/portal/operator/processing/pause", {"csrf": "forged", "reason": "x"})
        unreasoned, _ = await operator.post("/portal/operator/processing/pause", {"csrf": token, "reason": " "})
        state_before = dca.processing_state().paused
        paused, _ = await operator.post("/portal/operator/processing/pause", {"csrf": token, "reason": "<b>HSM swap</b>"})
        state_paused = dca.processing_state()
        again, _ = await operator.post("/portal/operator/processing/pause", {"csrf": token, "reason": "again"})
        _, paused_page = await operator.get("/portal/operator")
        resumed, _ = await operator.post("/portal/operator/processing/resume", {"csrf": token})
        return (by_supplier.status, running, forged.status, unreasoned.status, state_before, paused.status, state_paused, again.status,
                paused_page, resumed.status)
    try:
        (by_supplier, running, forged, unreasoned, state_before, paused, state_paused, again, paused_page,
         resumed), services = run_portal(world, scenario)
    finally:
        if dca.processing_state().paused:  # the world is shared by this module's tests
            dca.resume_processing()
    assert by_supplier == 403 and running and forged == 403 and unreasoned == 400 and state_before is False
    assert paused == 303 and (state_paused.paused, state_paused.by, state_paused.reason) == (True, "lab-operator", "<b>HSM swap</b>")
    assert again == 409
    assert "by lab-operator: &lt;b&gt;HSM swap&lt;/b&gt;" in paused_page and "Resume processing" in paused_page
    assert resumed == 303 and dca.processing_state().paused is False
    assert [e.status for e in audited(services, "portal-operator-pause")] == ["303"]
    assert [e.status for e in audited(services, "portal-operator-resume")] == ["303"]
    connection = sqlite3.connect(world.pki.state("issuing-dca") / "smki.db")
    try:
        trail = connection.execute("SELECT actor, operation, outcome FROM audit_entries WHERE operation LIKE 'batch.processing.%' "
                                   "ORDER BY seq").fetchall()
    finally:
        connection.close()
    assert trail == [("lab-operator", "batch.processing.pause", "success"), ("lab-operator", "batch.processing.pause", "refused"),
                     ("lab-operator", "batch.processing.resume", "success")]



def test_the_repository_pages_are_for_visitors_or_key_holders_unless_public(world):
    device, _ = world.pki.device_certificate("00-DB-12-34-56-78-90-F1")
    world.pki.lodge_and_publish(device, directory=world.directory / "published")
    serial = f"{device.certificate.serial_number:X}"

    async def scenario(client, services):
        anonymous, browser = Browser(client), Browser(client)
        await browser.login()
        anonymous_status = (await anonymous.get(f"/portal/repository?serial={serial}"))[0].status
        keyed = await client.get(f"/portal/repository?serial={serial}", headers={"X-API-Key": API_KEY})
        response, text = await browser.get("/portal/repository?eui64=00DB1234567890F1")
        detail, detail_text = await browser.get(f"/portal/repository/certificates/{serial}")
        der = await client.get(f"/portal/repository/certificates/{serial}/certificate.cer", headers={"X-API-Key": API_KEY})
        return anonymous_status, keyed.status, response.status, text, detail.status, detail_text, await der.read()
    anonymous, keyed, status, text, detail, detail_text, der = run_portal(world, scenario)[0]
    assert anonymous == 401 and keyed == 200 and status == 200 and serial in text
    assert detail == 200 and "Issuer chain" in detail_text and "HardwareModuleName" in detail_text
    assert der == device.der

    async def public(client, services):
        return (await Browser(client).get(f"/portal/repository?serial={serial}"))[0].status
    assert run_portal(world, public, public_search=True)[0] == 200


def test_a_malformed_search_is_a_page_not_a_fault(world):
    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        return await browser.get("/portal/repository?eui64=%3Cb%3Enot-an-eui%3C%2Fb%3E")
    response, text = run_portal(world, scenario)[0]
    assert response.status == 400 and "<b>not-an-eui" not in text and "&lt;b&gt;" in text


def test_an_ad_hoc_device_csr_from_the_form_replaces_a_devices_certificate_and_an_unknown_device_is_refused(world):
    world.pki.device_certificate("00-DB-12-34-56-78-92-01")  # an ad hoc request replaces: the device has one already
    known = world.pki.device_csr("00-DB-12-34-56-78-92-01", device_type="ESME").der
    unknown = world.pki.device_csr("00-DB-12-34-56-78-92-02", device_type="ESME").der
    before = len(world.pki.issuing_dca.list())

    async def scenario(client, services):
        browser = Browser(client, world.clients["lab-supplier"].certificate)
        answers = []
        for csr in (known, unknown):
            data = FormData()
            data.add_field("csrf", await browser.csrf("/portal/adhoc"))
            data.add_field("csr", csr, filename="meter.csr")
            answers.append(await browser.post("/portal/adhoc", data))
        return answers
    ((issued, issued_text), (refused, refused_text)), services = run_portal(world, scenario)
    assert issued.status == 200, issued_text
    assert "HardwareModuleName" in issued_text and "00DB123456789201" in issued_text
    assert refused.status == 422 and "Unknown device" in refused_text
    assert len(world.pki.issuing_dca.list()) == before + 1
    assert [e.status for e in audited(services, "portal-adhoc-submit")] == ["200", "422"]


def test_a_subscriber_with_several_roles_names_one_it_holds(world, tmp_path):
    csr = world.pki.organisation_csr(LAB_SUPPLIER_EUI64, role="supplier", usage="DS").der
    before = world.issued()

    async def scenario(client, services):
        browser = Browser(client)
        await browser.login()
        data = FormData()
        data.add_field("csrf", await browser.csrf("/portal/organisation"))
        data.add_field("csr", csr, filename="supplier.csr")
        data.add_field("role", "networkOperator")  # lab-supplier holds only supplier
        return await browser.post("/portal/organisation", data)
    (response, text), _ = run_portal(world, scenario)
    assert response.status == 403 and "does not hold the role" in text
    assert world.issued() == before


# -- smki portal users ------------------------------------------------------------------------------------------

def smki(*args: str, env: dict | None = None):
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "smki.cli.main", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_smki_portal_users_manages_accounts_with_the_password_from_a_secret_source(tmp_path):
    import json
    database = tmp_path / "service.db"
    lab(tmp_path / "lab", database)
    secret = "a long portal password 4 cli"
    added = smki("portal", "users", "add", "amy", "--subscriber", "lab-supplier", "--database", str(database),
                 "--password-source", "env:AMY_PASSWORD", "--actor", "alice", "--json", env={"AMY_PASSWORD": secret})
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["status"] == "active"
    as_argv = smki("portal", "users", "add", "bob", "--subscriber", "lab-supplier", "--database", str(database),
                   "--password-source", secret)
    assert as_argv.returncode == 3 and secret not in as_argv.stderr and len(as_argv.stderr.strip().splitlines()) == 1
    short = smki("portal", "users", "add", "bob", "--subscriber", "lab-supplier", "--database", str(database),
                 "--password-source", "env:SHORT", env={"SHORT": "short"})
    assert short.returncode == 3 and "12" in short.stderr and "short" not in short.stderr.replace("shorter", "")
    taken = smki("portal", "users", "add", "amy", "--subscriber", "lab-supplier", "--database", str(database),
                 "--password-source", "env:AMY_PASSWORD", env={"AMY_PASSWORD": secret})
    assert taken.returncode == 5
    unknown = smki("portal", "users", "add", "cy", "--subscriber", "nobody", "--database", str(database),
                   "--password-source", "env:AMY_PASSWORD", env={"AMY_PASSWORD": secret})
    assert unknown.returncode == 3 and "nobody" in unknown.stderr
    assert json.loads(smki("portal", "users", "lock", "amy", "--database", str(database), "--json").stdout)["status"] == "locked"
    with PortalAccounts(database) as accounts:
        with pytest.raises(AccountLocked):
            accounts.login("amy", secret)
    assert smki("portal", "users", "unlock", "amy", "--database", str(database)).returncode == 0
    with PortalAccounts(database) as accounts:
        accounts.login("amy", secret)
    assert smki("portal", "users", "remove", "amy", "--database", str(database)).returncode == 0
    assert smki("portal", "users", "unlock", "amy", "--database", str(database)).returncode == 5
    listed = json.loads(smki("portal", "users", "list", "--database", str(database), "--json").stdout)
    assert [(a["username"], a["status"]) for a in listed] == [("amy", "removed")]
    assert secret.encode() not in database.read_bytes()
    from smki.audit.verify import rows_from_database, verify_trail
    from smki.store.database import open_database
    entries, checkpoints = rows_from_database(open_database(database))
    operations = [(e["operation"], e["outcome"]) for e in entries if e["operation"].startswith("portal.")]
    assert ("portal.user.add", "success") in operations and ("portal.user.add", "refused") in operations
    assert ("portal.user.lock", "success") in operations and ("portal.login", "refused") in operations
    assert verify_trail(entries, checkpoints, None).ok


def test_markup_in_a_user_name_is_shown_escaped_on_the_login_page(world):
    async def scenario(client, services):
        return await Browser(client).login('"><script>alert(1)</script>', "whatever it is")
    response, text = run_portal(world, scenario)[0]
    assert response.status == 401 and "wrong user name or password" in text
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text


def test_smki_serve_serves_the_portal_over_mutual_tls(world, tmp_path):
    """The portal in `smki serve` itself (worker processes, its own TLS): the address the demo prints."""
    import http.client
    import json
    import os
    import signal
    import ssl
    import subprocess
    import sys
    credentials = world.credentials
    (tmp_path / "librarian.yaml").write_text(f"kind: librarian\ndatabase: {world.pki.librarian.database}\n")
    (tmp_path / "service.yaml").write_text(f"""\
kind: service
listen: {{address: 127.0.0.1, port: 0}}
workers: 1
tls: {{certificate: {credentials.server_certificate}, key: {credentials.server_key}, client_ca: {credentials.ca_certificate}}}
database: {world.database}
librarian: librarian.yaml
repository: {{api_key_source: env:PORTAL_TEST_KEY}}
""")
    process = subprocess.Popen([sys.executable, "-m", "smki.cli.main", "serve", "--config", str(tmp_path / "service.yaml"), "--json"],
                               stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr.log", "wb"), env={**os.environ, "PORTAL_TEST_KEY": API_KEY})
    try:
        line = process.stdout.readline()
        assert line, (tmp_path / "stderr.log").read_text()
        port = int(json.loads(line)["url"].rsplit(":", 1)[1])

        def get(path: str, client: str | None = None) -> tuple[int, str]:
            context = ssl.create_default_context(cafile=str(credentials.ca_certificate))
            if client:
                lab_client = world.clients[client]
                context.load_cert_chain(str(lab_client.certificate), str(lab_client.key))
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode()
            connection.close()
            return response.status, body
        status, body = get("/portal/login")
        assert status == 200 and "<h1>Log in</h1>" in body
        status, body = get("/portal/", "lab-supplier")
        assert status == 200 and "lab-supplier" in body
        status, body = get("/portal/repository/crls")
        assert status == 200 and "<h1>CRLs and ARLs</h1>" in body
        assert get("/portal/static/portal.css")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


# -- found by the hostile review (issue 15/16) ------------------------------------------------------------------

def test_a_batch_number_of_non_ascii_digits_is_no_such_batch_not_a_fault(world):
    """"²" passes str.isdigit() but not int(): it was an HTTP 500; now the page says there is no such batch."""
    async def scenario(client, services):
        browser = Browser(client, world.clients["lab-supplier"].certificate)
        return [(await browser.get(f"/portal/batches/{quote(number)}{suffix}"))[0].status
                for number in ("\u00b2", "1\u00b9") for suffix in ("", "/status.csv")]
    statuses, services = run_portal(world, scenario)
    assert statuses == [404] * 4
    assert [e.code for e in audited(services, "portal-batch") + audited(services, "portal-batch-download")] == ["FM:AA3"] * 4


def portal_adhoc_count(world, subscriber: str) -> int:
    """The ad hoc submissions the Issuing OCA's usage rules count for `subscriber` through the portal (its own store)."""
    import sqlite3
    with sqlite3.connect(world.pki.state("issuing-oca") / "smki.db") as connection:
        return connection.execute("SELECT COUNT(*) FROM adhoc_submissions WHERE subscriber = ? AND channel = 'portal'",
                                  (subscriber,)).fetchone()[0]


def test_an_organisation_csr_from_the_portal_is_counted_by_the_usage_rules(world):
    """The portal's Organisation CSR went to issue_organisation without its submitter: the usage rules (the portal's
    daily cap) never saw it, while the Organisation CSR web service and the portal's ad hoc form are counted."""
    csr = world.pki.organisation_csr(LAB_SUPPLIER_EUI64, role="supplier", usage="DS").der
    before = portal_adhoc_count(world, "lab-supplier")

    async def scenario(client, services):
        browser = Browser(client, world.clients["lab-supplier"].certificate)
        data = FormData()
        data.add_field("csrf", await browser.csrf("/portal/organisation"))
        data.add_field("csr", csr, filename="supplier.csr")
        return await browser.post("/portal/organisation", data)
    (response, text), services = run_portal(world, scenario)
    assert response.status == 200, text
    assert portal_adhoc_count(world, "lab-supplier") == before + 1


def test_an_upload_over_the_services_body_limit_is_refused_and_audited(world):
    """Issue 16: an oversized upload gets its status and an audit entry. Over the portal's body limit the framing check
    answered 413 before the portal's pages ran, unaudited."""
    services = PortalServices(world.pki, world.database)
    settings = ServiceSettings(path=None, tls=TlsSettings(proxy=True), limits=Limits(max_body_bytes=4096))
    before = world.issued()

    async def main():
        app = make_app(services, settings)
        async with TestClient(TestServer(app, host="127.0.0.1"), cookie_jar=aiohttp.DummyCookieJar()) as client:
            try:
                browser = Browser(client, world.clients["lab-supplier"].certificate)
                data = FormData()
                data.add_field("csrf", await browser.csrf("/portal/batches"))
                data.add_field("batch", b"PK\x03\x04" + b"A" * 8192, filename="big.zip", content_type="application/zip")
                response, text = await browser.post("/portal/batches", data)
                operator = Browser(client, world.clients["lab-operator"].certificate)
                refused, _ = await operator.post("/portal/operator/batches/1/approve", {"csrf": "x", "reason": "A" * 8192})
                return response.status, text, refused.status
            finally:
                await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], services.close)
    status, text, operator_status = asyncio.run(main())
    assert status == 413 and "over 4096 bytes" in text and operator_status == 413
    entries = [entry for entry in services.register_object.entries if entry.status == "413"]
    assert [(entry.interface, entry.operation, entry.subscriber, entry.outcome) for entry in entries] == [
        ("portal", "/portal/batches", "lab-supplier", Outcome.REFUSED),
        ("operator", "/portal/operator/batches/1/approve", "lab-operator", Outcome.REFUSED)]
    assert world.issued() == before


def test_guesses_sent_in_parallel_get_no_more_than_five_checks(tmp_path):
    """Each attempt is counted before its password is checked (hostile review: two workers let 5 + 1 guesses through):
    with four wrong passwords counted and two guesses in flight, the last guess is refused unchecked, even the right one."""
    import threading

    database = tmp_path / "service.db"
    lab(tmp_path / "lab", database)
    add_account(database, "pat", "lab-supplier")
    with PortalAccounts(database) as accounts:
        for _ in range(4):
            with pytest.raises(LoginRefused):
                accounts.login("pat", "wrong password!")
    checking, release = threading.Event(), threading.Event()
    outcomes = []

    def slow_guess() -> None:  # the fifth guess, held while its password is being checked
        with PortalAccounts(database) as accounts:
            real_verify = accounts._verify
            def held(hashed, password):
                checking.set()
                release.wait(30)
                return real_verify(hashed, password)
            accounts._verify = held
            try:
                accounts.login("pat", "wrong password!")
            except LoginRefused as exc:
                outcomes.append(type(exc).__name__)
    guess = threading.Thread(target=slow_guess)
    guess.start()
    assert checking.wait(30)
    with PortalAccounts(database) as accounts, pytest.raises(AccountLocked):
        accounts.login("pat", PASSWORD)  # a sixth attempt while the fifth is in flight: refused, never checked
    release.set()
    guess.join(30)
    assert outcomes == ["AccountLocked"]  # the fifth wrong password locked the account
