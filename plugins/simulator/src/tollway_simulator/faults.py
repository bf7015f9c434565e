"""Fault specifications: ``--fault F`` and the ``x-simulator-fault: F`` request header."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "status", "timeout", "reset", "html", "midstream", "slow-first-byte", "malformed-sse"
]

DEFAULT_MIDSTREAM_EVENTS = 3
DEFAULT_SLOW_FIRST_BYTE_MS = 2000

FAULT_HELP = (
    "an HTTP status 400-599 (e.g. 500, 503, 429, 404, 400; the provider's native error body; "
    "429 adds retry-after: 1, 429:N retry-after: N), timeout (never answer), "
    "reset (abort the TCP connection), "
    "html (502 text/html page), midstream[:N] (N events, default 3, then drop the connection; "
    "non-stream: drop mid-body), slow-first-byte[:MS] (default 2000 ms before the headers), "
    "malformed-sse (an invalid event in the middle of the stream)"
)


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed fault. ``value`` is the status, the event count or the delay in ms."""

    kind: FaultKind
    value: int = 0
    #: For a 429: the ``retry-after`` seconds it sends.
    retry_after: int = 1

    def __str__(self) -> str:
        if self.kind == "status":
            if self.value == 429 and self.retry_after != 1:
                return f"429:{self.retry_after}"
            return str(self.value)
        if self.kind in ("midstream", "slow-first-byte"):
            return f"{self.kind}:{self.value}"
        return self.kind


@functools.lru_cache(maxsize=256)
def parse_fault(spec: str) -> Fault:
    """Parse a fault spec (see ``FAULT_HELP``); raise ``ValueError`` naming the accepted forms."""
    text = spec.strip().lower()
    name, sep, arg = text.partition(":")
    try:
        if text.isdigit():
            status = int(text)
            if 400 <= status <= 599:
                return Fault("status", status)
        elif name == "429" and arg.isdigit():
            return Fault("status", 429, retry_after=int(arg))
        elif name in ("timeout", "reset", "html", "malformed-sse") and not sep:
            return Fault(name)  # type: ignore[arg-type]
        elif name == "midstream":
            n = int(arg) if sep else DEFAULT_MIDSTREAM_EVENTS
            if n >= 0:
                return Fault("midstream", n)
        elif name == "slow-first-byte":
            ms = int(arg) if sep else DEFAULT_SLOW_FIRST_BYTE_MS
            if ms >= 0:
                return Fault("slow-first-byte", ms)
    except ValueError:
        pass
    raise ValueError(f"unknown fault {spec!r}; expected {FAULT_HELP}")


#: A random mix of faults: each entry's fault hits that share of the requests.
FaultMix = tuple[tuple[Fault, float], ...]

FAULT_MIX_HELP = (
    "comma-separated F=SHARE entries, each fault F hitting that share (0-1) of the requests at "
    "random, the rest answered normally; the shares add up to at most 1 "
    "(e.g. 500=0.3,timeout=0.1)"
)


def parse_fault_mix(spec: str) -> FaultMix:
    """Parse a fault mix (see ``FAULT_MIX_HELP``); raise ``ValueError`` saying what to fix."""
    entries: list[tuple[Fault, float]] = []
    for part in spec.split(","):
        name, sep, share_text = part.strip().rpartition("=")
        if not sep or not name:
            raise ValueError(
                f"fault mix entry {part.strip()!r}: expected F=SHARE; {FAULT_MIX_HELP}"
            )
        try:
            share = float(share_text)
        except ValueError:
            share = -1.0
        if not 0 <= share <= 1:
            raise ValueError(
                f"fault mix entry {part.strip()!r}: SHARE must be a number from 0 to 1"
            )
        entries.append((parse_fault(name), share))
    if sum(share for _, share in entries) > 1 + 1e-9:
        raise ValueError(f"fault mix {spec!r}: the shares add up to more than 1")
    return tuple(entries)


def pick_fault(mix: FaultMix, draw: float) -> Fault | None:
    """The fault of ``mix`` for a request whose uniform random number is ``draw`` (0-1)."""
    for fault, share in mix:
        if draw < share:
            return fault
        draw -= share
    return None
