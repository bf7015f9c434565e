"""The durable outbox against a signed fake of the control plane's ledger endpoint (a real
loopback HTTP server): spool, flush, acknowledge, outages, crash recovery (adoption)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tollway.signing import SignatureError, signed_headers, verify
from tollway.testing import free_port
from tollway_budgets._client import ControlPlaneClient
from tollway_budgets._outbox import Outbox
from tollway_budgets._windows import format_us

SECRET = b"test-internal-secret-0123456789ab"


class FakeLedger:
    """``POST /api/internal/gateway/ledger`` with signatures both ways; dedups by request id."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.batches: list[int] = []
        self.down = False
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/internal/gateway/ledger", self._ledger)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ledger(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.down:
            return web.Response(status=503, text="down")
        try:
            verify(SECRET, "POST", request.path, request.headers, body)
        except SignatureError:
            return web.Response(status=401, text="bad signature")
        entries = orjson.loads(body)["entries"]
        self.batches.append(len(entries))
        if any(e["request_id"].startswith("bad") for e in entries):
            data = orjson.dumps({"error": {"type": "bad_request", "message": "bad entry"}})
            headers = dict(signed_headers(SECRET, "POST", request.path, data))
            return web.Response(status=400, body=data, headers=headers)
        for e in entries:
            self.rows.setdefault(e["request_id"], e)
        data = orjson.dumps({"accepted": len(entries), "inserted": len(entries)})
        headers = dict(signed_headers(SECRET, "POST", request.path, data))
        return web.Response(body=data, headers=headers, content_type="application/json")


def entry(rid: str, cost: int = 10, **over: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "created_at": format_us(time.time_ns() // 1000),
        "organization_id": "org_1",
        "project_id": "proj_1",
        "cost_micro_usd": cost,
        **over,
    }


@asynccontextmanager
async def outbox(directory: Path, ledger: FakeLedger, **kw: Any) -> AsyncIterator[Outbox]:
    client = ControlPlaneClient(ledger.url, SECRET, "gw-test")
    await client.start()
    box = Outbox(directory, client, interval=0.05, batch_size=kw.pop("batch_size", 100), **kw)
    await asyncio.to_thread(box.open)
    try:
        yield box
    finally:
        await client.close()


def files(directory: Path, suffix: str = ".jsonl") -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == suffix)


async def until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    for _ in range(100_000):
        if predicate() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.02)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_spool_flush_ack_and_clean_shutdown(tmp_path: Path) -> None:
    async def body() -> None:
        ledger = FakeLedger()
        await ledger.start()
        try:
            async with outbox(tmp_path, ledger, batch_size=4) as box:
                for i in range(10):
                    box.record(entry(f"r{i}", 10 + i), time.time_ns() // 1000)
                box.record(entry("r0", 999), 0)  # a second record of one request: ignored
                # Spooled at once (before any flush): one line per entry.
                (segment,) = files(tmp_path)
                lines = segment.read_bytes().splitlines()
                assert [orjson.loads(x)["request_id"] for x in lines] == [
                    f"r{i}" for i in range(10)
                ]
                box.start()
                await until(lambda: not box.pending)
                assert sorted(ledger.rows) == sorted(f"r{i}" for i in range(10))
                assert ledger.batches == [4, 4, 2]
                acks = [orjson.loads(x) for x in segment.read_bytes().splitlines()[10:]]
                assert [len(a["ack"]) for a in acks] == [4, 4, 2]
                assert box.pending_sum(lambda e, t: True) == 0
                await box.close(drain_seconds=1)
            # Everything acknowledged: no segment, no lock file left.
            assert listing(tmp_path) == []
        finally:
            await ledger.stop()

    asyncio.run(body())


def test_control_plane_outage_keeps_entries_and_reports_stale(tmp_path: Path) -> None:
    async def body() -> None:
        ledger = FakeLedger()
        ledger.down = True
        await ledger.start()
        now = [100.0]
        try:
            async with outbox(tmp_path, ledger, clock=lambda: now[0]) as box:
                box.start()
                for i in range(3):
                    box.record(entry(f"d{i}", 5), time.time_ns() // 1000)
                await asyncio.sleep(0.3)
                assert len(box.pending) == 3 and box.last_error is not None
                assert "503" in box.last_error
                now[0] += 61
                assert box.oldest_age() == 61
                assert box.pending_sum(lambda e, t: e["request_id"] != "d0") == 10
                ledger.down = False  # the control plane is back: the back-off retries
                await until(lambda: not box.pending, 15)
                assert sorted(ledger.rows) == ["d0", "d1", "d2"] and box.last_error is None
                await box.close(drain_seconds=1)
        finally:
            await ledger.stop()

    asyncio.run(body())


def test_a_crashed_processs_spool_is_adopted(tmp_path: Path) -> None:
    async def body() -> None:
        ledger = FakeLedger()
        await ledger.start()
        try:
            async with outbox(tmp_path, ledger, batch_size=2) as first:
                for i in range(5):
                    first.record(entry(f"c{i}"), time.time_ns() // 1000)
                assert await first.flush() is True
                first.record(entry("c5"), time.time_ns() // 1000)
                first.record(entry("c6"), time.time_ns() // 1000)
                # kill -9: no flush, no cleanup; the kernel releases the process's lock.
                for fd in list(first._lock_fds.values()):
                    os.close(fd)
                os.close(first._fd)
                (segment,) = files(tmp_path)
                with segment.open("ab") as fh:
                    fh.write(b'{"request_id": "torn", "cost_mic')  # a write the crash cut
            sent_before = len(ledger.rows)
            assert sent_before == 5
            async with outbox(tmp_path, ledger) as second:
                # Acknowledged entries are not pending again; the torn line is skipped.
                assert sorted(r for r in second.pending) == ["c5", "c6"]
                second.start()
                await until(lambda: not second.pending)
                assert sorted(ledger.rows) == [f"c{i}" for i in range(7)]
                await second.close(drain_seconds=1)
            assert listing(tmp_path) == []
        finally:
            await ledger.stop()

    asyncio.run(body())


def test_a_live_processs_spool_is_left_alone(tmp_path: Path) -> None:
    async def body() -> None:
        ledger = FakeLedger()
        ledger.down = True
        await ledger.start()
        try:
            async with outbox(tmp_path, ledger) as live:
                live.record(entry("mine"), time.time_ns() // 1000)
                async with outbox(tmp_path, ledger) as other:
                    assert other.pending == {}  # the live one holds its lock
                    await other.close(drain_seconds=0)
                await live.close(drain_seconds=0.2)
            # Stopped with an entry unsent: its segment and lock stay for the next start.
            assert len(files(tmp_path)) == 1 and len(files(tmp_path, ".lock")) == 1
            ledger.down = False
            async with outbox(tmp_path, ledger) as again:
                assert list(again.pending) == ["mine"]
                assert await again.flush()
                await again.close(drain_seconds=1)
            assert list(ledger.rows) == ["mine"] and listing(tmp_path) == []
        finally:
            await ledger.stop()

    asyncio.run(body())


def test_an_entry_the_control_plane_refuses_does_not_block_the_rest(tmp_path: Path) -> None:
    async def body() -> None:
        ledger = FakeLedger()
        await ledger.start()
        try:
            async with outbox(tmp_path, ledger) as box:
                for rid in ("ok1", "bad1", "ok2"):
                    box.record(entry(rid), time.time_ns() // 1000)
                assert await box.flush() is True
                assert sorted(ledger.rows) == ["ok1", "ok2"] and not box.pending
                # The refused one is kept for an operator, not retried for ever.
                kept = (tmp_path / "rejected.jsonl").read_bytes().splitlines()
                assert [orjson.loads(x)["request_id"] for x in kept] == ["bad1"]
                await box.close(drain_seconds=1)
        finally:
            await ledger.stop()

    asyncio.run(body())
