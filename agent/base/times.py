"""Timestamps in the forms Qonto and our files use, written and read in one place.

Wall-clock times (`time.time()`) become RFC 3339 UTC strings with a `Z`; waits inside a process
use `time.monotonic()` and never pass through here.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


def iso(ts: float | None) -> str | None:
    """A wall-clock time as RFC 3339 UTC to the second, `2026-03-14T10:00:00Z` (None stays None)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def rfc3339_ms(moment: datetime) -> str:
    """`2026-03-14T10:00:00.123Z`: UTC with milliseconds, the form Qonto writes timestamps in."""
    moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def rfc3339(value: datetime | str) -> str:
    """A query value: a datetime as RFC 3339 UTC (naive means UTC; microseconds kept when there are
    some), a string unchanged."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z")


def parse(text: str) -> datetime | None:
    """An ISO 8601 / RFC 3339 time with its zone (`Z` accepted); None when unreadable or zoneless."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
