"""The `smki` pytest plugin (entry point pytest11): a test PKI, a private SoftHSM token and a served SMKI as fixtures.

Nothing here touches SoftHSM until a fixture is asked for, so the plugin costs nothing in a run
that does not use it. The store is chosen by `SoftHsmStore.for_process` (the one the PKCS#11
library was loaded under, else $SOFTHSM2_CONF's, else a new one), whatever was imported first.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smki_softhsm():
    """This process's SoftHSM store (configuration and token directory)."""
    from smki.testing.softhsm import SoftHsmStore

    return SoftHsmStore.for_process()


@pytest.fixture(scope="session")
def smki_token(smki_softhsm):
    """The run's private SoftHSM token, with random PINs (`.pin`); `.new_key()` makes P-256 keys on it.

    In a store made for the run (no $SOFTHSM2_CONF), the token goes with the store when the run ends.
    In a store $SOFTHSM2_CONF names, it stays there (SoftHSM cannot delete a token while the library
    that sees it is loaded): point $SOFTHSM2_CONF at a throw-away store, or leave it unset.
    """
    return smki_softhsm.shared_token()


@pytest.fixture(scope="session")
def smki_pki(smki_token, tmp_path_factory):
    """One complete SMKI test PKI per run (smki.testing.TestPKI): both hierarchies and a Librarian, on `smki_token`."""
    from smki.testing.pki import TestPKI

    pki = TestPKI.create(tmp_path_factory.mktemp("smki-pki"), token=smki_token)
    yield pki
    pki.close()


@pytest.fixture
def smki_repository(smki_pki):
    """The test PKI's repository web service on a free loopback port, for one test (`.url`, `.address`, `.api_key`)."""
    served = smki_pki.serve_repository()
    yield served
    served.shutdown()


@pytest.fixture(scope="session")
def smki_service(smki_token, tmp_path_factory):
    """A real `smki serve` (one worker) for a lab test PKI, over mutual TLS, for the run (smki.testing.TestService).

    `.url`, `.repository_url`, `.ca_file`, `.credentials[role]` (supplier, networkOperator, other, operator),
    `.client(role)` (a ServiceClient: adhoc, organisation, submit_batch, wait_for_batch, ...), `.pki` (the TestPKI
    it serves, with the lab's relaxed usage rules), `.replacement_csr()` (an ad hoc request for a known device).
    Stopped (SIGTERM, as an operator stops it) when the run ends."""
    from smki.testing.service import TestService

    service = TestService.start(directory=tmp_path_factory.mktemp("smki-service"), token=smki_token)
    yield service
    service.stop()
