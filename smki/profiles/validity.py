"""Certificate validity periods. Values come from the policy; this checks their shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from smki.errors import BadInputError

# A device certificate has no well-defined expiry (RFC 5280 4.1.2.5): GeneralizedTime 99991231235959Z.
DEVICE_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Validity:
    not_before_utc: datetime
    not_after_utc: datetime

    def __post_init__(self) -> None:
        for name in ("not_before_utc", "not_after_utc"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset().total_seconds() != 0:
                raise BadInputError(f"validity {name} must be a UTC time, got {value!r}")
            if value.microsecond:
                raise BadInputError(f"validity {name} must be whole seconds, got {value.isoformat()}")
        if self.not_after_utc <= self.not_before_utc:
            raise BadInputError(
                f"validity ends ({self.not_after_utc:%Y-%m-%dT%H:%M:%SZ}) before it starts ({self.not_before_utc:%Y-%m-%dT%H:%M:%SZ})"
            )

    def contains(self, other: "Validity") -> bool:
        return self.not_before_utc <= other.not_before_utc and other.not_after_utc <= self.not_after_utc
