"""TLS for the service: the server's SSLContext, and the caller's client certificate.

The context: TLS 1.2 at least; on TLS 1.2 only the four ECDHE suites SEC Appendix N names
(ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-SHA384, ECDHE-RSA-AES128-GCM-SHA256,
ECDHE-RSA-AES128-SHA256; and their ECDSA twins, for an EC server key), TLS 1.3's own suites; a client
certificate verified against tls.client_ca when one is presented (CERT_OPTIONAL: the repository takes
API-key callers; the caller middleware refuses a CSR interface's request without one).

Behind a reverse proxy (tls.proxy) the proxy verifies the client certificate and forwards it in a
header (URL-encoded PEM, as nginx's $ssl_client_escaped_cert); it is believed only from tls.trusted.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.web.settings import TlsSettings

CIPHERS = ":".join((
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA256",
))
MAX_FORWARDED_CERTIFICATE = 16 * 1024


def server_context(tls: TlsSettings, key_password: str | None = None) -> ssl.SSLContext:
    """The server's context for `tls` (not in proxy mode); ssl.SSLError or OSError if a file will not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(str(tls.certificate), str(tls.key), password=key_password)
    context.load_verify_locations(cafile=str(tls.client_ca))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@dataclass(frozen=True)
class PeerCertificate:
    der: bytes
    fingerprint: str  # SHA-256 of the DER, lowercase hex

    @classmethod
    def of(cls, der: bytes) -> "PeerCertificate":
        return cls(der, hashlib.sha256(der).hexdigest())


def peer_certificate(request: web.Request, tls: TlsSettings | None) -> PeerCertificate | None:
    """The caller's verified client certificate: from the TLS connection, or from a trusted proxy's header."""
    if tls is None:
        return None
    if tls.proxy:
        return _forwarded(request, tls)
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return PeerCertificate.of(der) if der else None


def _forwarded(request: web.Request, tls: TlsSettings) -> PeerCertificate | None:
    if request.remote not in tls.trusted:
        return None  # anyone else could write the header
    text = request.headers.get(tls.client_certificate_header)
    if not text or len(text) > MAX_FORWARDED_CERTIFICATE:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(unquote(text).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    return PeerCertificate.of(certificate.public_bytes(Encoding.DER))
