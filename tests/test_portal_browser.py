"""The SMKI Portal in a real browser: Debian's Chromium, headless, driven by Playwright (pointed at /usr/bin/chromium;
never a browser Playwright downloads), against the portal served over mutual TLS by web-core's application on a
real test PKI on SoftHSM, with lab TLS credentials registered in a real subscriber register.

Covers: logging in with a client certificate and with a password; the lockout after 5 failures; uploading an
Organisation CSR and downloading the certificate (checked with openssl); uploading a batch and watching it
complete (the page's live status, no reload); searching the repository; downloading the CRL; a CSRF attempt
refused; another subscriber's batch refused. Screenshots of the main pages go to $SMKI_PORTAL_SCREENSHOTS (a
temporary directory otherwise), each checked to have rendered: a PNG of the page's size, not blank, taken
once its expected heading was on the page."""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from cryptography import x509

from portal_support import PASSWORD, PortalServices, World, add_account, batch_zip
from smki.identifiers import RemotePartyRole
from smki.register.lab_credentials import lab_eui64
from smki.web.app import make_app
from smki.web.context import EXECUTOR
from smki.web.server import RunningService
from smki.web.settings import RepositorySettings, ServiceSettings, TlsSettings
from smki.web.tls import server_context


LAB_SUPPLIER_EUI64 = lab_eui64(RemotePartyRole.SUPPLIER)  # lab-supplier's own Entity Identifier: the only one it may request for online

playwright_api = pytest.importorskip("playwright.sync_api")  # the test extra; bootstrap installs it

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/bootstrap.sh installs it)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 20_000


class Portal:
    def __init__(self, world: World, services: PortalServices, app, service: RunningService, browser, screenshots: Path) -> None:
        self.world, self.services, self.app, self.service, self.browser = world, services, app, service, browser
        self.url, self.screenshots = service.url, screenshots

    def context(self, client: str | None = None):
        """A new browser profile; with `client`, presenting that lab client's certificate to the portal."""
        certificates = []
        if client is not None:
            lab_client = self.world.clients[client]
            certificates = [{"origin": self.url, "certPath": str(lab_client.certificate), "keyPath": str(lab_client.key)}]
        context = self.browser.new_context(ignore_https_errors=True, client_certificates=certificates, viewport=VIEWPORT,
                                           accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        return context

    def on_actor_thread(self, fn, *args):
        """`fn(*args)` on the service's actor thread (the one thread of this process that touches the HSM)."""
        return self.app[EXECUTOR].submit(fn, *args)

    def screenshot(self, page, name: str, heading: str) -> Path:
        """A full-page screenshot once `heading` is the page's h1, checked to have rendered."""
        playwright_api.expect(page.locator("h1")).to_have_text(heading)
        path = self.screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        check_rendered(path, VIEWPORT["width"])
        return path


def check_rendered(path: Path, width: int) -> None:
    """A PNG of the viewport's width, at least a screen high, whose pixels are not all one colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    png_width, png_height = struct.unpack(">II", data[16:24])
    assert png_width == width and png_height >= 300, (path, png_width, png_height)
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    pixels = zlib.decompress(b"".join(chunks))
    assert len(set(pixels)) > 32, f"{path}: the page looks blank (too few distinct colour values)"


@pytest.fixture(scope="module")
def portal(tmp_path_factory, smki_token):
    world = World(tmp_path_factory.mktemp("portal-browser"), smki_token)
    credentials = world.credentials
    tls = TlsSettings(certificate=credentials.server_certificate, key=credentials.server_key, client_ca=credentials.ca_certificate)
    settings = ServiceSettings(path=None, tls=tls, repository=RepositorySettings(public_crl=True, public_search=False))
    services = PortalServices(world.pki, world.database)
    app = make_app(services, settings)
    service = RunningService(app, settings.limits, "127.0.0.1", 0, server_context(tls)).start()
    screenshots = Path(os.environ.get("SMKI_PORTAL_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    screenshots.mkdir(parents=True, exist_ok=True)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                yield Portal(world, services, app, service, browser, screenshots)
            finally:
                browser.close()
    finally:
        app[EXECUTOR].submit(services.close).result(timeout=60)  # the actors' HSM sessions closed on their own thread
        service.shutdown()
        world.pki.close()


def password_login(portal: Portal, page, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{portal.url}/portal/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


# -- the two ways in ---------------------------------------------------------------------------------------------

def test_logging_in_with_a_client_certificate(portal):
    with portal.context("lab-supplier") as context:
        page = context.new_page()
        page.goto(f"{portal.url}/portal/")
        playwright_api.expect(page.locator(".who")).to_contain_text("lab-supplier")
        portal.screenshot(page, "home", "SMKI Portal")
        cookie = next(c for c in context.cookies() if c["name"] == "__Host-smki-portal")
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_logging_in_with_a_password_and_out(portal):
    with portal.context() as context:
        page = context.new_page()
        page.goto(f"{portal.url}/portal/batches")
        playwright_api.expect(page).to_have_url(f"{portal.url}/portal/login")  # no session: the login page
        portal.screenshot(page, "login", "Log in")
        password_login(portal, page, "jo")
        playwright_api.expect(page.locator(".who")).to_contain_text("Signed in as jo for lab-supplier")
        page.get_by_role("button", name="Log out").click()
        playwright_api.expect(page.locator("h1")).to_have_text("Log in")
        page.goto(f"{portal.url}/portal/batches")
        playwright_api.expect(page).to_have_url(f"{portal.url}/portal/login")


def test_five_wrong_passwords_lock_the_account(portal):
    add_account(portal.world.database, "locked-out", "lab-supplier")
    with portal.context() as context:
        page = context.new_page()
        for attempt in range(5):
            password_login(portal, page, "locked-out", "not the right password")
        playwright_api.expect(page.locator("#message")).to_contain_text("locked until")
        password_login(portal, page, "locked-out", PASSWORD)  # the right one, too late
        playwright_api.expect(page.locator("#message")).to_contain_text("locked")
        portal.screenshot(page, "locked", "Log in")
        assert not any(c["name"] == "__Host-smki-portal" for c in context.cookies())


# -- Organisation CSR, and the certificate downloaded -------------------------------------------------------------

def test_uploading_an_organisation_csr_and_downloading_the_certificate(portal, tmp_path):
    pki = portal.world.pki
    csr = tmp_path / "supplier.csr"
    csr.write_bytes(pki.organisation_csr(LAB_SUPPLIER_EUI64, role="supplier", usage="DS").der)
    with portal.context("lab-supplier") as context:
        page = context.new_page()
        page.goto(f"{portal.url}/portal/organisation")
        page.get_by_label("CSR file (PEM, Base64 or DER)").set_input_files(str(csr))
        page.get_by_role("button", name="Submit Organisation CSR").click()
        playwright_api.expect(page.locator("#issued")).to_have_text("Certificate issued")
        portal.screenshot(page, "organisation-issued", "Organisation CSR")
        with page.expect_download() as download_info:
            page.locator("#download-pem").click()
        pem = tmp_path / "downloaded.pem"
        download_info.value.save_as(pem)
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    assert certificate.subject.rfc4514_string() != ""
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(pki.certificate_file("root-oca")), "-untrusted",
                               str(pki.certificate_file("issuing-oca")), str(pem)], capture_output=True, text=True)
    assert verified.returncode == 0 and verified.stdout.strip().endswith(": OK"), verified.stdout + verified.stderr


def test_a_csrf_attempt_is_refused(portal):
    """Another site's page posts a form to the portal in the visitor's browser: its client certificate goes with it
    (the cookie does not: SameSite=Strict), but the form has no CSRF token, so nothing is done."""
    before = portal.world.issued()
    with portal.context("lab-supplier") as context:
        page = context.new_page()
        page.goto(f"{portal.url}/portal/")  # a session, as a visitor who has the portal open
        attacker = context.new_page()
        attacker.set_content(f'<form id="evil" method="post" action="{portal.url}/portal/organisation" '
                             'enctype="multipart/form-data"><input name="csr_text" value="MIIB..."></form>')
        with attacker.expect_navigation():
            attacker.evaluate("document.getElementById('evil').submit()")
        playwright_api.expect(attacker.locator("#message")).to_contain_text("CSRF")
        portal.screenshot(attacker, "csrf-refused", "Form refused")
    assert portal.world.issued() == before


# -- a batch, watched until it completes ----------------------------------------------------------------------------

def test_uploading_a_batch_and_watching_it_complete_and_another_subscriber_refused(portal, tmp_path):
    upload = tmp_path / "devices.zip"
    upload.write_bytes(batch_zip(portal.world.pki, 5, 0x0201))
    with portal.context("lab-supplier") as supplier_context, portal.context("lab-operator") as operator_context, \
            portal.context() as other_context:
        page = supplier_context.new_page()
        page.goto(f"{portal.url}/portal/batches")
        page.get_by_label("Batch ZIP (one .csr file per request, up to 50,000)").set_input_files(str(upload))
        page.get_by_label("Your reference (optional; the file name otherwise)").fill("browser batch")
        page.get_by_role("button", name="Upload batch").click()
        playwright_api.expect(page.locator("[role=status]")).to_contain_text("submitted")
        row = page.locator("#batches tbody tr").first
        number = int(row.get_attribute("data-number"))
        playwright_api.expect(row.locator('[data-field="status"]')).to_have_text("PENDING")

        operator = operator_context.new_page()
        operator.goto(f"{portal.url}/portal/operator")
        playwright_api.expect(operator.locator("#verification")).to_contain_text("Verified")
        operator.get_by_role("button", name=f"Approve {number}").click()
        playwright_api.expect(operator.locator("[role=status]")).to_contain_text(f"batch {number}")
        portal.screenshot(operator, "operator", "Operator view")

        processed = portal.on_actor_thread(lambda: portal.services.issuing_dca().process_batches(once=True, workers=1))
        # The supplier's page is not reloaded: its script follows the batch to COMPLETED, with the counts.
        playwright_api.expect(row.locator('[data-field="status"]')).to_have_text("COMPLETED", timeout=120_000)
        playwright_api.expect(row.locator('[data-field="success"]')).to_have_text("5")
        assert processed.result(timeout=60) >= 1
        portal.screenshot(page, "batches", "Batches")

        page.get_by_role("link", name=str(number), exact=True).click()
        playwright_api.expect(page.locator("#status")).to_have_text("COMPLETED")
        portal.screenshot(page, "batch", f"Batch {number}")
        with page.expect_download() as download_info:
            page.locator("#download-status").click()
        status_file = tmp_path / "status.csv"
        download_info.value.save_as(status_file)
        assert status_file.read_text().count("\n") >= 5

        other = other_context.new_page()
        password_login(portal, other, "nora")  # lab-networkOperator: not the batch's subscriber
        for path in (f"/portal/batches/{number}", f"/portal/batches/{number}/response.zip"):
            response = other.goto(f"{portal.url}{path}")
            assert response.status == 404
            playwright_api.expect(other.locator("h1")).to_have_text("No such batch")


# -- the repository ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lodged(portal):
    """A device certificate and the Organisation CRL, lodged with the repository (the service idle meanwhile)."""
    pki = portal.world.pki
    device, _ = pki.device_certificate("00-DB-12-34-56-78-91-01")
    revoked = pki.organisation_certificate("90-B3-D5-1F-30-01-00-21")
    pki.revoke(revoked)
    crl = pki.crl()
    pki.lodge_and_publish(device, revoked, crl, directory=portal.world.directory / "published")
    return device, crl.crl


def test_searching_the_repository_and_a_certificate_page(portal, lodged, tmp_path):
    device, _ = lodged
    serial = f"{device.certificate.serial_number:X}"
    with portal.context("lab-supplier") as context:
        page = context.new_page()
        page.goto(f"{portal.url}/portal/repository")
        page.get_by_label("EUI-64").fill("00-DB-12-34-56-78-91-01")
        page.get_by_role("button", name="Search").click()
        playwright_api.expect(page.locator("#results")).to_have_text("1 certificate found")
        portal.screenshot(page, "repository-search", "Repository search")
        page.get_by_role("link", name=serial).click()
        playwright_api.expect(page.locator("#repository-status")).to_have_text("In Use (I)")
        playwright_api.expect(page.locator(".chain li")).to_have_count(2)  # the Issuing DCA, then the Root DCA
        portal.screenshot(page, "certificate", f"Certificate {serial}")
        with page.expect_download() as download_info:
            page.locator("#download-der").click()
        der = tmp_path / "device.cer"
        download_info.value.save_as(der)
    assert der.read_bytes() == device.der


def test_downloading_the_crl(portal, lodged, tmp_path):
    _, crl = lodged
    with portal.context() as context:  # CRLs need no login (repository.public_crl)
        page = context.new_page()
        page.goto(f"{portal.url}/portal/repository/crls")
        table = page.locator("#crls")
        expected = crl
        number = expected.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        playwright_api.expect(table).to_contain_text(f"CRL {number}")
        portal.screenshot(page, "crls", "CRLs and ARLs")
        with page.expect_download() as download_info:
            page.get_by_role("link", name=f"CRL {number} (DER)").click()
        path = tmp_path / "downloaded.crl"
        download_info.value.save_as(path)
    downloaded = x509.load_der_x509_crl(path.read_bytes())
    assert downloaded == expected and len(downloaded) >= 1
    shown = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(path), "-noout", "-crlnumber"],
                           capture_output=True, text=True)
    assert shown.returncode == 0 and f"{number:X}" in shown.stdout.upper().replace("0X", "")


# -- accessibility and pages without scripts ---------------------------------------------------------------------------

UNLABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
    .filter(control => !(control.labels && control.labels.length) && !control.getAttribute('aria-label'))
    .map(control => control.name || control.id)"""


def test_every_form_control_has_a_label_and_the_portal_works_without_scripts(portal):
    with portal.context() as context:
        page = context.new_page()
        page.goto(f"{portal.url}/portal/login")
        page.keyboard.press("Tab")  # the first stop is the skip link
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.get_by_label("User name").focus()  # the login form, from the keyboard alone
        page.keyboard.type("jo")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        playwright_api.expect(page.locator(".who")).to_contain_text("Signed in as jo")
        for path in ("/portal/", "/portal/organisation", "/portal/adhoc", "/portal/batches", "/portal/repository",
                     "/portal/repository/crls"):
            page.goto(f"{portal.url}{path}")
            assert page.evaluate(UNLABELLED) == [], path
            assert page.evaluate("document.documentElement.lang") == "en"
    with portal.browser.new_context(ignore_https_errors=True, java_script_enabled=False, viewport=VIEWPORT) as context:
        page = context.new_page()
        password_login(portal, page, "jo")
        page.goto(f"{portal.url}/portal/batches")
        playwright_api.expect(page.locator("h1")).to_have_text("Batches")
        playwright_api.expect(page.get_by_label("Batch ZIP (one .csr file per request, up to 50,000)")).to_be_visible()
        page.goto(f"{portal.url}/portal/repository?eui64=00-DB-12-34-56-78-91-01")  # a search is a plain GET form
        playwright_api.expect(page.locator("h1")).to_have_text("Repository search")
