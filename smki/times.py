"""Times as operators and files give them, read in one place: always aware, always UTC."""

from __future__ import annotations

from datetime import datetime, timezone

from smki.errors import BadInputError

# What a message repeats of a value it refuses: enough to recognise it, never a screenful.
_SHOWN = 40


def parse_utc(text: str, where: str, *, unix_seconds: bool = False) -> datetime:
    """An ISO 8601 date or date-time (taken as UTC when it has no offset; `Z` allowed), or, with
    `unix_seconds`, a count of seconds since 1970. Refused (exit 3) naming `where`."""
    if unix_seconds and text.isdigit():
        try:
            return datetime.fromtimestamp(int(text), timezone.utc)
        except (OverflowError, OSError, ValueError):  # beyond year 9999, or beyond the C time_t
            raise BadInputError(f"{where}: {text[:_SHOWN]!r} unix seconds is out of range (years 1970 to 9999)") from None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        expected = "neither ISO 8601 nor unix seconds" if unix_seconds else "not an ISO 8601 date or date-time"
        raise BadInputError(f"{where}: {text[:_SHOWN]!r} is {expected}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def utc_now() -> datetime:
    """Now, in whole seconds (certificates and CRLs carry whole seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def precise_now() -> datetime:
    """Now, to the microsecond (rates, intervals and leases: whole seconds would blur them by up to a second)."""
    return datetime.now(timezone.utc)


def utc_midnight(moment: datetime) -> datetime:
    """The start of the UTC day of `moment` (test PKI validities start at 00:00:00Z)."""
    return moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def moment(value: datetime | str, option: str) -> datetime:
    """A moment a caller gives: a datetime (UTC when naive) or ISO 8601 text (refused naming `option`,
    as the CLI's)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise BadInputError(f"{option}: give a datetime or ISO 8601 text, not {type(value).__name__}")
    return parse_utc(value, option)


def start_of_validity(value: datetime | str | None, option: str = "--not-before") -> datetime:
    """A certificate's notBefore as a caller gives it (see `moment`), or, for nothing (None or empty text,
    as an unset shell variable gives it), today 00:00:00Z."""
    if value is None or value == "":
        return utc_midnight(datetime.now(timezone.utc))
    return moment(value, option)
