"""smki.testing: a complete SMKI test PKI on a private SoftHSM token, for integration tests.

    import smki.testing

    with smki.testing.TestPKI.create() as pki:               # Root+Issuing OCA and DCA, a Librarian
        device, key = pki.device_certificate("00-DB-12-34-56-78-90-A0", device_type="ESME")
        assert pki.verify(device).valid and not pki.lint(device)
        supplier, _ = pki.organisation_certificate("90-B3-D5-1F-30-01-00-00", role="supplier", usage="KA")
        pki.revoke(supplier, "keyCompromise")
        crl = pki.crl()
        assert crl.crl.get_revoked_certificate_by_serial_number(supplier.certificate.serial_number)
        assert "is revoked" in pki.verify(supplier).reason

With pytest, the `smki` plugin (entry point pytest11) offers the fixtures `smki_pki` (one TestPKI
per run), `smki_token` (a private token) and `smki_softhsm` (the process's SoftHSM store).
"""

from smki.testing.softhsm import SoftHsmStore, TestToken

# The PKI's names are imported on first use: the pytest plugin, loaded in every run where smki is
# installed, then costs no import of the actors until a test asks for a PKI.
_PKI_NAMES = ("Hierarchy", "ServedRepository", "TestCertificate", "TestPKI", "TestRequest", "shipped_policy")

__all__ = [*_PKI_NAMES, "SoftHsmStore", "TestToken"]


def __getattr__(name: str):
    if name in _PKI_NAMES:
        from smki.testing import pki

        return getattr(pki, name)
    raise AttributeError(f"module 'smki.testing' has no attribute {name!r}")
