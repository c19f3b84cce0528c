"""The register of Authorised Subscribers: which client certificate (by fingerprint, or by issuer and
key) belongs to which party, its EUI-64, the RemotePartyRole(s) it may act for and the online
interfaces it may use; and the audit trail of every request the online services answer.

An actor of its own (it never imports the Issuing Authorities or the Librarian): `smki subscribers`
and `smki serve` both drive it.
"""

from smki.register.model import Interface, RefusalReason, Subscriber, SubscriberRefused, SubscriberStatus
from smki.register.register import (IDENTITY_CACHE_SECONDS, ClientCertificate, Match, RegisteredSubscriber, RequestEntry,
                                    RequestOutcome, SubscriberRegister, certificate_fingerprint)

__all__ = ["IDENTITY_CACHE_SECONDS", "ClientCertificate", "Interface", "Match", "RefusalReason", "RegisteredSubscriber",
           "RequestEntry", "RequestOutcome", "Subscriber", "SubscriberRefused", "SubscriberRegister", "SubscriberStatus",
           "certificate_fingerprint"]
