"""SMKI identifiers: EUI-64, RemotePartyRole, DeviceType, KeyUsage, CertificateType, PolicyKind.

Small value types with no dependencies beyond the standard library. Each parser accepts
what operators and files actually contain and raises `BadInputError` naming the value.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from smki.errors import BadInputError

class CertificateType(enum.StrEnum):
    """The kinds of certificate in the SMKI, by the names records, audit entries and `--type` use.

    A StrEnum: it is stored and printed as its value, and compares equal to it.
    """

    ROOT = "root"
    ISSUING_CA = "issuing-ca"
    CROSS_CERTIFICATE = "cross-certificate"  # a root certified by another (root re-key), linted, never issued by an actor
    ORGANISATION = "organisation"
    DEVICE = "device"

    @classmethod
    def parse(cls, text: "str | CertificateType") -> "CertificateType":
        try:
            return cls(text)
        except ValueError:
            raise BadInputError(f"unknown certificate type {text!r} ({', '.join(t.value for t in cls)})") from None


class PolicyKind(enum.StrEnum):
    """The hierarchy a Certificate Policy governs (its `identification.kind`): the key of its
    adoption in the state (`adopted_policies.kind`) and in audit entries."""

    ORGANISATION = "organisation"
    DEVICE = "device"


class ListType(enum.StrEnum):
    """Which revocation list: an Issuing OCA's CRL, or a root's ARL (Authority Revocation List).
    A StrEnum: stored, printed and written in JSON as its value."""

    CRL = "crl"
    ARL = "arl"

    @classmethod
    def of_issuer(cls, certificate_type: CertificateType | str) -> "ListType":
        return cls.ARL if certificate_type == CertificateType.ROOT else cls.CRL


_EUI64_SEPARATORS = re.compile(r"[-: ]")
_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")


@dataclass(frozen=True, order=True)
class EUI64:
    """An 8-octet EUI-64: the identifier of every SMKI organisation and device."""

    octets: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.octets, bytes) or len(self.octets) != 8:
            raise BadInputError(f"EUI-64 must be 8 octets, got {self.octets!r}")

    @classmethod
    def parse(cls, text: str) -> "EUI64":
        """Parse 16 hex digits, optionally separated by hyphens, colons or spaces."""
        if not isinstance(text, str):
            raise BadInputError(f"EUI-64 must be text, got {type(text).__name__}")
        compact = _EUI64_SEPARATORS.sub("", text.strip())
        if len(compact) != 16:
            raise BadInputError(
                f"malformed EUI-64 {text!r}: expected 16 hex digits, got {len(compact)}"
            )
        if not _HEX16.fullmatch(compact):
            raise BadInputError(f"malformed EUI-64 {text!r}: not hexadecimal")
        return cls(bytes.fromhex(compact))

    @property
    def hex(self) -> str:
        """Canonical form: 16 uppercase hex digits, as in file names and the CLI."""
        return self.octets.hex().upper()

    @property
    def hyphenated(self) -> str:
        """The SMKI Repository web service form, e.g. 90-B3-D5-1F-30-01-00-00."""
        return "-".join(f"{b:02X}" for b in self.octets)

    def __str__(self) -> str:
        return self.hex


class RemotePartyRole(enum.IntEnum):
    """GBCS RemotePartyRole, written in a subject OU as two uppercase hex digits."""

    ROOT = 0x00
    RECOVERY = 0x01
    SUPPLIER = 0x02
    NETWORK_OPERATOR = 0x03
    ACCESS_CONTROL_BROKER = 0x04
    TRANSITIONAL_COS = 0x05
    WAN_PROVIDER = 0x06
    ISSUING_AUTHORITY = 0x07
    LOAD_CONTROLLER = 0x08
    OTHER = 0x7F
    # The XML-signing roles: Organisation Certificates that sign DUIS XML (DCC's own and the DSP's).
    XML_SIGN = 0x87
    DSP_XML_SIGN = 0x89

    @property
    def ou(self) -> str:
        """The subject OU value: two uppercase hex digits."""
        return f"{self.value:02X}"

    @property
    def camel_name(self) -> str:
        """The GBCS spelling, e.g. networkOperator."""
        head, *rest = self.name.lower().split("_")
        return head + "".join("CoS" if part == "cos" else part.title() for part in rest)

    @classmethod
    def parse(cls, text: str) -> "RemotePartyRole":
        """Accept a GBCS name (networkOperator), an enum name (NETWORK_OPERATOR) or an OU code (03)."""
        key = str(text).strip()
        for role in cls:
            if key in (role.camel_name, role.name, role.ou) or key.lower() == role.camel_name.lower():
                return role
        raise BadInputError(f"unknown RemotePartyRole {text!r}")

    @classmethod
    def from_ou(cls, ou: str) -> "RemotePartyRole":
        """Strict: exactly two uppercase hex digits naming a known role."""
        if not re.fullmatch(r"[0-9A-F]{2}", ou or ""):
            raise BadInputError(f"role OU {ou!r} is not two uppercase hex digits")
        try:
            return cls(int(ou, 16))
        except ValueError:
            raise BadInputError(f"role OU {ou!r} names no RemotePartyRole") from None


class DeviceType(enum.IntEnum):
    """GBCS device types. Never inferred from an EUI-64."""

    GSME = 0
    ESME = 1
    CHF = 2
    GPF = 3
    HCALCS = 4
    PPMID = 5
    TYPE2 = 6

    @classmethod
    def parse(cls, text: str) -> "DeviceType":
        key = str(text).strip().upper().replace(" ", "")
        if key in ("TYPE2", "TYPE_2"):
            return cls.TYPE2
        if key in cls.__members__:
            return cls[key]
        if key.isdigit() and int(key) in cls._value2member_map_:
            return cls(int(key))
        raise BadInputError(f"unknown device type {text!r}")


class KeyUsage(enum.Enum):
    """The one key usage an SMKI end-entity certificate carries."""

    DIGITAL_SIGNATURE = "DS"
    KEY_AGREEMENT = "KA"

    @classmethod
    def parse(cls, text: str) -> "KeyUsage":
        key = str(text).strip()
        for usage in cls:
            if key.upper() in (usage.value, usage.name) or key == usage.x509_name:
                return usage
        raise BadInputError(f"unknown key usage {text!r} (expected DS or KA)")

    @property
    def x509_name(self) -> str:
        """The name cryptography's KeyUsage uses for the bit."""
        return "digital_signature" if self is KeyUsage.DIGITAL_SIGNATURE else "key_agreement"
