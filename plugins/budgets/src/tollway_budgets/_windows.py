"""Budget windows: UTC calendar periods, in integer microseconds since the Unix epoch.

``hour``, ``day``, ``week`` (ISO: Monday 00:00 to the next Monday), ``month`` (the 1st 00:00
to the next 1st) and ``total`` (never resets). Integer arithmetic only — no floats, no local
time — so every replica and the control plane agree on which window a request counts in.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

__all__ = [
    "DAY_US",
    "HOUR_US",
    "US",
    "WINDOWS",
    "format_us",
    "parse_us",
    "window_bounds",
]

US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
WINDOWS = ("hour", "day", "week", "month", "total")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ONE_US = timedelta(microseconds=1)


def window_bounds(window: str, at_us: int) -> tuple[int, int | None]:
    """``[start, end)`` of the ``window`` containing ``at_us`` (``end`` None for ``total``)."""
    if window == "hour":
        start = at_us - at_us % HOUR_US
        return start, start + HOUR_US
    if window == "day":
        start = at_us - at_us % DAY_US
        return start, start + DAY_US
    if window == "week":
        days = at_us // DAY_US
        # 1970-01-01 was a Thursday: (days + 3) % 7 is 0 on Mondays.
        start = (days - (days + 3) % 7) * DAY_US
        return start, start + WEEK_US
    if window == "month":
        day = date.fromordinal(_EPOCH_ORDINAL + at_us // DAY_US)
        first = date(day.year, day.month, 1)
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return (
            (first.toordinal() - _EPOCH_ORDINAL) * DAY_US,
            (following.toordinal() - _EPOCH_ORDINAL) * DAY_US,
        )
    if window == "total":
        return 0, None
    raise ValueError(f"unknown budget window {window!r} (one of {', '.join(WINDOWS)})")


#: The last second :func:`format_us` formatted, and its text up to the fraction (requests
#: format their own time, mostly within the same second as the one before).
_LAST_SECOND: tuple[int, str] = (-1, "")


def format_us(at_us: int) -> str:
    """``2026-03-01T00:00:00.000000Z`` — the ledger's form (sorts and compares as text)."""
    global _LAST_SECOND
    second, fraction = divmod(at_us, US)
    last = _LAST_SECOND
    if last[0] != second:
        text = (_EPOCH + second * US * _ONE_US).strftime("%Y-%m-%dT%H:%M:%S.")
        last = _LAST_SECOND = (second, text)
    return f"{last[1]}{fraction:06d}Z"


def parse_us(text: str) -> int:
    """An ISO-8601 time (``Z``, an offset, or none = UTC) as microseconds since the epoch."""
    value = text.strip()
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _ONE_US
