"""One Redis round trip per request: the admission batch and the settlement queue.

Several plugins keep their state in Redis (rate limits, budgets, the response cache). Asked one
after the other, each would cost the request a round trip of its own. Instead:

* **The request's batch** (:func:`request_batch`). During admission a plugin *defers* its script
  call (:meth:`RequestBatch.defer`) with a continuation, ``then(outcome)``, instead of awaiting
  it. The core sends everything deferred in **one pipeline** at the request's single flush point
  — when a plugin needs an answer now (:meth:`RequestBatch.call`, e.g. the response cache's
  lookup in ``answer``), or at the latest before the request goes upstream — and then runs the
  continuations in the order the calls were deferred. A continuation that raises a
  :class:`~tollway.GatewayError` (a refusal: rate limited, budget exceeded) refuses the request;
  every continuation still runs first (so each plugin records what its script did and its
  ``account`` can undo it), and the first refusal wins, as it would have had the calls been made
  one by one. When admission or a guardrail refuses the request before the flush point, the
  core flushes first: an earlier plugin's deferred refusal still comes first.

* **The settlement queue** (:func:`settlements`). What happens after the answer (settling a
  budget reservation, storing a cached response, correcting a token count) is not on the
  request's path at all: :meth:`SettleQueue.put` queues the call and one background flush sends
  every request's settlements together, :data:`SETTLE_DELAY_SECONDS` (50 ms) after the first
  was queued, in one pipeline. The wait is long enough that requests a few milliseconds apart
  share it (at 100 req/s, one background round trip for five requests) and that a request's
  settlement rarely lands in the middle of the next request on the same connection (with 5 ms,
  back-to-back streams each paid for the previous one's flush: about 0.5 ms of time to first
  byte); short enough that counters and a stored response are current a moment later. The queue is
  drained when the last plugin releases the Redis facility (graceful stop); calls still queued
  when a process is killed are what reservation leases and counter healing already recover.

A continuation receives the script's reply, or the exception that call raised (one of
:data:`tollway.redis.BACKEND_ERRORS`: Redis down, slow, refusing): it applies its plugin's
:class:`~tollway.redis.FailurePolicy` exactly as a direct call would. A continuation may be a
coroutine function (it may make further calls on a rare path, e.g. seeding a counter). One that
raises anything else is logged and the others still run.

**Requests share their round trip.** The flushes of every request that reaches its flush point
in the same turn of the event loop are sent together, in one pipeline (each request still waits
for exactly one round trip, and its continuations see only its own calls' replies): under load
Redis sees a fraction of a pipeline per request, and the gateway pays the pipeline's fixed cost
(a pooled connection, the write, the read) once for all of them. A request alone is sent on the
next turn of the loop, which adds no measurable wait.

On a single Redis the pipeline is written by hiredis's packer (C) in one write, on one of a
few connections the batches keep, and its replies are read under the trip's one deadline rather
than a timer per reply: redis-py's own pipeline and pool checkout spent more of the gateway's
CPU than any plugin (19 % fewer instructions per request with every feature working). On a
Redis Cluster the pipeline is split by node (redis-py's cluster pipeline): one round of parallel
round trips rather than one.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import attrs
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollway._context import DEFERRED, RequestContext
from tollway._errors import GatewayError
from tollway.redis import BACKEND_ERRORS, REQUEST_PATH, RedisFacility, Script

__all__ = [
    "SETTLE_DELAY_SECONDS",
    "RequestBatch",
    "SettleQueue",
    "Then",
    "flush_request",
    "request_batch",
    "send_pipeline",
    "settlements",
]

log = logging.getLogger("tollway.redis")

#: A continuation: the script's reply or the exception its call raised.
Then = Callable[[Any], Awaitable[None] | None]

_EVALSHA = b"EVALSHA"


def _hiredis_pack() -> Callable[[tuple[Any, ...]], bytes] | None:
    """hiredis's ``pack_command`` (C): one command of str, bytes, int and float arguments,
    TypeError for anything else."""
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - hiredis comes with the redis extra (redis[hiredis])
        return None
    return cast(Callable[[tuple[Any, ...]], bytes], pack_command)


_pack = _hiredis_pack()

#: Connections the batches keep (``RedisFacility.kept_connections``) rather than check one out
#: of redis-py's pool per trip (a lock, a condition, a timer, a liveness read: as costly as the
#: packing): at most this many, and a quarter of the pool at most. Still the pool's: it closes
#: them with the client.
_KEEP = 4


@attrs.define
class _Call:
    script: Script
    keys: Sequence[Any]
    args: Sequence[Any]
    then: Then | None = None
    outcome: Any = None


async def send_pipeline(facility: RedisFacility, calls: Sequence[_Call]) -> None:
    """Send ``calls`` in one non-transactional pipeline, bounded by the facility's deadline;
    each call's ``outcome`` is its reply or the exception it raised. Scripts Redis does not know
    (``NOSCRIPT``: Redis restarted, a failover) are loaded and those calls sent once more."""
    try:
        async with asyncio.timeout(facility.options.deadline):
            await _send(facility, calls)
            missing = [c for c in calls if isinstance(c.outcome, NoScriptError)]
            if missing:
                for script in {id(c.script): c.script for c in missing}.values():
                    await script.load()
                await _send(facility, missing)
    except BACKEND_ERRORS as exc:
        for call in calls:
            if call.outcome is None or isinstance(call.outcome, NoScriptError):
                call.outcome = exc


async def _send(facility: RedisFacility, calls: Sequence[_Call]) -> None:
    for call in calls:
        call.outcome = None
    client = facility.client
    if _pack is None or not isinstance(client, Redis):
        await _send_redis_py(client, calls)
    else:
        await _send_packed(facility, client.connection_pool, calls)


async def _send_redis_py(client: Any, calls: Sequence[_Call]) -> None:
    """Through redis-py's pipeline (a Redis Cluster's splits it by node)."""
    async with client.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replies = await pipe.execute(raise_on_error=False)
    for call, reply in zip(calls, replies, strict=True):
        call.outcome = reply


async def _send_packed(
    facility: RedisFacility, pool: ConnectionPool, calls: Sequence[_Call]
) -> None:
    """What redis-py's pipeline does for a batch of ``EVALSHA`` on a single Redis, without its
    per-argument work in Python: each call is packed by hiredis (C) into one write, and the
    replies are read on the pooled connection without a timer each (the caller's deadline
    bounds the whole trip; a read cut short drops the connection). A call whose arguments
    cannot be sent gets :class:`~redis.exceptions.DataError` as its outcome, alone. Like
    redis-py with the facility's retry, a connection that fails is replaced and the batch sent
    once more."""
    pack = cast(Callable[[tuple[Any, ...]], bytes], _pack)
    packed: list[bytes] = []
    sent: list[_Call] = []
    for call in calls:
        try:
            packed.append(pack((_EVALSHA, call.script.sha, len(call.keys), *call.keys, *call.args)))
        except TypeError as exc:
            call.outcome = DataError(f"a script argument cannot be sent to Redis: {exc}")
            continue
        sent.append(call)
    if not sent:
        return
    data = b"".join(packed)
    kept = facility.kept_connections
    if kept is None or kept[0] is not pool:
        kept = facility.kept_connections = (pool, [])
    idle = kept[1]
    conn = idle.pop() if idle else await cast(Any, pool).get_connection()
    try:
        for attempt in (1, 2):
            try:
                # Without the connection's socket timeout for the write: redis-py would wrap it
                # in asyncio.wait_for (a task and a timer per write); the trip's deadline bounds
                # it, as it bounds the reads.
                timeout, conn.socket_timeout = conn.socket_timeout, None
                try:
                    await conn.send_packed_command(data, check_health=False)
                finally:
                    conn.socket_timeout = timeout
                for call in sent:
                    try:
                        call.outcome = await conn.read_response(timeout=math.inf)
                    except ResponseError as exc:
                        call.outcome = exc
                return
            except (RedisConnectionError, RedisTimeoutError):  # the connection failed
                await conn.disconnect()
                if attempt == 2:
                    raise
    finally:
        # Every reply was read, or the connection was dropped (it reconnects on its next send):
        # kept for the next batch, up to a few (the pool's other users are never starved of
        # the connections a burst of batches took).
        # A client closed meanwhile no longer keeps any: its pool takes this one back.
        keep = facility.kept_connections is kept
        if keep and len(idle) < min(_KEEP, cast(Any, pool).max_connections // 4):
            idle.append(conn)
        else:
            await pool.release(conn)


async def _run_then(call: _Call, where: str) -> GatewayError | None:
    if call.then is None:
        return None
    try:
        done = call.then(call.outcome)
        if inspect.isawaitable(done):
            await done
    except GatewayError as exc:
        return exc
    except Exception:
        log.exception("redis_continuation_failed where=%s", where)
    return None


class RequestBatch:
    """The Redis calls of one request that wait for its single round trip (see the module
    doc). Get it with :func:`request_batch`."""

    def __init__(self, facility: RedisFacility, request_id: str = "-") -> None:
        self.facility = facility
        self.request_id = request_id
        self._pending: list[_Call] = []
        self._refusal: GatewayError | None = None
        #: Round trips this batch made (for tests and the bench: at most one per request).
        self.flushes = 0

    @property
    def pending(self) -> bool:
        """Calls are waiting for the flush, or a refusal for the core's flush point."""
        return bool(self._pending) or self._refusal is not None

    def defer(
        self, script: Script, keys: Sequence[Any] = (), args: Sequence[Any] = (), *, then: Then
    ) -> None:
        """Queue a script call; ``then(outcome)`` runs after the flush, in deferral order."""
        self._pending.append(_Call(script, keys, args, then))

    async def call(self, script: Script, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run a script now, together with everything deferred, and return its reply (or raise
        the exception its call raised). A deferred refusal is *not* raised here: the core raises
        it at its flush point (:func:`flush_request`)."""
        mine = _Call(script, keys, args)
        self._pending.append(mine)
        await self._flush()
        if isinstance(mine.outcome, BaseException):
            raise mine.outcome
        return mine.outcome

    async def flush(self) -> None:
        """Send what is pending, run the continuations, and raise the first refusal (once)."""
        if not self._pending and self._refusal is None:
            return
        await self._flush()
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            raise refusal

    async def _flush(self) -> None:
        calls, self._pending = self._pending, []
        if not calls:
            return
        self.flushes += 1
        await _shared_trip(self.facility).send(calls)
        for call in calls:
            refusal = await _run_then(call, f"request {self.request_id}")
            if refusal is not None and self._refusal is None:
                self._refusal = refusal


class _SharedTrip:
    """The request flushes of one turn of the event loop, sent in one pipeline (see the module
    doc). One per facility (:func:`_shared_trip`)."""

    def __init__(self, facility: RedisFacility) -> None:
        self.facility = facility
        self._waiting: list[tuple[Sequence[_Call], asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Pipelines sent and request flushes they carried (for tests and the bench).
        self.pipelines = 0
        self.flushes = 0

    async def send(self, calls: Sequence[_Call]) -> None:
        """Send ``calls`` with the other flushes of this turn; each call's ``outcome`` is set
        as :func:`send_pipeline` sets it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            # The task's first step runs on the next turn of the loop, after every request
            # already runnable in this one has had its chance to join. Its context marks its
            # round trip as made on the request path (it is: every joiner waits for it).
            context = contextvars.Context()
            context.run(REQUEST_PATH.set, True)
            task = loop.create_task(self._send(), context=context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._waiting.append((calls, done))
        await done

    async def _send(self) -> None:
        waiting, self._waiting = self._waiting, []
        calls = [call for joined, _ in waiting for call in joined]
        self.pipelines += 1
        self.flushes += len(waiting)
        try:
            await send_pipeline(self.facility, calls)
        except Exception as exc:  # not a Redis failure (send_pipeline keeps those): a bug
            for _, done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are its joiners
            for _, done in waiting:
                done.cancel()
            raise
        for _, done in waiting:
            if not done.done():
                done.set_result(None)


def _shared_trip(facility: RedisFacility) -> _SharedTrip:
    trip = facility.shared_trip
    if trip is None:
        trip = facility.shared_trip = _SharedTrip(facility)
    return cast(_SharedTrip, trip)


def request_batch(ctx: RequestContext, facility: RedisFacility) -> RequestBatch:
    """The request's batch on ``facility`` (made on first use)."""
    batch = ctx.stash.get(DEFERRED)
    if batch is None:
        batch = RequestBatch(facility, ctx.request_id)
        ctx.stash[DEFERRED] = batch
    return cast(RequestBatch, batch)


async def flush_request(ctx: RequestContext) -> None:
    """The core's flush point: send the request's deferred calls and raise the first refusal.
    A no-op when nothing was deferred."""
    batch = ctx.stash.get(DEFERRED)
    if batch is not None:
        await batch.flush()


#: How long the first queued settlement waits for company before the queue is sent.
SETTLE_DELAY_SECONDS = 0.05


class SettleQueue:
    """Calls made after the answer, sent for every request together (see the module doc). Get
    it with :func:`settlements`."""

    def __init__(
        self, facility: RedisFacility, delay: float = SETTLE_DELAY_SECONDS, max_batch: int = 256
    ) -> None:
        self.facility = facility
        #: How long the first queued call waits for company.
        self.delay = delay
        self.max_batch = max_batch
        self._queue: list[_Call] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Pipelines sent (for tests and the bench).
        self.flushes = 0

    def put(
        self,
        script: Script,
        keys: Sequence[Any] = (),
        args: Sequence[Any] = (),
        *,
        then: Then | None = None,
    ) -> None:
        """Queue a script call; ``then(outcome)`` runs once it was sent."""
        self._queue.append(_Call(script, keys, args, then))
        if len(self._queue) >= self.max_batch:
            self._start()
        elif self._timer is None:
            # A context of its own: the flush is nobody's request (round trips count as
            # background, log lines carry no request id).
            self._timer = asyncio.get_running_loop().call_later(
                self.delay, self._start, context=contextvars.Context()
            )

    def __len__(self) -> int:
        return len(self._queue)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        calls, self._queue = self._queue, []
        if not calls:
            return
        task = asyncio.get_running_loop().create_task(
            self._send(calls), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[_Call]) -> None:
        self.flushes += 1
        await send_pipeline(self.facility, calls)
        for call in calls:
            await _run_then(call, "settlement")

    async def drain(self) -> None:
        """Send everything queued now and wait for every send in flight."""
        self._start()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def settlements(facility: RedisFacility) -> SettleQueue:
    """The facility's settlement queue (one per gateway process; drained by
    :meth:`~tollway.redis.RedisFacility.release`)."""
    queue = facility.settle_queue
    if queue is None:
        queue = facility.settle_queue = SettleQueue(facility)
    return cast(SettleQueue, queue)
