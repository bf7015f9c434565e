"""Helpers shared by the simulator's test modules: start and stop a simulator subprocess, read
its stats, the request bodies and tools the tests send, and the recorded client requests."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx2

STARTUP_TIMEOUT_S = 20


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        raise AssertionError("simulator printed no listening line") from None
    prefix = "tollway-simulator listening on "
    if not line.startswith(prefix):
        _stop(proc)
        raise AssertionError(f"unexpected first line {line!r}")
    return proc, line[len(prefix) :].strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def _stats(url: str) -> dict[str, int]:
    return httpx2.get(f"{url}/_sim/stats").json()


def _fault(value: str) -> dict[str, str]:
    return {"x-simulator-fault": value}


USER = [{"role": "user", "content": "Please say hello to the gateway"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "days", "metric", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}, "offset": {"type": "number"}},
            "required": ["zone", "offset"],
        },
    },
}
WEATHER_ARGS = {"city": "example", "days": 1, "metric": True, "unit": "c"}


DATA = Path(__file__).parent / "data"  # structure-only copies from ../../shared (see CLIENTS.md)


def _sse(raw: str) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, json.loads(data)))
    return out


def _send_recorded(url: str, item: dict[str, Any]) -> httpx2.Response:
    skip = {"host", "content-length", "connection", "accept-encoding"}
    headers = [(k, v) for k, v in item["headers"] if k.lower() not in skip]
    return httpx2.post(
        f"{url}{item['path']}", params=item["query"], json=item["body"], headers=headers, timeout=10
    )
