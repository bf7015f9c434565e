"""Helpers for the coding-agent tests: the captured CLI requests, replaying them as the CLIs
send them, SSE parsing and the gateway's ``request_completed`` log line."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tollway.testing import GatewayProcess

DATA = Path(__file__).parent / "data"

#: Every capture in ``data/`` (see its README).
FIXTURES = sorted(p.name for p in DATA.glob("*.json"))

#: Headers the HTTP client sets itself.
_TRANSPORT = frozenset({"host", "content-length"})
_KV = re.compile(r"(\w+)=(\S+)")


def load(name: str) -> list[dict[str, Any]]:
    """The requests of one capture, in the order the CLI sent them."""
    return list(json.loads((DATA / name).read_text()))


def posts() -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file, index, request) for every ``POST`` of every capture."""
    for name in FIXTURES:
        for i, request in enumerate(load(name)):
            if request["method"] == "POST":
                yield name, i, request


def client_headers(request: dict[str, Any], key: str, *, add_key: bool = False) -> list[Any]:
    """The captured headers, in order, with the redacted secrets replaced: the key goes where
    the CLI put its key (``x-api-key`` or ``Authorization: Bearer``); ``add_key`` adds
    ``Authorization`` when the capture had none (Codex's built-in provider sends one only when
    ``CODEX_API_KEY`` is set)."""
    out: list[tuple[str, str]] = []
    has_key = False
    for name, value in request["headers"]:
        low = name.lower()
        if low in _TRANSPORT:
            continue
        if value == "<redacted>":
            if low == "authorization":
                value, has_key = f"Bearer {key}", True
            elif low == "x-api-key":
                value, has_key = key, True
            elif low == "sec-websocket-key":
                value = base64.b64encode(os.urandom(16)).decode()
            else:
                raise AssertionError(f"unexpected redacted header {name}")
        out.append((name, value))
    if add_key and not has_key:
        out.append(("authorization", f"Bearer {key}"))
    return out


def body_bytes(request: dict[str, Any]) -> bytes:
    """The request body as the tests send it (the capture's JSON, serialised compactly)."""
    return json.dumps(request["body"], separators=(",", ":")).encode()


def url_of(base: str, request: dict[str, Any]) -> str:
    query = "&".join(f"{k}={v}" for k, v in request["query"].items())
    return f"{base}{request['path']}" + (f"?{query}" if query else "")


def send(
    base: str, request: dict[str, Any], key: str, *, add_key: bool = False
) -> tuple[httpx.Response, bytes]:
    """Send one captured request to ``base`` as the CLI did; return the response and every byte
    of its body."""
    headers = client_headers(request, key, add_key=add_key)
    content = body_bytes(request) if request["body"] is not None else None
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            request["method"], url_of(base, request), headers=headers, content=content
        ) as response,
    ):
        raw = b"".join(response.iter_bytes())
    return response, raw


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name or None, parsed data) per SSE event."""
    events: list[tuple[str | None, Any]] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        events.append((name, json.loads("\n".join(data)) if data else None))
    return events


def request_completed(gw: GatewayProcess, request_id: str, timeout: float = 10) -> dict[str, str]:
    """The ``k=v`` fields of tollway-telemetry's ``request_completed`` line for ``request_id``
    (written in ``account``, after the response: polled)."""
    deadline = time.monotonic() + timeout
    while True:
        for record in gw.log_records():
            msg = str(record.get("msg", ""))
            if record.get("request_id") == request_id and msg.startswith("request_completed"):
                return dict(_KV.findall(msg))
        if time.monotonic() > deadline:
            raise AssertionError(f"no request_completed line for {request_id}:\n{gw.logs()}")
        time.sleep(0.05)
