"""The audit trail's name of every operation, whichever actor performs it: one vocabulary for the
Root Authority, the Issuing Authority and the Librarian.

The values are a published format (audit entries, exports and the tools that read them): a member
may be added, never renamed.
"""

from __future__ import annotations

import enum

from smki.identifiers import ListType
from smki.policy.adoption import OPERATION as _POLICY_ADOPTION  # policy/ (a lower floor) reads its own entries back


class Operation(enum.StrEnum):
    """An audited operation's name. A StrEnum: stored and written in JSON as its value."""

    # Both authorities
    ADOPT_POLICY = _POLICY_ADOPTION
    REVOKE = "certificate.revoke"
    GENERATE_KEY = "key.generate"

    # Root Authority
    SELF_SIGN = "certificate.issue.root"
    CERTIFY_ISSUING_AUTHORITY = "certificate.issue.issuing-ca"
    ISSUE_ARL = "arl.issue"
    CEREMONY_ROOT_KEY = "ceremony.root-key"
    CEREMONY_ISSUING_CA = "ceremony.issuing-ca"
    CEREMONY_ARL = "ceremony.arl"
    CEREMONY_ROOT_REKEY = "ceremony.root-rekey"
    CEREMONY_CONTINGENCY_RECOVERY = "ceremony.contingency-recovery"

    # Issuing Authority
    ISSUE_ORGANISATION = "certificate.issue.organisation"
    ISSUE_DEVICE = "certificate.issue.device"
    ISSUE_BATCH = "certificate.issue.device.batch"
    BATCH_START = "batch.start"
    BATCH_RESUME = "batch.resume"
    BATCH_FINISH = "batch.finish"
    # the batch queue (a batch submitted online)
    BATCH_SUBMIT = "batch.submit"
    BATCH_APPROVE = "batch.approve"
    BATCH_REJECT = "batch.reject"
    BATCH_PARSE = "batch.parse"  # PARSING -> QUEUED, or TAMPERED
    BATCH_PAUSE = "batch.pause"
    BATCH_PROCESS = "batch.process"  # -> PROCESSING
    BATCH_COMPLETE = "batch.complete"
    BATCH_RESULT = "batch.result"  # recorded when refused (an unknown or another subscriber's batch)
    BATCH_PURGE = "batch.purge"
    PROCESSING_PAUSE = "batch.processing.pause"  # the operator pauses the queue's processing (every batch)
    PROCESSING_RESUME = "batch.processing.resume"
    REJECT = "certificate.reject"
    ISSUE_CRL = "crl.issue"
    ADOPT_STATE = "state.adopt"

    # Librarian
    LODGE_CERTIFICATE = "certificate.lodge"
    LODGE_CRL = "crl.lodge"
    LODGE_ARL = "arl.lodge"
    PUBLISH = "repository.publish"

    @classmethod
    def issue_list(cls, list_type: ListType) -> "Operation":
        return cls.ISSUE_ARL if list_type is ListType.ARL else cls.ISSUE_CRL

    @classmethod
    def lodge_list(cls, list_type: ListType) -> "Operation":
        return cls.LODGE_ARL if list_type is ListType.ARL else cls.LODGE_CRL

    @classmethod
    def ceremony(cls, ceremony_kind: str) -> "Operation":
        """`ceremony.<kind>`, for a ceremony kind (smki.root.ceremony_file.CeremonyKind)."""
        return cls(f"ceremony.{ceremony_kind}")
