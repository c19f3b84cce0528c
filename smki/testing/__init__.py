"""smki.testing: a complete SMKI test PKI on a private SoftHSM token, for integration tests.

    import smki.testing

    with smki.testing.TestPKI.create() as pki:       # Root and Issuing OCA/DCA on a private SoftHSM token, and a Librarian
        device, key = pki.device_certificate("00-DB-12-34-56-78-90-A0", device_type="ESME")    # key: the device's private key
        assert pki.verify(device).valid and not pki.lint(device)
        oca = pki.issuing_oca                        # an smki.IssuingAuthority: the object `smki ca` drives
        request = pki.organisation_csr("90-B3-D5-1F-30-01-00-00", role="supplier", usage="KA")
        supplier = oca.issue_organisation(request.der, requester="supplier")
        oca.revoke(supplier.serial_hex, "keyCompromise")
        crl = oca.issue_crl()
        assert "is revoked" in pki.verify(supplier, crls=[crl]).reason

With pytest, the `smki` plugin (entry point pytest11) offers the fixtures `smki_pki` (one TestPKI
per run), `smki_token` (a private token), `smki_softhsm` (the process's SoftHSM store) and `smki_service` (a real
`smki serve` over mutual TLS with a client per role: smki.testing.TestService, whose ServiceClient speaks the CSR
web services).
"""

from smki.lazy import lazy_exports
from smki.testing.softhsm import SoftHsmStore, TestToken

# The PKI's names are imported on first use: the pytest plugin, loaded in every run where smki is
# installed, then costs no import of the actors until a test asks for a PKI.
_EXPORTS = dict.fromkeys(("Hierarchy", "authority_name", "ServedRepository", "TestCertificate", "TestPKI", "TestRequest",
                          "shipped_policy"), "smki.testing.pki")
_EXPORTS.update(dict.fromkeys(("BatchResult", "BatchSubmission", "ClientCredential", "CsrAnswer", "DeviceResult", "ResponseZip",
                               "ServiceClient", "ServiceHttpError", "TestService", "lab_policies"), "smki.testing.service"))
__all__ = [*sorted(_EXPORTS), "SoftHsmStore", "TestToken"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
