"""The durable outbox: ledger entries spooled to local files, flushed to the control plane.

Every completed call's ledger entry is appended (one JSON line, ``write(2)`` on an
``O_APPEND`` descriptor) to this process's active *segment* in ``<data_dir>/budgets-outbox/``
before the call's response reaches the client where the gateway allows it (see
docs/plugins/budgets.md), so a ``kill -9`` of the process loses nothing the kernel accepted.
A background task, every ``outbox_flush_interval_seconds``:

1. ``fsync``\\s the segment (one fsync per batch, so a power loss costs at most one interval);
2. sends the pending entries, oldest first, in batches to ``POST …/ledger`` (the control plane
   inserts each ``request_id`` once); on failure it backs off (0.2 s doubling to 10 s) and
   retries — through control-plane outages and restarts of either side;
3. appends an ``{"ack": [request ids]}`` line once a batch is acknowledged, and deletes
   segments whose every entry is acknowledged.

Each process holds an exclusive ``flock`` on ``<id>.lock`` while it lives; at start-up a
process *adopts* the segments of ids whose lock nobody holds (a crashed or stopped process,
or this one's previous life) and flushes their unacknowledged entries. Several worker
processes may share a data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import attrs
import orjson

from tollway_budgets._client import (
    ControlPlaneClient,
    ControlPlaneUnavailable,
    LedgerRejected,
    LocalControlPlane,
)
from tollway_budgets._windows import parse_us

__all__ = ["Outbox"]

log = logging.getLogger("tollway.budgets")

_SEGMENT_MAX_BYTES = 1024 * 1024
_SEGMENT_MAX_AGE = 5.0
_BACKOFF_START = 0.2
_BACKOFF_MAX = 10.0
_LOG_EVERY = 30.0
_STARTUP_QUIET = 10.0


@attrs.define(eq=False)
class _Segment:
    path: Path
    opened: float
    unacked: int = 0
    size: int = 0
    closed: bool = False


@attrs.define(eq=False)
class _Pending:
    entry: dict[str, Any]
    created_us: int
    cost: int
    added: float
    segment: _Segment


class Outbox:
    """See the module docstring. ``record`` is synchronous (called on the event loop from the
    hooks); everything else runs in :meth:`run`."""

    def __init__(
        self,
        directory: Path,
        client: ControlPlaneClient | LocalControlPlane,
        *,
        interval: float,
        batch_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.client = client
        self.interval = interval
        self.batch_size = batch_size
        self.clock = clock
        host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
        self.id = f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
        #: request id → entry, oldest first.
        self.pending: dict[str, _Pending] = {}
        #: Held while a batch is in flight, and by a seed reading :meth:`pending_sum`, so the
        #: two never see an entry both pending and in the ledger.
        self.lock = asyncio.Lock()
        self.last_error: str | None = None
        self.sent = 0
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._fd = -1
        self._dirty = False
        self._lock_fds: dict[str, int] = {}
        self._adopted_ids: list[str] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._started = clock()
        self._last_log = float("-inf")
        self._suppressed = 0
        self._write_failed = False

    # --- opening and recovery ------------------------------------------------------------

    def open(self) -> int:
        """Create the directory, take this process's lock, adopt orphaned segments and open a
        segment; returns how many entries were adopted (blocking file I/O: run in a thread)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock(self.id)
        adopted = self._adopt()
        self._open_segment()
        return adopted

    def _take_lock(self, ident: str) -> bool:
        path = self.directory / f"{ident}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fds[ident] = fd
        return True

    def _adopt(self) -> int:
        ids: set[str] = set()
        for path in self.directory.iterdir():
            # <id>.lock and <id>.<seq>.jsonl (not rejected.jsonl, the dead letters)
            if (path.suffix == ".lock" and path.name.count(".") == 1) or (
                path.suffix == ".jsonl" and path.name.count(".") == 2
            ):
                ids.add(path.name.split(".", 1)[0])
        ids.discard(self.id)
        entries: dict[str, tuple[dict[str, Any], _Segment]] = {}
        acked: set[str] = set()
        torn = 0
        for ident in sorted(ids):
            if not self._take_lock(ident):
                continue  # a live process owns it
            self._adopted_ids.append(ident)
            for path in sorted(self.directory.glob(f"{ident}.*.jsonl"), key=_segment_order):
                segment = _Segment(path, self.clock(), closed=True)
                self._segments.append(segment)
                for line in _lines(path):
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        torn += 1  # a write cut by the crash: the entry never completed
                        continue
                    if isinstance(doc, dict) and isinstance(doc.get("request_id"), str):
                        entries.setdefault(doc["request_id"], (doc, segment))
                    elif isinstance(doc, dict) and isinstance(doc.get("ack"), list):
                        acked.update(str(r) for r in doc["ack"])
        now = self.clock()
        for rid, (doc, segment) in entries.items():
            if rid in acked:
                continue
            try:
                created = parse_us(str(doc.get("created_at")))
            except ValueError:
                created = 0
            self.pending[rid] = _Pending(doc, created, _cost(doc), now, segment)
            segment.unacked += 1
        if ids:
            log.info(
                "budget_outbox_adopted ids=%d entries=%d torn_lines=%d",
                len(self._adopted_ids),
                len(self.pending),
                torn,
            )
        self._delete_done()
        return len(self.pending)

    def _open_segment(self) -> None:
        seq = time.time_ns()
        path = self.directory / f"{self.id}.{seq}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        segment = _Segment(path, self.clock())
        self._segments.append(segment)
        self._active = segment
        self._dirty = True  # fsync the new file (and its directory entry) with the next batch

    # --- recording (on the event loop, per request) --------------------------------------

    def record(self, entry: dict[str, Any], created_us: int) -> None:
        """Append ``entry`` to the spool (once per request id) and queue it for the ledger."""
        rid = entry["request_id"]
        if rid in self.pending or self._active is None:
            return
        line = orjson.dumps(entry) + b"\n"
        segment = self._active
        try:
            os.write(self._fd, line)
        except OSError as exc:
            # Keep it in memory (it is still flushed); say loudly that it is not durable.
            if not self._write_failed:
                log.error("budget_outbox_spool_write_failed path=%s error=%s", segment.path, exc)
            self._write_failed = True
        else:
            self._write_failed = False
            segment.size += len(line)
            self._dirty = True
        segment.unacked += 1
        self.pending[rid] = _Pending(entry, created_us, _cost(entry), self.clock(), segment)
        if len(self.pending) >= self.batch_size:
            self._wake.set()

    # --- the flusher ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval + backoff)
            self._wake.clear()
            if self._stopping:  # set by close() while we waited
                return  # type: ignore[unreachable]
            try:
                await self._sync()
                ok = await self.flush()
                self._maintain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the ledger for good
                log.exception("budget_outbox_error error=%r", exc)
                ok = False
            backoff = 0.0 if ok else min(max(_BACKOFF_START, backoff * 2), _BACKOFF_MAX)

    async def _sync(self) -> None:
        if not self._dirty or self._fd < 0:
            return
        self._dirty = False
        fd = self._fd
        await asyncio.to_thread(_fsync, fd, self.directory)

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Send every pending entry, batch by batch; False when a batch failed."""
        while self.pending:
            async with self.lock:
                batch = list(islice(self.pending.values(), self.batch_size))
                try:
                    async with asyncio.timeout(timeout):
                        await self.client.send_ledger([p.entry for p in batch])
                except LedgerRejected as exc:
                    if not await self._rejected(batch, exc):
                        return False
                    continue
                except (ControlPlaneUnavailable, TimeoutError) as exc:
                    self._failed(str(exc) or "timeout")
                    return False
                self._acked(batch)
        return True

    async def _rejected(self, batch: list[_Pending], exc: LedgerRejected) -> bool:
        """A batch the control plane refused as such: smaller batches for a 413; for a 400,
        each entry alone — the ones refused alone go to ``rejected.jsonl`` (kept for an
        operator, logged) so one bad entry never blocks the outbox."""
        if exc.status == 413 and len(batch) > 1:
            self.batch_size = max(1, len(batch) // 2)
            log.warning("budget_outbox_batch_too_large batch_size=%d", self.batch_size)
            return True
        for p in batch:
            try:
                await self.client.send_ledger([p.entry])
            except LedgerRejected as alone:
                log.error(
                    "budget_outbox_entry_rejected request_id=%s error=%s (kept in %s)",
                    p.entry.get("request_id"),
                    alone,
                    self.directory / "rejected.jsonl",
                )
                dead = self.directory / "rejected.jsonl"
                with contextlib.suppress(OSError), dead.open("ab") as fh:
                    fh.write(orjson.dumps(p.entry) + b"\n")
            except (ControlPlaneUnavailable, TimeoutError) as again:
                self._failed(str(again) or "timeout")
                return False
            self._acked([p])
        return True

    def _acked(self, batch: list[_Pending]) -> None:
        rids = [p.entry["request_id"] for p in batch]
        if self._active is not None:
            line = orjson.dumps({"ack": rids}) + b"\n"
            try:
                os.write(self._fd, line)
                self._active.size += len(line)
                self._dirty = True
            except OSError:
                pass  # a lost ack only means a harmless re-send after a crash
        for p in batch:
            if self.pending.pop(p.entry["request_id"], None) is not None:
                p.segment.unacked -= 1
        self.sent += len(batch)
        if self.last_error is not None:
            log.info("budget_outbox_recovered sent=%d pending=%d", len(batch), len(self.pending))
        self.last_error = None

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        now = self.clock()
        if now - self._started < _STARTUP_QUIET and self.sent == 0:
            return  # the embedded control plane is this process, still starting
        if now - self._last_log < _LOG_EVERY:
            self._suppressed += 1
            return
        self._last_log = now
        log.warning(
            "budget_outbox_flush_failed pending=%d error=%s suppressed=%d",
            len(self.pending),
            reason,
            self._suppressed,
        )
        self._suppressed = 0

    def _maintain(self) -> None:
        """Rotate the active segment when big, or when old and fully acknowledged; delete
        closed segments whose entries are all acknowledged."""
        active = self._active
        if (
            active is not None
            and active.size
            and (
                active.size >= _SEGMENT_MAX_BYTES
                or (active.unacked == 0 and self.clock() - active.opened >= _SEGMENT_MAX_AGE)
            )
        ):
            active.closed = True
            os.close(self._fd)
            self._fd = -1
            self._open_segment()
        self._delete_done()

    def _delete_done(self) -> None:
        keep = []
        for segment in self._segments:
            if segment.closed and segment.unacked <= 0:
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
            else:
                keep.append(segment)
        self._segments = keep
        for ident in list(self._adopted_ids):
            if not any(s.path.name.startswith(f"{ident}.") for s in self._segments):
                self._release(ident, delete=True)
                self._adopted_ids.remove(ident)

    def _release(self, ident: str, *, delete: bool) -> None:
        fd = self._lock_fds.pop(ident, None)
        if delete:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{ident}.lock").unlink()
        if fd is not None:
            os.close(fd)

    # --- what others ask -----------------------------------------------------------------

    def pending_sum(self, match: Callable[[dict[str, Any], int], bool]) -> int:
        """Micro-USD of pending (not yet acknowledged) entries ``match`` accepts. Call it
        holding :attr:`lock` so no batch is half-way to the ledger."""
        return sum(p.cost for p in self.pending.values() if match(p.entry, p.created_us))

    def oldest_age(self) -> float:
        for p in self.pending.values():
            return max(0.0, self.clock() - p.added)
        return 0.0

    def entries(self) -> Iterator[dict[str, Any]]:
        return (p.entry for p in self.pending.values())

    # --- shutdown ------------------------------------------------------------------------

    async def close(self, drain_seconds: float) -> None:
        """Stop the flusher, try for ``drain_seconds`` to hand the rest over, close the spool
        (what is left stays on disk for the next start to adopt)."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        deadline = self.clock() + drain_seconds
        with contextlib.suppress(Exception):
            await self._sync()
        for _ in range(3):  # a few tries, not a busy wait on a control plane that is gone
            if not self.pending or self.clock() >= deadline:
                break
            if await self.flush(timeout=max(0.1, deadline - self.clock())):
                break
            await asyncio.sleep(min(0.2, max(0.0, deadline - self.clock())))
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._active is not None:
            self._active.closed = True
            self._active = None
        self._delete_done()
        left = bool(self.pending)
        if left:
            log.warning(
                "budget_outbox_left_in_spool entries=%d dir=%s (the next start sends them)",
                len(self.pending),
                self.directory,
            )
        for ident in list(self._lock_fds):
            self._release(ident, delete=not left and ident == self.id)


def _fsync(fd: int, directory: Path) -> None:
    try:
        os.fsync(fd)
    except OSError:
        return
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _segment_order(path: Path) -> int:
    try:
        return int(path.name.split(".")[-2])
    except (IndexError, ValueError):
        return 0


def _lines(path: Path) -> Iterator[bytes]:
    try:
        data = path.read_bytes()
    except OSError:
        return iter(())
    return (line for line in data.split(b"\n") if line.strip())


def _cost(entry: dict[str, Any]) -> int:
    value = entry.get("cost_micro_usd")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
