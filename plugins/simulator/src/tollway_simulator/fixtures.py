"""The bundled SSE fixtures (``fixtures/<dir>/<name>.sse``), loaded once and split into events."""

from __future__ import annotations

import functools
from importlib import resources


def read_fixture(name: str) -> bytes:
    """The exact bytes of a bundled fixture, e.g. ``openai-chat/plain-text-stop.sse``."""
    fixtures = _all()
    if name not in fixtures:
        raise KeyError(name)
    return fixtures[name]


def fixture_names() -> list[str]:
    return sorted(_all())


def split_events(data: bytes) -> list[bytes]:
    """Split SSE bytes into events, each keeping its blank-line terminator.

    Joining the result gives back ``data`` followed by whatever terminator was missing at the end
    (some recorded files stop right after the last ``data:`` line, which an SSE parser would then
    never dispatch).
    """
    events: list[bytes] = []
    start = 0
    while True:
        end = data.find(b"\n\n", start)
        if end < 0:
            break
        events.append(data[start : end + 2])
        start = end + 2
    tail = data[start:]
    if tail:
        events.append(tail + (b"\n" if tail.endswith(b"\n") else b"\n\n"))
    return events


@functools.cache
def fixture_events(name: str) -> tuple[bytes, ...]:
    return tuple(split_events(read_fixture(name)))


@functools.cache
def _all() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    root = resources.files("tollway_simulator") / "fixtures"
    for directory in root.iterdir():
        if not directory.is_dir():
            continue
        for item in directory.iterdir():
            if item.name.endswith(".sse"):
                out[f"{directory.name}/{item.name}"] = item.read_bytes()
    return out
