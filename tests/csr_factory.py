"""The tests' name for smki.testing.csr, where the SMKI PKCS#10 encodings now live (for our users' tests too)."""

from smki.testing.csr import *  # noqa: F401,F403 - the whole module, as the tests used it (f.ec, f.tlv, ...)
