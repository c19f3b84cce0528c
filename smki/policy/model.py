"""The Certificate Policy as typed objects, and what the authorities ask of it.

`load_policy(path)` returns a `CertificatePolicy`: identity (name, version, SHA-256 of the
file), the CA hierarchy, the subscriber profile, eligibility, revocation, key management and
audit sections. It builds the profile parameters (every OID, name, validity and key usage
comes from here) and answers the checks an authority makes before issuing or revoking; a
refusal is a `PolicyRefusal` naming the rule (policy section) that refused.
"""

from __future__ import annotations

import calendar
import enum
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from smki.errors import BadInputError, RefusedError
from smki.identifiers import EUI64, CertificateType, DeviceType, KeyUsage, PolicyKind, RemotePartyRole
from smki.policy.loading import PolicyError, _field, line_of, policy_reference, read_policy_document, sha256_of
from smki.profiles import (DEVICE_NOT_AFTER, DeviceCertificateParams, IssuingCaCertificateParams, OrganisationCertificateParams,
                           RootCertificateParams, Validity, ca_name)
from smki.profiles.crl import REASON_CODES
from smki.policy.usage import UsageRules


class RevocationMethod(enum.StrEnum):
    """How a revocation reaches relying parties: the issuer's next CRL, the root's next ARL, or the
    repository status alone. A StrEnum: written in audit entries and JSON as its value."""

    CRL = "crl"
    ARL = "arl"
    STATUS = "status"


class Environment(enum.Enum):
    TEST = "test"
    PRODUCTION = "production"

    @classmethod
    def parse(cls, text: str) -> "Environment":
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            raise BadInputError(f"unknown environment {text!r} (test or production)") from None


class PolicyRefusal(RefusedError):
    """The policy forbids the operation: `rule` names the section, the message says why."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(f"policy {rule}: {message}")


@dataclass(frozen=True)
class Duration:
    years: int = 0
    days: int = 0
    seconds: int = 0

    def after(self, start: datetime) -> datetime:
        year = start.year + self.years
        day = min(start.day, calendar.monthrange(year, start.month)[1])
        return start.replace(year=year, day=day) + timedelta(days=self.days, seconds=self.seconds)


@dataclass(frozen=True)
class CaProfile:
    subject: tuple[tuple[str, str], ...]
    validity: Duration
    path_length: int

    @property
    def name(self) -> x509.Name:
        return ca_name(self.subject)


@dataclass(frozen=True)
class CertificatePolicy:
    path: Path | str  # the file, or `builtin:NAME` for a policy smki ships
    hierarchy: PolicyKind  # the policy file's identification.kind
    name: str
    version: str
    sha256: str
    document: dict  # the validated sections, as read (for show/diff and the rules below)

    @property
    def identity(self) -> dict:
        """What every issued record and audit entry names: name, version, SHA-256 of the file."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    # -- 1.2 identification ------------------------------------------------------------
    def policy_oid(self, environment: Environment) -> str:
        return self.document["identification"]["policy_oids"][environment.value]

    def hw_type_oid(self, environment: Environment, device_type: DeviceType) -> str:
        oids = self.document["identification"]["hw_type_oids"][environment.value]
        if device_type.name not in oids:
            raise PolicyRefusal("7.1 device types", f"device type {device_type.name} has no hwType OID in {environment.value}")
        return oids[device_type.name]

    def device_eligibility(self, environment: Environment, requester: RemotePartyRole,
                           device_type: DeviceType | None = None) -> "DeviceEligibility":
        """The hwType OIDs a device request may carry, each with the key usages it may hold (4.1, 7.1).

        With a device type, its own OID and usages. Without one (`None`: the request's hwType decides),
        every device type of the policy counts: where several types share one OID (as in the test PKI),
        a request with that OID may hold any usage one of them allows."""
        key = (environment, requester, device_type)
        known = self._eligibilities.get(key)
        if known is None:  # worked out once per (environment, requester, device type): every ad hoc request asks
            known = self._eligibilities[key] = self._device_eligibility(environment, requester, device_type)
        return known

    @functools.cached_property
    def _eligibilities(self) -> dict[tuple, "DeviceEligibility"]:
        return {}  # the policy document never changes once loaded; a refusal raises and is not kept

    def _device_eligibility(self, environment: Environment, requester: RemotePartyRole, device_type: DeviceType | None) -> "DeviceEligibility":
        self._require_hierarchy(PolicyKind.DEVICE)
        if requester.camel_name not in self.document["eligibility"]["requesters"]:
            raise PolicyRefusal("4.1 eligibility", f"a {requester.camel_name} may not request Device Certificates")
        profile = self.document["subscriber_certificates"]["device_types"]
        types = (device_type,) if device_type is not None else tuple(DeviceType[name] for name in profile if name in DeviceType.__members__)
        usages: dict[str, frozenset[KeyUsage]] = {}
        for each in types:
            allowed = frozenset(self.device_key_usages(requester, each))
            oid = self.hw_type_oid(environment, each) if device_type is not None else self._hw_type_oids(environment).get(each.name)
            if oid is not None:
                usages[oid] = usages.get(oid, frozenset()) | allowed
        return DeviceEligibility(device_type, tuple(sorted(usages.items())))

    def _hw_type_oids(self, environment: Environment) -> dict[str, str]:
        return self.document["identification"]["hw_type_oids"][environment.value]

    # -- 1.3.1 / 3.1 the CA hierarchy ---------------------------------------------------
    def ca(self, level: str) -> CaProfile:
        section = self.document["ca_hierarchy"][level]
        return CaProfile(tuple(tuple(pair) for pair in section["subject"]), Duration(**section["validity"]), section["path_length"])

    def root_certificate_params(self, environment: Environment, not_before: datetime, contingency_extension=None,
                                not_after: datetime | None = None) -> RootCertificateParams:
        root = self.ca("root")
        return RootCertificateParams(root.name, (self.policy_oid(environment),), self._ca_validity(root, not_before, not_after, "root"),
                                     root.path_length, contingency_extension)

    def issuing_ca_certificate_params(self, environment: Environment, not_before: datetime,
                                      not_after: datetime | None = None) -> IssuingCaCertificateParams:
        issuing = self.ca("issuing")
        return IssuingCaCertificateParams(issuing.name, (self.policy_oid(environment),),
                                          self._ca_validity(issuing, not_before, not_after, "issuing"), issuing.path_length)

    @staticmethod
    def _ca_validity(profile: CaProfile, not_before: datetime, not_after: datetime | None, level: str) -> Validity:
        """The policy's full validity, or a shorter one asked for; never longer (6.3.2)."""
        longest = profile.validity.after(not_before)
        if not_after is not None and not_after > longest:
            raise PolicyRefusal("6.3.2 validity", f"a {level} certificate from {not_before:%Y-%m-%d} may last until "
                                f"{longest:%Y-%m-%dT%H:%M:%SZ} at most, not {not_after:%Y-%m-%dT%H:%M:%SZ}")
        return Validity(not_before, not_after or longest)

    # -- 7.1 subscriber profiles and 4.1 eligibility --------------------------------------
    def organisation_certificate_params(self, environment: Environment, *, requester: RemotePartyRole, role: RemotePartyRole,
                                        entity_id: EUI64, key_usage: KeyUsage, common_name: str | None,
                                        not_before: datetime) -> OrganisationCertificateParams:
        self._require_hierarchy(PolicyKind.ORGANISATION)
        self.check_organisation_issuance(requester, role, key_usage, common_name)
        validity = Duration(**self.document["subscriber_certificates"]["validity"])
        return OrganisationCertificateParams(role, entity_id, key_usage, self.policy_oid(environment),
                                             Validity(not_before, validity.after(not_before)), common_name)

    @property
    def organisation_roles(self) -> tuple[RemotePartyRole, ...]:
        """The roles the 7.1 profile lets hold Organisation Certificates."""
        self._require_hierarchy(PolicyKind.ORGANISATION)
        return tuple(RemotePartyRole.parse(name) for name in self.document["subscriber_certificates"]["roles"])

    def check_organisation_issuance(self, requester: RemotePartyRole, role: RemotePartyRole, key_usage: KeyUsage,
                                    common_name: str | None) -> None:
        self._require_hierarchy(PolicyKind.ORGANISATION)
        profile = self.document["subscriber_certificates"]
        allowed = profile["roles"].get(role.camel_name)
        if allowed is None:
            raise PolicyRefusal("7.1 roles", f"role {role.camel_name} may not hold Organisation Certificates")
        if key_usage.value not in allowed:
            raise PolicyRefusal("7.1 roles", f"role {role.camel_name} may not hold a {key_usage.value} certificate")
        if profile["common_name"] == "required" and not common_name:
            raise PolicyRefusal("7.1 common_name", "a common name (CN) is required")
        if profile["common_name"] == "forbidden" and common_name:
            raise PolicyRefusal("7.1 common_name", "a common name (CN) is not allowed")
        may_request = self.document["eligibility"]["requesters"].get(requester.camel_name, [])
        if role.camel_name not in may_request:
            raise PolicyRefusal("4.1 eligibility", f"a {requester.camel_name} may not request certificates for role {role.camel_name}")

    def device_certificate_params(self, environment: Environment, *, requester: RemotePartyRole, device_id: EUI64,
                                  device_type: DeviceType | None, key_usage: KeyUsage, not_before: datetime,
                                  existing_certificates: int, single_request: bool, hw_type_oid: str | None = None) -> DeviceCertificateParams:
        """The profile parameters of one Device Certificate. `hw_type_oid`: the request's hwType, which must be
        the device type's (7.1); with no device type (None) it decides, and is required."""
        eligibility = self.device_eligibility(environment, requester, device_type)
        hw_type = hw_type_oid if hw_type_oid is not None else eligibility.only_hw_type()
        eligibility.check(hw_type, key_usage)
        self._check_device_caps(existing_certificates, single_request)
        return DeviceCertificateParams(device_id, hw_type, key_usage, self.policy_oid(environment), Validity(not_before, DEVICE_NOT_AFTER))

    def check_device_issuance(self, requester: RemotePartyRole, device_type: DeviceType, key_usage: KeyUsage,
                              existing_certificates: int, single_request: bool) -> None:
        if key_usage not in self.device_key_usages(requester, device_type):
            raise PolicyRefusal("7.1 device types", f"a {device_type.name} may not hold a {key_usage.value} certificate")
        self._check_device_caps(existing_certificates, single_request)

    def _check_device_caps(self, existing_certificates: int, single_request: bool) -> None:
        eligibility = self.document["eligibility"]
        if existing_certificates >= eligibility["per_device_cap"]:
            raise PolicyRefusal("4.2 per_device_cap", f"the device already has {existing_certificates} certificates (cap {eligibility['per_device_cap']})")
        if single_request and eligibility["single_request_requires_existing"] and existing_certificates == 0:
            raise PolicyRefusal("4.2 single_request_requires_existing", "a single device request replaces a certificate: the device has none")

    def device_key_usages(self, requester: RemotePartyRole, device_type: DeviceType) -> tuple[KeyUsage, ...]:
        """The key usages this device type may hold, once the requester is found eligible (4.1, 7.1)."""
        self._require_hierarchy(PolicyKind.DEVICE)
        allowed = self.document["subscriber_certificates"]["device_types"].get(device_type.name)
        if allowed is None:
            raise PolicyRefusal("7.1 device types", f"device type {device_type.name} may not hold Device Certificates")
        if requester.camel_name not in self.document["eligibility"]["requesters"]:
            raise PolicyRefusal("4.1 eligibility", f"a {requester.camel_name} may not request Device Certificates")
        return tuple(KeyUsage.parse(usage) for usage in allowed)

    @property
    def per_device_cap(self) -> int:
        return self.document["eligibility"]["per_device_cap"]

    @property
    def batch_limit(self) -> int:
        self._require_hierarchy(PolicyKind.DEVICE)
        return self.document["eligibility"]["batch_limit"]

    def check_batch_size(self, entries: int) -> None:
        self._require_hierarchy(PolicyKind.DEVICE)
        limit = self.document["eligibility"]["batch_limit"]
        if entries > limit:
            raise PolicyRefusal("4.2 batch_limit", f"{entries} requests, more than the batch limit of {limit}")

    # -- SEC Appendix N section 3: usage rules ----------------------------------------------
    @functools.cached_property
    def usage_rules(self) -> UsageRules:
        """The policy's usage rules (the SEC's where the policy names none)."""
        return UsageRules.from_section(self.document.get("usage_rules"))

    # -- 4.9 revocation -------------------------------------------------------------------
    def check_revocation(self, certificate_type: CertificateType | str, reason: str) -> RevocationMethod:
        """The revocation method for this certificate type and reason, or a refusal."""
        revocation = self.document["revocation"]
        if certificate_type in (CertificateType.ISSUING_CA, CertificateType.ROOT):
            method = RevocationMethod.ARL
        elif certificate_type == self.hierarchy:
            method = RevocationMethod(revocation["method"])
        else:
            raise PolicyRefusal("4.9 revocation", f"this {self.hierarchy} policy does not govern {certificate_type} certificates")
        if reason not in revocation["reasons"] and not (method is RevocationMethod.ARL and reason in REASON_CODES):
            raise PolicyRefusal("4.9 reasons", f"reason {reason!r} is not allowed (allowed: {', '.join(revocation['reasons'])})")
        return method

    @property
    def revoke_on_rejection(self) -> bool:
        """4.4.1: a certificate its subscriber rejects at acceptance is revoked at once."""
        return bool(self.document["revocation"]["revoke_on_rejection"])

    def next_update(self, list_type: str, this_update: datetime) -> datetime:
        """`list_type`: a smki.operations.lists.ListType (a str: this floor is below operations/)."""
        section = self.document["revocation"].get(list_type)
        if section is None:
            raise PolicyRefusal("4.9 revocation", f"this {self.hierarchy} policy issues no {list_type.upper()}")
        return this_update + timedelta(hours=section["next_update_hours"])

    # -- 6.1 / 6.2 key management --------------------------------------------------------
    def custody(self, level: str) -> tuple[int, int]:
        section = self.document["key_management"]["custody"][level]
        return section["threshold"], section["custodians"]

    @property
    def root_cross_certify(self) -> bool:
        """At a root re-key, does the old root certify the new root's key (6.1.7)?"""
        return bool(self.document["key_management"].get("root_rekey", {}).get("cross_certify", False))

    def required_key_attributes(self) -> dict[str, bool]:
        return dict(self.document["key_management"]["key_attributes"])

    def audit_events(self) -> list[str]:
        return list(self.document["audit"]["events"])

    def _require_hierarchy(self, hierarchy: PolicyKind) -> None:
        if self.hierarchy is not hierarchy:
            raise PolicyRefusal("1.2 identification", f"{self.path} is the {self.hierarchy} policy, not the {hierarchy} policy")


@dataclass(frozen=True)
class DeviceEligibility:
    """Which hwType OIDs a device request may carry, and the key usages each may hold (policy 4.1, 7.1)."""

    device_type: DeviceType | None  # None: the request's hwType decides
    usages: tuple[tuple[str, frozenset[KeyUsage]], ...]  # (hwType OID, key usages), sorted by OID

    @property
    def hw_types(self) -> tuple[str, ...]:
        return tuple(oid for oid, _ in self.usages)

    @property
    def all_usages(self) -> frozenset[KeyUsage]:
        return frozenset().union(*(usages for _, usages in self.usages))

    def only_hw_type(self) -> str:
        """The one hwType OID a named device type has (a caller with no request's hwType to give)."""
        if self.device_type is None or len(self.usages) != 1:
            raise PolicyRefusal("7.1 device types", "no device type given: the request's hwType is needed")
        return self.usages[0][0]

    def refusal(self, hw_type_oid: str, key_usage: KeyUsage | str) -> str | None:
        """Why a request with this hwType and key usage is ineligible, or None when it is eligible."""
        usage = KeyUsage.parse(key_usage) if isinstance(key_usage, str) else key_usage
        allowed = dict(self.usages).get(hw_type_oid)
        what = self.device_type.name if self.device_type is not None else "device"
        if allowed is None:
            if self.device_type is not None:
                return f"the request's hwType {hw_type_oid} is not the {what} hwType {self.usages[0][0]}"
            return f"the request's hwType {hw_type_oid} is no device type's hwType in this policy"
        if usage not in allowed:
            return f"a {what} with hwType {hw_type_oid} may not hold a {usage.value} certificate"
        return None

    def check(self, hw_type_oid: str, key_usage: KeyUsage) -> None:
        reason = self.refusal(hw_type_oid, key_usage)
        if reason is not None:
            raise PolicyRefusal("7.1 device types", reason)


def _cross_field_rules(path: Path | str, document: dict, lines: dict) -> None:
    """Rules a schema cannot state: thresholds within custodians, a leaf inside its issuer."""
    def fail(where: tuple, message: str) -> None:
        raise PolicyError(f"{path}:{line_of(lines, where)}: {_field(where)}: {message}")

    for level in ("root", "issuing"):
        custody = document["key_management"]["custody"][level]
        if custody["threshold"] > custody["custodians"]:
            fail(("key_management", "custody", level, "threshold"), f"threshold {custody['threshold']} is larger than the {custody['custodians']} custodians")
    start = datetime(2026, 1, 1)  # validity nesting is checked on a reference start; durations are start-independent
    root = Duration(**document["ca_hierarchy"]["root"]["validity"]).after(start)
    issuing = Duration(**document["ca_hierarchy"]["issuing"]["validity"]).after(start)
    if issuing > root:
        fail(("ca_hierarchy", "issuing", "validity"), "the Issuing CA's validity is longer than its root's")
    if document["ca_hierarchy"]["issuing"]["path_length"] >= document["ca_hierarchy"]["root"]["path_length"]:
        fail(("ca_hierarchy", "issuing", "path_length"), "must be smaller than the root's path_length")
    subscriber = document["subscriber_certificates"]
    if "validity" in subscriber and Duration(**subscriber["validity"]).after(start) > issuing:
        fail(("subscriber_certificates", "validity"), "a leaf's validity is longer than its issuer's")
    try:
        UsageRules.from_section(document.get("usage_rules"))
    except BadInputError as exc:
        fail(("usage_rules", "timezone"), str(exc).removeprefix("usage_rules.timezone: "))
    if document["identification"]["policy_oids"]["test"] == document["identification"]["policy_oids"]["production"]:
        fail(("identification", "policy_oids", "production"), "the production OID must differ from the test OID")
    for pair_path, pair in (((("ca_hierarchy", level, "subject")), document["ca_hierarchy"][level]["subject"]) for level in ("root", "issuing")):
        try:
            ca_name([tuple(item) for item in pair])
        except BadInputError as exc:
            fail(pair_path, str(exc))


def load_policy(path: Path | str) -> CertificatePolicy:
    """Read, validate (schema and cross-field rules) and type a policy file, or the shipped policy
    `builtin:organisation` / `builtin:device` names (its SHA-256 is of the shipped bytes, as for a file)."""
    path = policy_reference(path)
    document, lines, raw = read_policy_document(path)
    _cross_field_rules(path, document, lines)
    identification = document["identification"]
    return CertificatePolicy(path, PolicyKind(identification["kind"]), identification["name"], identification["version"], sha256_of(raw), document)
