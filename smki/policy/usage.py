"""Usage rules (SEC Appendix N section 3, the SMKI Code of Connection) as policy parameters.

The policy's optional `usage_rules` section; an absent rule takes the SEC's value. `UsageRules`
is the typed, frozen value; it answers "may this submission go ahead now?" given counts the
authority reads from its store, and refuses with a `PolicyRefusal` whose rule is a `UsageRule`
value (`usage_rules.NAME`), which a front end turns into WORKFLOW_ERROR with the rule's `WF:` code.

Who submits is a `Submitter`: the subscriber's register name and the channel it came through.
The CLI passes none: an operator's own issuance is not rate-limited.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from smki.errors import BadInputError, RefusedError

# The SEC's values (Appendix N section 3): what a policy without `usage_rules` (or without one rule of it) gets.
SEC_DEFAULTS = {
    "timezone": "Europe/London",
    "batch_window": {"start": "20:00", "end": "08:00"},
    "adhoc_interval": [{"start": "07:00", "end": "20:00", "seconds": 0.8}, {"start": "20:00", "end": "07:00", "seconds": 4}],
    "portal_adhoc_daily_cap": 150,
    "batch_daily_cap": 50000,
    "batches_at_a_time": 1,
    "auto_approved_requesters": [],
    "result_retention_days": 30,
}
DAY = timedelta(hours=24)
ALL_REQUESTERS = "*"  # in auto_approved_requesters: every subscriber's batches (a lab)


class UsageRule(enum.StrEnum):
    """A usage rule, as a refusal names it (`PolicyRefusal.rule`), with its WORKFLOW_ERROR code."""

    ADHOC_INTERVAL = "usage_rules.adhoc_interval"
    PORTAL_ADHOC_DAILY_CAP = "usage_rules.portal_adhoc_daily_cap"
    BATCHES_AT_A_TIME = "usage_rules.batches_at_a_time"
    BATCH_DAILY_CAP = "usage_rules.batch_daily_cap"

    @property
    def code(self) -> str:
        return _CODES[self]

    @classmethod
    def of(cls, refusal: RefusedError) -> "UsageRule | None":
        """The usage rule a refusal names, or None for any other refusal."""
        try:
            return cls(getattr(refusal, "rule", None))
        except ValueError:
            return None


_CODES = {UsageRule.ADHOC_INTERVAL: "WF:AH1", UsageRule.PORTAL_ADHOC_DAILY_CAP: "WF:AH2",
          UsageRule.BATCHES_AT_A_TIME: "WF:BB4", UsageRule.BATCH_DAILY_CAP: "WF:BB3"}  # WF:BB2 is the "not accepted" of Appendix D


class Channel(enum.StrEnum):
    """How a subscriber's request arrived: the ad hoc / batched web services, or the portal."""

    WEB_SERVICE = "web-service"
    PORTAL = "portal"


@dataclass(frozen=True)
class Submitter:
    """Who submits a request online: an Authorised Subscriber by its register name (and EUI-64), and the channel."""

    name: str
    channel: Channel
    eui64: str | None = None  # 16 hex digits, as the register keeps it

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 128 or not self.name.isprintable():
            raise BadInputError("a submitter's name is 1-128 printable characters")
        object.__setattr__(self, "channel", Channel(self.channel))


@dataclass(frozen=True)
class DailyWindow:
    """A time-of-day span on the rules' clock, from `start` up to `end`; it crosses midnight when end <= start."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    @classmethod
    def parse(cls, section: dict) -> "DailyWindow":
        return cls(time.fromisoformat(section["start"]), time.fromisoformat(section["end"]))


@dataclass(frozen=True)
class UsageRules:
    timezone: str
    batch_window: DailyWindow | None  # None: batches are processed at any hour
    adhoc_interval: tuple[tuple[DailyWindow, float], ...]  # (when, seconds between one subscriber's ad hoc CSRs)
    portal_adhoc_daily_cap: int
    batch_daily_cap: int
    batches_at_a_time: int
    auto_approved_requesters: frozenset[str]
    result_retention: timedelta

    @classmethod
    def from_section(cls, section: dict | None) -> "UsageRules":
        """The typed rules of a (schema-checked) `usage_rules` section; absent rules are the SEC's."""
        rules = {**SEC_DEFAULTS, **(section or {})}
        try:
            ZoneInfo(rules["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise BadInputError(f"usage_rules.timezone: unknown time zone {rules['timezone']!r}") from None
        window = None if rules["batch_window"] == "always" else DailyWindow.parse(rules["batch_window"])
        return cls(rules["timezone"], window,
                   tuple((DailyWindow.parse(span), float(span["seconds"])) for span in rules["adhoc_interval"]),
                   rules["portal_adhoc_daily_cap"], rules["batch_daily_cap"], rules["batches_at_a_time"],
                   frozenset(rules["auto_approved_requesters"]), timedelta(days=rules["result_retention_days"]))

    def _local(self, now: datetime) -> time:
        return now.astimezone(ZoneInfo(self.timezone)).time()

    # -- batches ---------------------------------------------------------------------------------
    def in_batch_window(self, now: datetime) -> bool:
        """May a batch be processed at `now` (outside the window it is PAUSED)?"""
        return self.batch_window is None or self.batch_window.contains(self._local(now))

    def auto_approves(self, submitter: Submitter | None) -> bool:
        """Does a batch of this submitter skip the Registration Authority's approval?"""
        if submitter is None:
            return False
        listed = self.auto_approved_requesters
        return ALL_REQUESTERS in listed or submitter.name in listed or (submitter.eui64 is not None and submitter.eui64 in listed)

    def check_batch_submission(self, submitter: Submitter, entries: int, open_batches: int, submitted_last_24h: int) -> None:
        """A new batch of `entries` CSRs, with the submitter's batches still unanswered and its CSRs of the last 24 h."""
        if open_batches >= self.batches_at_a_time:
            raise _refusal(UsageRule.BATCHES_AT_A_TIME, f"{submitter.name} has {open_batches} batch(es) not yet answered "
                           f"(at most {self.batches_at_a_time} at a time)")
        if submitted_last_24h + entries > self.batch_daily_cap:
            raise _refusal(UsageRule.BATCH_DAILY_CAP, f"{submitter.name} submitted {submitted_last_24h} batched CSRs in the last 24 h; "
                           f"{entries} more would pass the cap of {self.batch_daily_cap} (more needs 7 days' notice)")

    def is_expired(self, finished_at: datetime, now: datetime) -> bool:
        """Are a batch's results, answered at `finished_at`, past retention at `now`?"""
        return finished_at + self.result_retention <= now

    # -- ad hoc ----------------------------------------------------------------------------------
    def adhoc_interval_at(self, now: datetime) -> float:
        """Seconds a subscriber must leave between two ad hoc CSRs through the web service, at `now` (0 when no span covers it)."""
        local = self._local(now)
        return next((seconds for window, seconds in self.adhoc_interval if window.contains(local)), 0.0)

    def counts_adhoc(self, channel: Channel) -> bool:
        """Does any rule count this channel's ad hoc requests? (The web service's not, when its interval is 0 all day.)"""
        return channel is Channel.PORTAL or any(seconds > 0 for _, seconds in self.adhoc_interval)

    def check_adhoc(self, submitter: Submitter, now: datetime, last_at: datetime | None, last_24h: int) -> None:
        """An ad hoc CSR at `now`, after the submitter's previous one at `last_at` and its `last_24h` count (through its channel)."""
        if submitter.channel is Channel.WEB_SERVICE:
            interval = self.adhoc_interval_at(now)
            if last_at is not None and (now - last_at).total_seconds() < interval:
                raise _refusal(UsageRule.ADHOC_INTERVAL, f"{submitter.name} may submit one ad hoc CSR every {interval:g} s now; "
                               f"the last was {(now - last_at).total_seconds():.3f} s ago")
        elif last_24h >= self.portal_adhoc_daily_cap:
            raise _refusal(UsageRule.PORTAL_ADHOC_DAILY_CAP, f"{submitter.name} submitted {last_24h} ad hoc CSRs through the portal "
                           f"in the last 24 h (cap {self.portal_adhoc_daily_cap})")


def _refusal(rule: UsageRule, message: str) -> RefusedError:
    from smki.policy.model import PolicyRefusal  # the model imports this module

    return PolicyRefusal(rule.value, message)
