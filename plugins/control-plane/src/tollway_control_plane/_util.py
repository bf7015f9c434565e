"""Small helpers shared by the store, the HTTP layer and the CLI: ids, times, JSON."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from ulid import ULID

from tollway.keys import checksum

__all__ = [
    "UNSET",
    "Unset",
    "dumps",
    "format_time",
    "loads",
    "mint_secret",
    "new_id",
    "now",
    "parse_time",
    "random_ulid",
]


class Unset:
    """The type of :data:`UNSET`: "leave this field as it is" in an update."""

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET = Unset()


def random_ulid() -> str:
    """A ULID with 80 fresh random bits.

    Not ``str(ULID())``: python-ulid ≥ 3 is *monotonic* — a second ULID made in the same
    millisecond is the previous one plus 1, so an id made next to a secret would give the
    secret away (and two secrets minted in one millisecond would be neighbours).
    """
    ms = time.time_ns() // 1_000_000
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + secrets.token_bytes(10)))


def new_id(prefix: str) -> str:
    """A prefixed ULID: ``vk_01J9Z8X4T7Q2M5N8P3R6S9V2W4``."""
    return f"{prefix}_{random_ulid()}"


def mint_secret(env: str) -> str:
    """A new 40-char virtual key, in exactly ``tollway.keys.mint_key``'s format, but with
    independent randomness (see :func:`random_ulid`; ``mint_key`` uses ``ULID()``)."""
    if env not in ("live", "test"):
        raise ValueError(f"a key environment is 'live' or 'test', not {env!r}")
    body = f"lw_vk_{env}_{random_ulid()}"
    return body + checksum(body)


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(dt: datetime, *, micros: bool = True) -> str:
    """ISO-8601 UTC with a ``Z``: ``2026-01-31T12:00:00.000000Z`` (sorts as text), or without
    the fraction when ``micros`` is false (``expires_at``)."""
    dt = dt.astimezone(UTC)
    # Not strftime("%Y"): it does not pad years before 1000 to four digits, and a stored
    # "287-12-31T…" would then no longer parse.
    text = (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )
    return f"{text}.{dt.microsecond:06d}Z" if micros else f"{text}Z"


def parse_time(value: str) -> datetime:
    """Parse an ISO-8601 time (``2027-01-01``, ``2027-01-01T00:00:00Z``, with an offset…).

    A time without an offset is UTC. Raises ``ValueError`` with a readable message.
    """
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO-8601 time; write e.g. 2027-01-01 or 2027-01-01T00:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise ValueError(f"{value!r} is out of the range of times") from None


def dumps(value: Any) -> str:
    """Compact JSON text (keys sorted, so stored JSON is stable)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def loads(text: str | bytes | None) -> Any:
    """Parse stored JSON (``None`` stays ``None``)."""
    if text is None:
        return None
    return orjson.loads(text)
