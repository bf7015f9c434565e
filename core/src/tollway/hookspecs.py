"""Tollway's hook specifications — the whole plugin contract, grouped by lifecycle phase.

How hooks are called
--------------------
Start-up hooks (``register_*``) are plain pluggy calls, made once. Per-request hooks are *not*
called through pluggy's ``pm.hook``: the core walks the implementations itself (see
:mod:`tollway._hooks`) so that ``async def`` implementations are awaited. Three modes are used,
named in each docstring:

* **first** — implementations run in call order until one returns something other than ``None``;
  that value is the result.
* **each** — every implementation runs in call order; the first one to raise stops the call and its
  exception decides the request (a :class:`tollway.GatewayError` becomes the client's error).
* **isolated** — every implementation runs; an exception is logged with the plugin's name and does
  not stop the others (used where one broken plugin must not cost another its work).

Call order is pluggy's: ``tryfirst`` implementations first, unmarked ones next, ``trylast`` ones
last. Within the ``tryfirst`` and unmarked groups the most recently registered runs first; within
``trylast`` the first registered runs first. The core registers installed plugins in entry-point
name order, then its built-in router (``trylast``), so the router is always the last ``route``.
SPEC §4's admission order comes from the markers: rate limits ``tryfirst``, policy rules, model
access and cache mode unmarked, budgets ``trylast``.

Per-request hooks may be ``def`` or ``async def``. A sync implementation runs on the event loop:
it must not block (no file or network I/O). Parameters are passed by name, and an implementation
may accept any subset of them. **Never give a hook parameter a default value**: pluggy never
passes defaulted parameters, so the core refuses such a plugin at start-up.

Request order (SPEC §4): ``authenticate`` → ``admit`` → ``pre_guardrail`` → ``route`` → dispatch
with fallback → ``post_guardrail`` / ``on_stream_chunk`` → ``account`` (always, also on failure
and client disconnect).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tollway._markers import hookspec

if TYPE_CHECKING:
    import click
    from quart import Quart

    from tollway._context import RequestContext
    from tollway._types import Credential, Principal, RouteTarget, Verdict
    from tollway.gateway import Gateway, ResponseView
    from tollway.provider import Provider
    from tollway.state import StateLocation


# --------------------------------------------------------------------------------------------
# Start-up: registration (called once, synchronously, while the gateway or CLI boots)
# --------------------------------------------------------------------------------------------


@hookspec
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register provider adapter classes.

    Called once at start-up. Call ``register(cls)`` for each :class:`tollway.provider.Provider`
    subclass the plugin ships; ``cls.type`` (``"openai"``, ``"anthropic"``, …) is the name used in
    provider configuration. Registering two classes for one type stops start-up naming both.
    """


@hookspec
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    """Declare a plugin's settings section.

    Called once at start-up, before configuration is validated. ``register(name, cls)`` declares
    that the config section ``[plugin.<name>]`` (TOML) is structured into ``cls``, an attrs class
    whose fields all have defaults. Unknown keys and wrong types in that section stop start-up
    with the path named. Read the result with ``gateway.settings.plugin(name)``.
    """


@hookspec
def register_guardrail_evaluators(register: Callable[[str, Any], None]) -> None:
    """Register guardrail evaluators by name (``"pii"``, ``"webhook"``, …).

    Called once at start-up. ``register(name, evaluator)`` where ``evaluator`` implements
    :class:`tollway.guardrails.Evaluator`. A key's ``guardrails`` config names evaluators
    (``"pre": ["pii"]``) or gives one inline (``{"evaluator": "webhook", "url": …}``); the
    guardrails plugin runs them. Two plugins registering one name stop start-up.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``tollway`` CLI (``cli.add_command(...)``). Called once."""


@hookspec
def register_routes(app: Quart, gateway: Gateway) -> None:
    """Add HTTP routes to the gateway's Quart app (``/metrics``, the embedded control plane's
    admin and internal APIs, …). Called once while the app is built.

    Routes must not shadow ``/v1/*``, ``/healthz``, ``/startupz`` or ``/readyz`` (start-up
    fails if they do). Errors should use the SPEC envelope (``gateway.error_response``).
    """


# --------------------------------------------------------------------------------------------
# Gateway lifecycle (called once per process; may be async)
# --------------------------------------------------------------------------------------------


@hookspec
def gateway_started(gateway: Gateway) -> None:
    """The gateway is about to accept traffic: open connections, start background tasks.

    Mode: **each**, may be async. An exception stops start-up naming the plugin. Keep what you
    create on ``gateway.stash``.
    """


@hookspec
def gateway_stopping(gateway: Gateway) -> None:
    """The gateway has drained; flush and close what ``gateway_started`` opened.

    Mode: **isolated**, may be async.
    """


@hookspec
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    """Return named readiness checks for ``/readyz``.

    Called once at start-up (sync). Each value is a callable (sync or async) returning ``None``
    or ``"ok"`` when healthy, or raising / returning a string starting ``error:`` or ``stale``
    when not; ``/readyz`` answers 503 naming the failing check.
    """


@hookspec
def describe_state(state: StateLocation, gateway: Gateway | None) -> dict[str, Any] | None:
    """Say where this plugin keeps its state, for ``tollway status`` and ``/readyz``.

    Called (sync) by ``tollway status`` with ``gateway=None``, and once by a gateway at start-up
    (after ``gateway_started``) with the gateway. ``state`` is the resolved
    :class:`tollway.state.StateLocation` (config file, data dir, their sources). Return a
    JSON-able ``dict`` (merged with other plugins'; prefix or nest under your own name) or
    ``None``. With ``gateway=None`` it must not create anything (no store, no file); with a
    gateway, what it returns is served on ``/readyz`` under ``"state"``: no secrets and no
    paths — an id or a kind, enough to compare with what ``tollway status`` finds locally.
    """


# --------------------------------------------------------------------------------------------
# Per request
# --------------------------------------------------------------------------------------------


@hookspec
def authenticate(ctx: RequestContext, credential: Credential) -> Principal | None:
    """Decide who the caller is.

    Called once per request after the key's format was checked (a malformed key never reaches
    this hook). Mode: **first**, may be async. Return a :class:`~tollway.Principal` to accept,
    ``None`` for "not mine, ask the next plugin", or raise :class:`tollway.InvalidAPIKey`
    (revoked, expired, …) to reject outright. When every plugin returns ``None`` the client gets
    401 ``invalid_api_key`` (code ``unknown_key``). Network-bound implementations should be
    ``trylast`` so in-memory ones answer first.
    """


@hookspec
def admit(ctx: RequestContext) -> None:
    """Admission control: rate limits, policy rules, model access, budget prechecks.

    Called after ``authenticate`` (``ctx.principal`` is set, ``ctx.body`` parsed). Mode:
    **each**, may be async. Raise a :class:`tollway.GatewayError` subclass to refuse
    (``RateLimitExceeded``, ``ToolNotAllowed``, ``ModelNotAllowed``, ``BudgetExceeded``, …).
    An implementation may rewrite the request with ``ctx.set_body(...)`` (e.g. a model alias)
    and add client headers to ``ctx.response_headers``. Something reserved here (a budget
    reservation, a TPM pre-debit) must be settled in ``account``, which always runs.
    SPEC order: rate limits (``tryfirst``), policy rules, model access, cache mode, budgets
    (``trylast``).
    """


@hookspec
def pre_guardrail(ctx: RequestContext) -> Verdict | None:
    """Judge the request before it is routed.

    Mode: **each**, may be async; the core runs them in order and stops at the first ``block``.
    Return ``None`` or ``Verdict("allow")`` to pass, ``Verdict("block", reason)`` to refuse with
    403 ``guardrail_blocked`` (the reason is the message), or rewrite the body with
    ``ctx.set_body(...)`` and return ``Verdict("modify")``. Raising
    :class:`tollway.ServiceUnavailable` is how an evaluator that failed closed reports it.
    """


@hookspec
def route(ctx: RequestContext) -> list[RouteTarget] | None:
    """Build the fallback chain for this request.

    Mode: **first**, may be async. Return the ordered list of :class:`~tollway.RouteTarget`
    (configured provider name + upstream model) to try, or ``None`` to defer to the next plugin.
    The core's built-in router (``trylast``) picks the configured providers that serve
    ``ctx.model`` for this endpoint. An empty list means no provider serves the model: 403
    ``model_not_allowed`` (code ``model_not_routable``).
    """


@hookspec
def before_attempt(ctx: RequestContext, target: RouteTarget) -> None:
    """Admit one provider attempt of the fallback chain (per-provider rate limits, breakers).

    Called before each attempt, after ``route``. Mode: **each**, may be async. Raise a
    :class:`tollway.GatewayError` (e.g. ``RateLimitExceeded``) to skip this provider: the
    dispatcher records the attempt as ``skipped`` (not counted in
    ``X-LangWatch-Fallback-Count``) and tries the next one; when every provider was skipped the
    last such error is the client's answer. The provider's configuration is
    ``ctx.gateway.instances[target.provider].config``. Anything taken here is settled in
    ``account`` (``ctx.attempts`` says which attempt served).
    """


@hookspec
def filter_models(ctx: RequestContext, models: list[str]) -> None:
    """Edit the ``GET /v1/models`` list in place: remove what the caller may not use, and
    add names it may (e.g. aliases; added ids are listed with ``owned_by: ""``).

    Mode: **each**, may be async.
    """


@hookspec
def post_guardrail(ctx: RequestContext, response: ResponseView) -> Verdict | None:
    """Judge a complete, non-streaming response before the client sees it.

    Mode: **each**, may be async. Same verdicts as ``pre_guardrail``; ``modify`` means the
    implementation called ``response.set_json(...)``. Streaming responses go through
    ``on_stream_chunk`` instead.
    """


@hookspec
def on_stream_chunk(ctx: RequestContext, chunk: bytearray) -> Verdict | None:
    """See each SSE event of a streaming response on its way to the client.

    **Synchronous only** and in-place: ``chunk`` holds one or more complete SSE events as they
    arrived; mutate it to rewrite what the client receives. Return ``Verdict("block", reason)``
    to end the stream with the terminal ``event: error`` frame (code ``stream_chunk_blocked``).
    Budget: a few microseconds — hand slow work to a task. This runs for every stream; a plugin
    that cares about some requests only appends a listener of the same signature to
    ``ctx.stream_listeners`` instead (from ``admit``, ``pre_guardrail`` or ``route``). With no
    implementation and no listeners the core never dispatches per chunk.
    """


@hookspec
def account(ctx: RequestContext) -> None:
    """The request is over: settle, record, export.

    Called exactly once per request that reached the gateway — success, error, client
    disconnect or mid-stream failure — after the client's response is complete, off the request
    path. Mode: **isolated**, may be async: a failing implementation is logged with its name and
    the others still run. ``ctx.usage`` holds the provider-reported usage (``None`` when no
    provider answered), ``ctx.status`` / ``ctx.error_type`` the outcome, ``ctx.attempts`` every
    provider attempt.
    """
