"""The gateway's Redis: one client per gateway process, shared by every plugin that keeps state
in Redis (rate limits, budgets, the response cache, the auth cache's L2).

What a plugin gets from :func:`shared`:

* **one client and pool** built from ``GATEWAY_REDIS_URL`` / ``GATEWAY_REDIS_CLUSTER`` (the
  core's ``redis_url`` / ``redis_cluster`` settings) with the gateway's connection options
  (:class:`RedisOptions`: a read times out after 0.25 s, a connect after 0.5 s, a pooled
  connection that died is replaced once at once, nothing sleeps, no health-check ``PING``).
  The pool *waits* for a free connection rather than failing; its size is the sum of what its
  users asked for (:func:`shared`'s ``max_connections``). A plugin bounds each of its own calls
  with ``asyncio.timeout(deadline)`` (:func:`round_trip_deadline`);
* **Lua scripts** (:class:`Script`): ``EVALSHA`` first, and on ``NOSCRIPT`` (Redis restarted,
  ``SCRIPT FLUSH``, a cluster failover) one ``SCRIPT LOAD`` — on every primary of a cluster —
  and the call again. The steady state is one command per call, also in a pipeline
  (:meth:`Script.pipeline`);
* **the failure policy** (:class:`FailurePolicy`): count the error, stop asking Redis for a
  moment, warn at most so often, log the recovery, and fail open or closed;
* **one probe at a time** (:class:`RedisHealth`, shared by every plugin through
  :meth:`FailurePolicy.share`): once the back-off is over, exactly one request asks Redis again
  (and waits at most its deadline); every other request meanwhile takes the fail-open/closed
  path at once, so a frozen Redis slows one request per back-off interval, not all of them.

Plugins never share keys through it: each keeps its own key prefix. Requires ``redis``
(``pip install "tollway[redis]"``; a plugin that uses this module depends on it itself).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import attrs
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from tollway._context import StashKey
from tollway._errors import ServiceUnavailable
from tollway._logging import handler_task_var

if TYPE_CHECKING:
    from tollway.gateway import Gateway

__all__ = [
    "BACKEND_ERRORS",
    "LUA_NOW_MS",
    "FailurePolicy",
    "RedisClient",
    "RedisFacility",
    "RedisHealth",
    "RedisOptions",
    "Script",
    "connect",
    "describe",
    "round_trip_deadline",
    "round_trips",
    "shared",
]

#: What a Redis call raises when Redis is unreachable, slow or refusing: catch these, apply the
#: :class:`FailurePolicy`.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

#: A client of a single Redis or of a Redis Cluster (the same command methods).
RedisClient = Redis | RedisCluster

#: A Lua prelude for scripts that take "now" as their first argument: ``now_ms(ARGV[1])`` is
#: that number, or — for ``''`` — the Redis server's own ``TIME`` in ms, so that every gateway
#: replica shares one clock. Prepend it to the script's text.
LUA_NOW_MS = """\
local function now_ms(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""


def describe(exc: BaseException, *, typed: bool = False) -> str:
    """An error for a log line: its message (``typed``: ``Type: message``), or its type's name
    when it has no message."""
    text = str(exc)
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if typed else text


def round_trip_deadline(socket_timeout: float, connect_timeout: float) -> float:
    """The most one Redis call may take: a failed read, one reconnect and a second read."""
    return connect_timeout + 2 * socket_timeout


# --- the client ------------------------------------------------------------------------------


@attrs.frozen
class RedisOptions:
    """How the gateway connects to Redis."""

    url: str
    #: ``url`` names a Redis Cluster.
    cluster: bool = False
    #: Bound on each read, and on opening a connection.
    socket_timeout: float = 0.25
    connect_timeout: float = 0.5
    #: Pool size (single Redis) when no user asks for one.
    max_connections: int = 64

    @property
    def deadline(self) -> float:
        """:func:`round_trip_deadline` of these timeouts."""
        return round_trip_deadline(self.socket_timeout, self.connect_timeout)


#: Round trips to Redis made by this process (every packed send: one command or a whole
#: pipeline), by where they were made: ``request`` (a request waits for it: sent by its handler
#: task and its hooks, or the request batches' shared round trip) or ``background`` (settlement
#: flushes, lease renewals, sharing, tasks a request spawned — its ``account`` hooks). Exported
#: as ``gateway_redis_round_trips_total{path}`` when prometheus-client is present.
_ROUND_TRIPS = {"request": 0, "background": 0}

#: True in a task whose round trips a request waits for, though the task is not the request's
#: handler (:mod:`tollway.redis_batch`'s shared round trip).
REQUEST_PATH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tollway_redis_request_path", default=False
)


def _path() -> Literal["request", "background"]:
    if REQUEST_PATH.get():
        return "request"
    handler = handler_task_var.get()
    return "request" if handler is not None and handler is asyncio.current_task() else "background"


_COUNTING: dict[type[Any], type[Any]] = {}


def round_trips(path: Literal["request", "background"] | None = None) -> int:
    """Round trips this process made to Redis so far (a command, or a pipeline, is one): all of
    them, or those of one ``path``."""
    return _ROUND_TRIPS[path] if path else sum(_ROUND_TRIPS.values())


def _round_trip_metric() -> Any:
    try:
        from tollway.metrics import counter
    except ImportError:  # prometheus-client not installed: the plain count still works
        return None
    return counter(
        "gateway_redis_round_trips_total",
        "Round trips to Redis (one command or one pipeline each), made while serving a request "
        "or in the background",
        ("path",),
    )


def _counting(base: type[Any]) -> type[Any]:
    """``base`` (a redis-py connection class) counting its sends."""
    if base not in _COUNTING:
        metric = _round_trip_metric()
        labelled = {p: metric.labels(p) for p in _ROUND_TRIPS} if metric is not None else {}

        async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
            path = _path()
            _ROUND_TRIPS[path] += 1
            if labelled:
                labelled[path].inc()
            await base.send_packed_command(self, command, check_health)

        _COUNTING[base] = type(
            f"Counting{base.__name__}", (base,), {"send_packed_command": send_packed_command}
        )
    return _COUNTING[base]


def connect(options: RedisOptions) -> RedisClient:
    """A pooled asyncio client with bounded timeouts and at most one immediate retry (a pooled
    connection that died, e.g. after a Redis restart, is replaced once; nothing sleeps).

    A single Redis gets a pool that *waits* for a free connection (up to connect + read
    timeout) rather than failing, so more concurrent calls than ``max_connections`` queue."""
    common: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 0,
    }
    if options.cluster:
        return RedisCluster.from_url(options.url, **common)  # round trips not counted
    base = parse_url(options.url).get("connection_class", Connection)
    pool = BlockingConnectionPool.from_url(
        options.url,
        connection_class=_counting(base),
        max_connections=options.max_connections,
        timeout=options.connect_timeout + options.socket_timeout,
        **common,
    )
    return Redis(connection_pool=pool)


class Script:
    """A Lua script run with ``EVALSHA``; reloaded once on ``NOSCRIPT``.

    The digest is computed here, so the first call is already an ``EVALSHA``. On a cluster the
    call goes to the node of its first key (every key of one call must share a hash slot) and
    ``SCRIPT LOAD`` to every primary.
    """

    def __init__(self, client: RedisClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script once and return its reply."""
        try:
            return await cast(Any, self.client).evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await cast(Any, self.client).evalsha(self.sha, len(keys), *keys, *args)

    async def load(self) -> None:
        """``SCRIPT LOAD`` (every primary of a cluster)."""
        self.sha = str(await cast(Any, self.client).script_load(self.source))

    async def pipeline(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Run the script once per ``(keys, args)`` in one non-transactional pipeline (one
        round trip on a single Redis; a cluster pipeline splits by node). Each reply is the
        script's, or the exception that call raised; a ``NOSCRIPT`` reloads and resends once."""
        results = await self._pipeline(calls)
        if any(isinstance(r, NoScriptError) for r in results):
            await self.load()
            results = await self._pipeline(calls)
        return results

    async def _pipeline(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        sha = self.sha
        async with cast(Any, self.client).pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))


class RedisFacility:
    """The gateway's Redis (see the module doc). Get it with :func:`shared`."""

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        #: Whether Redis is believed reachable, shared by every plugin's :class:`FailurePolicy`
        #: (:meth:`FailurePolicy.share`): one outage, one back-off, one probe at a time.
        self.health = RedisHealth(probe_timeout=2 * options.deadline)
        #: The plugins using it, and the pool share each asked for.
        self.users: dict[str, int] = {}
        self._client: RedisClient | None = None
        #: The settlement queue (:func:`tollway.redis_batch.settlements`), once someone used it.
        self.settle_queue: Any = None
        #: The request flushes' shared round trip (:mod:`tollway.redis_batch`), once used.
        self.shared_trip: Any = None
        #: Connections the batches keep (:mod:`tollway.redis_batch`): ``(pool, connections)``
        #: of the current client; dropped with it.
        self.kept_connections: tuple[Any, list[Any]] | None = None

    @property
    def cluster(self) -> bool:
        return self.options.cluster

    @property
    def client(self) -> RedisClient:
        """The shared client (built on first use)."""
        if self._client is None:
            self._client = connect(attrs.evolve(self.options, max_connections=self._pool_size()))
        return self._client

    def _pool_size(self) -> int:
        return sum(self.users.values()) or self.options.max_connections

    def _use(self, user: str, max_connections: int | None, cluster: bool) -> None:
        if cluster and not self.options.cluster:
            if self._client is not None:
                raise ValueError(
                    f"{user} asks for a Redis Cluster client, but the gateway's Redis client "
                    "was already made for a single Redis; set GATEWAY_REDIS_CLUSTER=true"
                )
            self.options = attrs.evolve(self.options, cluster=True)
        self.users[user] = max_connections or 0
        client = self._client
        if isinstance(client, Redis):
            # The pool checks its size on every checkout: a later user's share counts at once.
            pool = client.connection_pool
            pool.max_connections = max(pool.max_connections, self._pool_size())

    def script(self, source: str) -> Script:
        """``source`` as a :class:`Script` on the shared client."""
        return Script(self.client, source)

    async def ping(self, deadline: float | None = None) -> None:
        """``PING``, bounded by ``deadline`` (default: the options' own)."""
        async with asyncio.timeout(self.options.deadline if deadline is None else deadline):
            await cast(Any, self.client).ping()

    async def release(self, user: str) -> None:
        """``user`` is done with Redis (its ``gateway_stopping``): queued settlements are sent
        first; the last user closes the client."""
        if self.settle_queue is not None and self._client is not None:
            await self.settle_queue.drain()
        self.users.pop(user, None)
        if self.users or self._client is None:
            return
        client, self._client = self._client, None
        self.kept_connections = None  # the pool's disconnect below closes them
        try:
            await client.aclose()
            if isinstance(client, Redis):
                await client.connection_pool.disconnect()
        except Exception:  # closing connections to a Redis that went away
            logging.getLogger("tollway.redis").debug("redis_close_failed", exc_info=True)


_FACILITY: StashKey[RedisFacility | None] = StashKey("tollway.redis")


def shared(
    gateway: Gateway,
    user: str,
    *,
    max_connections: int | None = None,
    cluster: bool = False,
) -> RedisFacility | None:
    """The gateway's Redis, for the plugin ``user`` (its settings name), or ``None`` when
    ``GATEWAY_REDIS_URL`` is unset. Call it from ``gateway_started``; call
    :meth:`RedisFacility.release` from ``gateway_stopping``.

    ``max_connections``: this plugin's share of the single-Redis pool (the pool is the sum of
    the shares, 64 when nobody asks). ``cluster``: the plugin's own setting says the URL names a
    Redis Cluster (the core's ``redis_cluster`` setting says so for everyone).
    """
    if _FACILITY in gateway.stash:
        facility = gateway.stash[_FACILITY]
    else:
        url = gateway.settings.redis_url
        facility = (
            RedisFacility(RedisOptions(url, cluster=bool(gateway.settings.redis_cluster)))
            if url
            else None
        )
        gateway.stash[_FACILITY] = facility
    if facility is not None:
        facility._use(user, max_connections, cluster)
    return facility


# --- the failure policy ----------------------------------------------------------------------


class _Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


@attrs.define(eq=False)
class RedisHealth:
    """Whether to ask Redis now, with a single-flight reconnect probe.

    Healthy: everyone asks. After a failure: nobody asks until ``down_until``; then the first
    caller of :meth:`available` claims the probe and asks; every other caller is told no until
    the probe reports (:meth:`failed` or :meth:`ok`) — or, if the prober vanished without a
    word (cancelled), until ``probe_timeout`` seconds after the claim.
    """

    #: A claimed probe that never reported frees its place after this long (more than any
    #: caller's round-trip deadline).
    probe_timeout: float = 2.0
    down_until: float = 0.0
    #: While a probe is out: when its claim lapses.
    probe_until: float = 0.0
    #: Probes claimed so far (for tests and diagnostics).
    probes: int = 0

    def available(self, now: float | None = None) -> bool:
        if not self.down_until:
            return True
        now = time.monotonic() if now is None else now
        if now < self.down_until or now < self.probe_until:
            return False
        self.probe_until = now + self.probe_timeout
        self.probes += 1
        return True

    def failed(self, retry_interval: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.down_until = now + retry_interval
        self.probe_until = 0.0

    def ok(self) -> None:
        self.down_until = 0.0
        self.probe_until = 0.0


@attrs.define(eq=False)
class FailurePolicy:
    """What a plugin does when Redis fails, one implementation for every plugin.

    On :meth:`failed`: count the error (``errors``), skip Redis for ``retry_interval`` seconds
    (:meth:`available` is false meanwhile; then it is true for one caller at a time, the probe:
    a dead or frozen Redis costs one timeout per interval, not one per request), and log
    ``warning`` at most every ``warn_every`` seconds (``None``: once per back-off interval).
    ``warning`` is a %-format with the keys ``policy``, ``during``, ``error`` and ``retry``.
    On :meth:`ok` after a failure, log ``recovered``.

    :meth:`refuse` applies ``on_error`` to a request Redis could not serve: return
    (``fail_open``) or raise :class:`~tollway.ServiceUnavailable` with ``refusal`` /
    ``refusal_code`` (``fail_closed``).
    """

    logger: logging.Logger
    warning: str
    recovered: str | None = None
    errors: _Count | None = None
    on_error: Literal["fail_open", "fail_closed"] = "fail_open"
    retry_interval: float = 1.0
    warn_every: float | None = 10.0
    #: ``Type: message`` in the log line rather than the message alone.
    typed_errors: bool = False
    #: Also pass ``{<during_field>: during, "error": error}`` as the record's ``extra``.
    structured: bool = False
    during_field: str = "during"
    refusal: str = "Redis is unreachable"
    refusal_code: str = "redis_unavailable"
    failing: bool = False
    last_warning: float = -math.inf
    #: The last error (None once Redis answered again).
    last_error: str | None = None
    #: The back-off and probe state: this policy's own until :meth:`share` joins the gateway's.
    health: RedisHealth = attrs.field(factory=RedisHealth)

    def share(self, facility: RedisFacility) -> None:
        """Back off and probe together with every other plugin using ``facility`` (call it
        once the facility is known, from ``gateway_started``)."""
        self.health = facility.health

    @property
    def down_until(self) -> float:
        return self.health.down_until

    @property
    def fail_closed(self) -> bool:
        return self.on_error == "fail_closed"

    def available(self) -> bool:
        """Whether to ask Redis now: not backing off after an error, and — after one — this
        caller is the one probe (it must then report :meth:`failed` or :meth:`ok`)."""
        return self.health.available()

    def failed(self, exc: BaseException, during: str) -> None:
        """Count ``exc``, back off, and warn (rate-limited)."""
        if self.errors is not None:
            self.errors.inc()
        now = time.monotonic()
        error = describe(exc, typed=self.typed_errors)
        due = (
            now >= self.down_until
            if self.warn_every is None
            else now - self.last_warning >= self.warn_every
        )
        if due:
            self.last_warning = now
            fields: Mapping[str, object] = {
                "policy": self.on_error,
                "during": during,
                "error": error,
                "retry": self.retry_interval,
            }
            extra = {self.during_field: during, "error": error} if self.structured else None
            self.logger.warning(self.warning, fields, extra=extra)
        self.health.failed(self.retry_interval, now)
        self.failing = True
        self.last_error = error

    def ok(self) -> None:
        """Redis answered: end the outage (logging ``recovered`` once)."""
        if self.health.down_until:
            self.health.ok()
        if self.failing:
            self.failing = False
            self.last_error = None
            if self.recovered is not None:
                self.logger.info(self.recovered)

    def refuse(self) -> None:
        """Apply ``on_error`` to a request Redis could not serve: return when failing open,
        raise :class:`~tollway.ServiceUnavailable` when failing closed."""
        if self.fail_closed:
            raise ServiceUnavailable(
                self.refusal,
                code=self.refusal_code,
                retry_after=max(1.0, self.retry_interval),
            )
