"""Tollway's hook specifications: the whole plugin contract, grouped by lifecycle phase.

``docs/hooks.md`` is generated from this module's docstrings by ``./run docs``
(``python docs/gen_hooks.py``): edit them here, then regenerate; ``tests/test_docs.py`` fails when
the two differ.

How hooks are called
--------------------

An implementation is a function (or method) named after the hook and marked with
``@tollway.hookimpl``. Arguments are passed **by name**, and an implementation may accept any
subset of the hook's parameters, in any order: ``def authenticate(credential)`` is valid.

Start-up hooks (``register_*``, ``readiness_checks``) are plain pluggy calls, made once and
synchronously. Request and lifecycle hooks are *not* called through pluggy's ``pm.hook``: the
core walks the implementations itself (``tollway._hooks``) so that ``async def``
implementations are awaited (pluggy's ``firstresult`` would return an un-awaited coroutine).
Each specification declares its call mode once, with ``@calls(...)`` in this module; the core's
caller reads that declaration, and the ``Call mode:`` line of each hook below states the same:

* **all**: a plain pluggy call. Every implementation runs; return values are collected where the
  hook says they are used. Implementations must be plain ``def`` functions.
* **first**: implementations run in call order until one returns something other than ``None``;
  that value is the result, and the rest do not run.
* **each**: every implementation runs in call order. The first one to raise stops the call; a
  ``tollway.GatewayError`` becomes the client's error response, any other exception a 500
  ``internal_error``.
* **isolated**: every implementation runs. An exception is logged
  (``hook_failed hook=… plugin=…``) and the others still run.

**Call order** is pluggy's. Implementations marked ``tryfirst=True`` run first, unmarked ones
next, those marked ``trylast=True`` last. Within the ``tryfirst`` and unmarked groups the most
recently registered runs first; within ``trylast`` the first registered runs first. The core
registers the installed plugins in alphabetical order of their entry-point names, then its
built-in router (``trylast``), so the router is always the last ``route`` implementation. State
the order you need with ``tryfirst`` / ``trylast`` instead of relying on names.

**Phases.** ``admit`` declares named phases that run in a fixed order, whatever the plugins are
called: an implementation says where it belongs with ``@hookimpl(phase="model")``. Within one
phase, pluggy's order applies. An implementation without a phase goes to the hook's default
phase, or to its first phase when marked ``tryfirst`` and to its last when marked ``trylast``.
A phase the hook does not declare stops start-up, naming the plugin.

A synchronous request-time implementation runs on the event loop: it must not block, so no file
or network I/O and no long computation. Use ``async def`` for I/O.

**Rules the core enforces at start-up**, refusing the plugin with its name:

* A hook parameter must not have a default value (``def authenticate(ctx, credential=None)``):
  pluggy never passes defaulted parameters, so the implementation would always see the default.
* A function marked ``@hookimpl`` must be named after a hook in this reference.
* ``on_stream_chunk`` must not be ``async def``.

The request pipeline
--------------------

A model call (``POST /v1/chat/completions``, ``/v1/messages``, ``/v1/responses`` or
``/v1/embeddings``) goes through these steps in this order. A refusal at any step skips the
steps after it (except ``account``) and answers with the gateway's error envelope
(`Errors <operator-guide.md#errors>`_).

1. The request gets its id (``grq_…``, the ``X-LangWatch-Request-Id`` header) and its trace
   context. A gateway that is shutting down answers 503 ``service_unavailable``, code
   ``draining``.
2. The key is taken from the first of ``Authorization: Bearer …``, ``x-api-key``, ``api-key``
   and ``x-goog-api-key`` that is present, and its format and checksum are checked: 401
   ``invalid_api_key`` with code ``missing_key``, ``malformed_key`` or ``bad_checksum``. No hook
   runs for a malformed key.
3. ``authenticate`` decides who is calling. **The body has not been read yet.**
4. The body is read: a ``Content-Length`` over ``SERVER_MAX_REQUEST_BODY_BYTES``, or a body
   that grows past it, is refused with 413 ``payload_too_large``; a ``Content-Encoding`` is
   decoded under the same cap (400 ``bad_request`` for data that cannot be decoded).
5. The body is parsed: it must be a JSON object with the endpoint's required fields, ``model``
   a non-empty string and ``stream`` a boolean (400 ``bad_request``). From here on
   ``ctx.body``, ``ctx.model`` and ``ctx.stream`` are set.
6. ``admit``, by phase: ``limits`` (rate limits), ``policy`` (policy rules, on the model as
   the client asked), ``model`` (model access: aliases, then ``models_allowed``), ``request``
   (other checks and request rewrites: cache mode), ``budget`` (budget reservations).
7. ``pre_guardrail``.
8. ``answer``: a plugin may answer the request itself (a response-cache hit, a mock, a canned
   refusal); then steps 9 and 10 are skipped and its answer goes on to step 11 like a
   provider's.
9. ``route`` builds the fallback chain (the built-in router orders it by the chain's routing
   strategy, :mod:`tollway.routing`); an empty chain is refused with 403
   ``model_not_allowed``, code ``model_not_routable``.
10. Dispatch, for each target of the chain until one answers: a credential cooling down after
    an upstream 429 is skipped, then the provider's circuit breaker (an open breaker skips the
    provider), then ``before_attempt``, then the provider call. The next target is tried after
    a connection error, a timeout, a 5xx, a 429 or a 404, never once the first byte of a stream
    has reached the client.
11. A complete response goes through ``post_guardrail``; a stream goes to the client event by
    event through ``on_stream_chunk``.
12. ``account`` runs once the client's response is complete, off the request path, for every
    model call, whatever its outcome: refusals at any step above and client disconnects
    included.

``GET /v1/models`` and ``GET /v1/models/{model}`` run steps 1 to 3, then ``filter_models``, then
``account``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tollway._markers import calls, hookspec

if TYPE_CHECKING:
    import click
    from quart import Quart

    from tollway._context import RequestContext
    from tollway._types import Credential, Principal, RouteTarget, Verdict
    from tollway.gateway import Gateway, ResponseView
    from tollway.ledger import Ledger
    from tollway.provider import Provider, ProviderResult
    from tollway.spans import SpanSink
    from tollway.state import StateLocation


#: The phases of ``admit``, in the order they run (see its docstring).
ADMIT_PHASES = ("limits", "policy", "model", "request", "budget")


# --------------------------------------------------------------------------------------------
# Start-up: registration (called once, synchronously, while the gateway or CLI boots)
# --------------------------------------------------------------------------------------------


@hookspec
@calls("all", sync_only=True)
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register provider adapter classes.

    Called once at start-up, by the gateway and by ``tollway config show``, before the
    configured providers are built.

    Call mode: **all**, synchronous: every implementation runs.

    After every plugin has registered, each configured provider is built with the class of its
    ``type``; a provider whose type no plugin registered stops start-up, naming the installed
    types.

    Chat is the hub: a class whose native formats include ``"chat"`` (its ``endpoints`` when
    ``native_endpoints`` is not set) but not ``"messages"`` also serves Anthropic clients —
    the core translates their requests to chat before ``send()`` and the answers back — and a
    Messages-native class serves OpenAI chat clients the same way. A class serving chat (any
    way) but not ``"responses"`` also serves OpenAI Responses API clients, through chat.
    ``core_translation = False`` on the class turns that off.

    :param register: ``register(cls)``, to call once for each subclass of
        ``tollway.provider.Provider`` the plugin ships. The class attribute ``cls.type``
        (``"openai"``, ``"anthropic"``, …) is the value of ``type`` in a ``[[providers]]``
        table. Registering the same class twice is harmless.
    :returns: nothing.
    :raises tollway.plugins.PluginLoadError: raised by ``register`` (start-up stops) when a
        class has an empty ``type``, or when two different classes are registered for one type
        (the message names both modules).
    """


@hookspec
@calls("all", sync_only=True)
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    """Declare a plugin's settings section.

    Called once at start-up, after the core configuration is loaded and before the plugin
    sections are validated.

    Call mode: **all**, synchronous: every implementation runs.

    The section ``[plugin.<name>]`` of the TOML file is structured into the class given. Unknown
    keys and values of the wrong type stop start-up with the path named
    (``plugin.<name>: extra fields found (wrods) @ …``); so does a ``[plugin.<name>]`` section
    that no plugin registered. Read the structured value with ``gateway.settings.plugin(name)``
    (from a request: ``ctx.gateway.settings.plugin(name)``). ``tollway config show`` prints it,
    with values under keys containing ``secret``, ``password``, ``token`` or ``pepper`` masked.

    :param register: ``register(name, cls)`` declares that ``[plugin.<name>]`` is structured
        into ``cls``: an attrs class (preferably ``@attrs.frozen``) whose fields all have
        defaults, so that an absent section yields the defaults.
    :returns: nothing.
    :raises tollway.plugins.PluginLoadError: raised by ``register`` (start-up stops) when two
        plugins register the same name.
    """


@hookspec
@calls("all", sync_only=True)
def register_guardrail_evaluators(register: Callable[[str, Any], None]) -> None:
    """Register guardrail evaluators by name (``"pii"``, ``"webhook"``, …).

    Called by the ``tollway-guardrails`` plugin, not by the core: once when the gateway starts,
    and by the control plane when it validates a key's ``guardrails`` config on write (an
    unknown evaluator name is refused there, naming the installed ones).

    Call mode: **all**, synchronous: every implementation runs.

    A key's ``guardrails`` config names evaluators (``"pre": ["pii"]``) or gives one inline
    (``{"evaluator": "webhook", "url": …}``), and the guardrails plugin runs them.

    :param register: ``register(name, evaluator)``, where ``evaluator`` implements
        ``tollway.guardrails.Evaluator`` (an ``async def evaluate(request)`` method).
    :returns: nothing.
    :raises ValueError: raised by ``register`` (start-up stops) when two plugins register the
        same name, the name is empty, or the object has no ``evaluate`` method.
    """


@hookspec
@calls("all", sync_only=True)
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``tollway`` CLI.

    Called once each time the ``tollway`` command starts, before its arguments are parsed. The
    simulator adds ``simulate`` this way, the control plane ``virtual-keys``,
    ``model-providers`` and the other store commands.

    Call mode: **all**, synchronous: every implementation runs.

    The plugin selection (``TOLLWAY_PLUGINS``, ``TOLLWAY_DISABLE_PLUGINS``,
    ``TOLLWAY_OPTIONAL_PLUGINS``, and the ``[plugins]`` table of the file named by
    ``TOLLWAY_CONFIG``) applies. A plugin that fails to import is left out and the others still
    add their commands; when the plugins cannot be loaded at all (a plugin breaking the rules
    above, two distributions with one entry-point name), the CLI prints a warning and adds no
    plugin command. The core commands work either way, and ``serve`` and ``plugins`` report the
    failure.

    :param cli: the root ``click.Group``; call ``cli.add_command(command)``.
    :returns: nothing.
    :raises: nothing by contract; an exception ends the ``tollway`` command with a traceback.
    """


@hookspec
@calls("all", sync_only=True)
def register_routes(app: Quart, gateway: Gateway) -> None:
    """Add HTTP routes to the gateway's Quart application.

    Called once while the application is built, before the server starts. The telemetry plugin
    adds ``/metrics`` this way, the embedded control plane its admin and internal APIs.

    Call mode: **all**, synchronous: every implementation runs.

    Routes added here are not authenticated by the core: check credentials in the route. Error
    responses should use the gateway's error envelope
    (``gateway.error_response(ctx, exc)``).

    :param app: the ``quart.Quart`` application.
    :param gateway: the ``tollway.gateway.Gateway``.
    :returns: nothing.
    :raises tollway.plugins.PluginLoadError: raised by the core (start-up stops) when a route
        takes over a path the core owns: anything under ``/v1/``, ``/healthz``, ``/startupz``
        and ``/readyz``.
    """


@hookspec
@calls("all", sync_only=True)
def register_span_sinks(register: Callable[[SpanSink], None], gateway: Gateway) -> None:
    """Offer an in-process destination for this gateway's own request spans.

    Called once, on first use of :func:`tollway.spans.span_sinks` (the telemetry plugin calls it
    from ``gateway_started``; ``gateway.stash`` may not hold your started state yet, so look it
    up when a batch arrives). ``register(sink)`` with a :class:`tollway.spans.SpanSink`. A span
    producer uses the first registered sink when no OTLP endpoint is configured (the embedded
    control plane registers one, so ``tollway serve`` keeps its own spans).

    Call mode: **all**, synchronous: every implementation runs.

    :param register: call it with a :class:`tollway.spans.SpanSink` to offer that sink.
    :param gateway: the gateway whose spans the sink receives.
    :returns: nothing; register sinks through ``register``.
    :raises TypeError: (raised by the core) when something other than a ``SpanSink`` is
        registered; start-up stops with the plugin's name.
    """


@hookspec
@calls("all", sync_only=True)
def register_ledgers(register: Callable[[Ledger], None], gateway: Gateway) -> None:
    """Offer an in-process spend ledger, so that spend is recorded without HTTP to this process.

    Called once, on first use of :func:`tollway.ledger.ledgers` (the budgets plugin calls it
    from ``gateway_started``; ``gateway.stash`` may not hold your started state yet, so look it
    up when a call arrives). ``register(ledger)`` with a :class:`tollway.ledger.Ledger`. A spend
    writer uses the first registered ledger, and its HTTP client to a standalone control plane
    when there is none (the embedded control plane registers one when this gateway serves its
    own, and nothing when ``LW_GATEWAY_BASE_URL`` points elsewhere).

    Call mode: **all**, synchronous: every implementation runs.

    :param register: call it with a :class:`tollway.ledger.Ledger` to offer that ledger.
    :param gateway: the gateway whose spend the ledger records.
    :returns: nothing; register ledgers through ``register``.
    :raises TypeError: (raised by the core) when something other than a ``Ledger`` is
        registered; start-up stops with the plugin's name.
    """


# --------------------------------------------------------------------------------------------
# Gateway lifecycle (called once per process)
# --------------------------------------------------------------------------------------------


@hookspec
@calls("each")
def gateway_started(gateway: Gateway) -> None:
    """The gateway is about to accept traffic: open connections, load data, start tasks.

    Called once per gateway process when the server starts, before the first request is served
    and before ``/startupz`` answers 200. Not called by ``tollway config show``.

    Call mode: **each**, may be ``async def``.

    Keep what you create on ``gateway.stash`` under a ``StashKey``, so that request hooks can
    reach it through ``ctx.gateway.stash``. Reading files here is acceptable: no request is
    being served yet.

    :param gateway: the ``tollway.gateway.Gateway``; ``gateway.settings`` is the validated
        configuration.
    :returns: nothing.
    :raises Exception: any exception stops start-up: the process exits with status 1 and the
        error is logged naming the plugin. Put the setting at fault in the message, since that
        is what the operator reads.
    """


@hookspec
@calls("isolated")
def gateway_stopping(gateway: Gateway) -> None:
    """The gateway has drained: flush and close what ``gateway_started`` opened.

    Called once, after the server stopped accepting connections, the requests in progress have
    finished (or ``SERVER_GRACEFUL_SECONDS`` ran out) and pending ``account`` calls have
    completed (within the same limit). The shared upstream HTTP client is closed afterwards.

    Call mode: **isolated**, may be ``async def``.

    :param gateway: the ``tollway.gateway.Gateway``.
    :returns: nothing.
    :raises Exception: logged with the plugin's name (``hook_failed``); the other
        implementations still run and the process still exits normally.
    """


@hookspec
@calls("all", sync_only=True)
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    """Return named readiness checks for ``/readyz``.

    Called once at start-up, after ``gateway_started``.

    Call mode: **all**, synchronous: every implementation runs, and their dictionaries are
    merged, a later name replacing an earlier one (so prefix names with your plugin's).

    Each check is a callable without arguments, synchronous or ``async``, called on every
    ``/readyz`` request. What it gives decides what ``/readyz`` reports for it:

    * ``None``, ``True`` or ``"ok"``: reported as ``"ok"``;
    * a string starting ``error`` or ``stale``: that string, and the gateway is not ready;
    * another string (for example ``degraded: …``): that string, and the gateway stays ready;
    * an exception: ``"error: <exception>"``, not ready;
    * an ``async`` check that takes over 2 seconds: ``"error: "``, not ready.

    When any check fails, ``/readyz`` answers 503 with ``{"status":"error","checks":{...}}``.
    A synchronous check runs on the event loop and has no time limit: keep it to reading a
    value.

    :param gateway: the ``tollway.gateway.Gateway``, already started.
    :returns: a ``dict`` mapping a check name to its callable, or ``None`` for no check.
    :raises: nothing by contract; an exception stops start-up.
    """


@hookspec
@calls("all", sync_only=True)
def describe_state(state: StateLocation, gateway: Gateway | None) -> dict[str, Any] | None:
    """Say where this plugin keeps its state, for ``tollway status`` and ``/readyz``.

    Called (sync) by ``tollway status`` with ``gateway=None``, and once by a gateway at start-up
    (after ``gateway_started``) with the gateway. ``state`` is the resolved
    :class:`tollway.state.StateLocation` (config file, data dir, their sources). Return a
    JSON-able ``dict`` (merged with other plugins'; prefix or nest under your own name) or
    ``None``. With ``gateway=None`` it must not create anything (no store, no file); with a
    gateway, what it returns is served on ``/readyz`` under ``"state"``: no secrets and no
    paths — an id or a kind, enough to compare with what ``tollway status`` finds locally.

    With ``gateway=None``, an entry that is a ``dict`` with a ``"using"`` string is printed by
    ``tollway serve`` and ``tollway status`` (``using …``); one with a ``"page"`` path
    (``"/console/"``; optional ``"label"`` and ``"note"``) is a web page this plugin serves on
    the gateway's port: ``tollway serve`` prints ``label: http://host:port/path (note)`` once
    it listens.

    Call mode: **all**, synchronous: every implementation runs.

    :param state: where the command or gateway keeps state (config file, data dir, sources).
    :param gateway: the running gateway, or ``None`` when ``tollway status`` asks.
    :returns: a JSON-able ``dict`` describing this plugin's state, or ``None``.
    :raises Exception: nothing is expected; an exception is reported by ``tollway status``
        and at start-up like any plugin error.
    """


# --------------------------------------------------------------------------------------------
# Per request
# --------------------------------------------------------------------------------------------


@hookspec
@calls("first")
def authenticate(ctx: RequestContext, credential: Credential) -> Principal | None:
    """Decide who the caller is.

    Called once per model call and per ``GET /v1/models``, **before the request body is
    read** (step 3 of the pipeline): the key's header was found and its format and checksum
    were checked (a malformed key never reaches this hook), and nothing else. ``ctx.raw_body``
    is still empty, ``ctx.body`` and ``ctx.model`` are not set; ``ctx.headers``, ``ctx.path``
    and ``ctx.endpoint`` are. A caller without a valid key is thus refused before its body is
    read or size-checked.

    Call mode: **first**, may be ``async def``. When every implementation returns ``None``, the
    client gets 401 ``invalid_api_key`` with code ``unknown_key``. Implementations that make
    network calls should be ``trylast``, so that in-memory ones answer first.

    :param ctx: the request's ``tollway.RequestContext``.
    :param credential: a ``tollway.Credential``: ``credential.secret`` is the key as presented
        (the ``Bearer`` scheme removed), ``credential.header`` the lower-case name of the header
        it came in (``authorization``, ``x-api-key``, ``api-key`` or ``x-goog-api-key``),
        ``credential.display_prefix`` its first 18 characters, which are safe to log. Never log
        the whole secret.
    :returns: a ``tollway.Principal`` to accept the key (the core stores it as
        ``ctx.principal``; its ``chain`` may carry the key's own provider chain, which the
        built-in router then uses instead of the configured providers), or ``None`` for "not one
        of mine": the next implementation is asked.
    :raises tollway.InvalidAPIKey: to refuse the key outright (disabled, revoked, expired; pass
        ``code=``, for example ``key_disabled``): 401 to the client.
    :raises tollway.ServiceUnavailable: when the key store cannot be reached: 503.
    """


@hookspec
@calls("each", phases=ADMIT_PHASES, default_phase="request")
def admit(ctx: RequestContext) -> None:
    """Admission control: rate limits, policy rules, model access, budget prechecks.

    Called once per model call, after ``authenticate`` and after the body was read and parsed:
    ``ctx.principal``, ``ctx.body``, ``ctx.model`` and ``ctx.stream`` are set. Not called for
    ``GET /v1/models``.

    Call mode: **each**, may be ``async def``, by phase. The phases run in this order, whatever
    the plugins are named; declare yours with ``@hookimpl(phase="…")``:

    1. ``limits``: rate limits (``tollway-rate-limits``), so every request counts and the
       cheapest refusal comes first. An unphased ``tryfirst`` implementation runs here.
    2. ``policy``: judge the request as the client sent it (``tollway-policy-rules``; it sees
       the model the client asked for, before any alias).
    3. ``model``: resolve and authorise the model (``tollway-model-access``: ``model_aliases``,
       then ``models_allowed``). Later phases see the resolved ``ctx.model``.
    4. ``request``: other checks and request rewrites (``tollway-cache-passthrough``'s cache
       mode). An unphased, unmarked implementation runs here.
    5. ``budget``: reservations, after every check that may refuse
       (``tollway-budgets``). An unphased ``trylast`` implementation runs here.

    An implementation may change the model by assigning ``ctx.model`` (an alias, for example):
    the router reads it, and the core writes it into the upstream body once, when a provider is
    called, leaving ``ctx.body`` as the client sent it. It may rewrite the rest of the request
    with ``ctx.set_body(new_body)`` (the provider then receives the re-serialised body instead of
    the client's bytes), and may add headers to the client's response, errors included, through
    ``ctx.response_headers``. Anything reserved here (a budget reservation, a tokens-per-minute
    pre-debit) must be settled in ``account``, which always runs.

    :param ctx: the request's ``tollway.RequestContext``.
    :returns: nothing: returning lets the request pass.
    :raises tollway.GatewayError: a subclass, to refuse the request: ``RateLimitExceeded`` (429;
        pass ``retry_after=`` seconds to send ``Retry-After``), ``ToolNotAllowed`` (403),
        ``ModelNotAllowed`` (403), ``BudgetExceeded`` (402), ``BadRequest`` (400),
        ``ServiceUnavailable`` (503). The later implementations do not run.
    """


@hookspec
@calls("each")
def pre_guardrail(ctx: RequestContext) -> Verdict | None:
    """Judge the request before it is routed.

    Called once per model call, after ``admit``.

    Call mode: **each**, may be ``async def``; the core collects the verdicts in call order and
    stops at the first ``block``.

    :param ctx: the request's ``tollway.RequestContext``.
    :returns: ``None`` or ``Verdict("allow")`` to let the request pass;
        ``Verdict("block", reason)`` to refuse it with 403 ``guardrail_blocked``, the reason
        being the message (without one: ``blocked by guardrail <name>``, the verdict's
        ``evaluator`` or else the plugin's name); ``Verdict("modify")`` after rewriting the body
        with ``ctx.set_body(...)``. Anything else is a plugin bug and answers 500.
    :raises tollway.ServiceUnavailable: when the evaluator could not decide and the plugin fails
        closed: 503.
    """


@hookspec
@calls("first")
def answer(ctx: RequestContext) -> ProviderResult | None:
    """Answer the request without calling a provider: a cache hit, a mock, a canned refusal.

    Called once per model call, after ``pre_guardrail`` and before ``route``: the request has
    been admitted and judged, ``ctx.model`` is the resolved model. The core walks the
    implementations only when a plugin implements the hook.

    Call mode: **first**, may be ``async def``. The first answer wins; no route is built and no
    provider, circuit breaker or ``before_attempt`` is involved. The answer then takes the same
    path as a provider's: a complete body goes through ``post_guardrail``, a stream to the
    client event by event through ``on_stream_chunk`` and ``ctx.stream_listeners``, with the
    same response headers, and ``account`` runs. The core sets ``ctx.answered_by`` to the
    plugin's name and the span attribute ``langwatch.answered_by``; ``ctx.attempts`` stays
    empty. Say what happened on the response with ``ctx.response_headers`` (the response cache
    sends ``X-LangWatch-Cache: hit``), and set ``ctx.usage`` (``Usage()`` when no tokens were
    spent, so budgets and token limits charge nothing) and, if you want ``X-LangWatch-Provider``
    and ``X-LangWatch-Model`` on the response, ``ctx.provider``, ``ctx.provider_type`` and
    ``ctx.resolved_model``.

    :param ctx: the request's ``tollway.RequestContext``.
    :returns: a ``tollway.provider.ProviderResult`` to answer with (``status``, ``headers``, and
        ``body`` bytes or ``events``, an async iterator of complete SSE events, for a stream),
        or ``None`` to let the next implementation, and then the providers, answer. Anything
        else is a plugin bug and answers 500.
    :raises tollway.GatewayError: to refuse the request with that error.
    """


@hookspec
@calls("first")
def route(ctx: RequestContext) -> list[RouteTarget] | None:
    """Build the fallback chain for this request.

    Called once per model call, after ``answer`` when no plugin answered.

    Call mode: **first**, may be ``async def``. The core's built-in router is ``trylast``, so
    any plugin's implementation is asked first. It uses ``ctx.principal.chain`` when the key
    carries one, otherwise every configured provider in priority order; it applies a
    ``provider/model`` qualifier, then keeps the providers that serve the endpoint and the model
    (a chain entry with a pinned model is kept whatever the model).

    :param ctx: the request's ``tollway.RequestContext``.
    :returns: the ordered list of ``tollway.RouteTarget(provider, model)`` to try, or ``None``
        to leave the decision to the next implementation. ``provider`` is a provider adapter's
        key (its ``id``, which defaults to its ``name``; ``gateway.instances`` maps keys to
        adapters); ``model`` is the model id to send to that provider (when it differs from the
        client's, the adapter rewrites the body's ``model``). Each target's provider must serve
        ``ctx.endpoint``. An empty list means no provider serves the model: the client gets 403
        ``model_not_allowed`` with code ``model_not_routable``, naming the model.
    :raises tollway.GatewayError: to refuse the request with that error.
    """


@hookspec
@calls("each")
def before_attempt(ctx: RequestContext, target: RouteTarget) -> None:
    """Admit one provider attempt of the fallback chain: per-provider rate limits, breakers.

    Called before each attempt, after ``route``; a provider whose built-in circuit breaker is
    open is skipped before this hook. The provider's configuration is
    ``ctx.gateway.instances[target.provider].config``. Anything taken here (a rate-limit token)
    is settled in ``account``; ``ctx.attempts`` says which attempt served.

    Call mode: **each**, may be ``async def``.

    :param ctx: the request's ``tollway.RequestContext``.
    :param target: the ``tollway.RouteTarget`` about to be tried.
    :returns: nothing: returning lets the attempt go ahead.
    :raises tollway.GatewayError: (for example ``RateLimitExceeded``) to skip this provider: the
        attempt is recorded in ``ctx.attempts`` with outcome ``skipped``, it is not counted in
        ``X-LangWatch-Fallback-Count``, and the next target is tried. When every target was
        skipped, the last error raised here is the client's answer.
    """


@hookspec
@calls("each")
def filter_models(ctx: RequestContext, models: list[str]) -> None:
    """Edit the ``GET /v1/models`` list: remove what the caller may not use, add what it may.

    Called for ``GET /v1/models``, after ``authenticate``, with the model ids the configured
    providers offer, in priority order; for ``GET /v1/models/{model}`` with that one model
    when a provider the key reaches serves it (else empty), which is shown only if it remains.
    The response lists what remains; ids a plugin added (aliases, for example) are listed with
    ``owned_by: ""``.

    Call mode: **each**, may be ``async def``.

    :param ctx: the request's ``tollway.RequestContext`` (``ctx.principal`` is set, there is no
        body).
    :param models: the list to edit in place (``models[:] = [m for m in models if ...]``).
    :returns: nothing; a return value is ignored.
    :raises tollway.GatewayError: to answer that error instead of the list.
    """


@hookspec
@calls("each")
def post_guardrail(ctx: RequestContext, response: ResponseView) -> Verdict | None:
    """Judge a complete, non-streaming response before the client sees it.

    Called once per successful non-streaming model call, after the provider answered. Provider
    errors and streaming responses do not reach it (streams go through ``on_stream_chunk``).
    The core only calls it when at least one plugin implements it.

    Call mode: **each**, may be ``async def``; stops at the first ``block``, as
    ``pre_guardrail``.

    :param ctx: the request's ``tollway.RequestContext``; ``ctx.usage`` holds the provider's
        usage.
    :param response: a ``ResponseView``: ``response.status``, ``response.body`` (bytes),
        ``response.json`` (parsed on first use) and ``response.set_json(value)``, which replaces
        the body the client receives.
    :returns: the same verdicts as ``pre_guardrail``. ``Verdict("block", reason)`` answers 403
        ``guardrail_blocked`` instead of the response (the provider call has been made and its
        usage is accounted); ``Verdict("modify")`` means the implementation called
        ``response.set_json(...)``.
    :raises tollway.GatewayError: to answer that error instead of the response
        (``ServiceUnavailable`` when an evaluator failed closed).
    """


@hookspec
@calls("each", sync_only=True)
def on_stream_chunk(ctx: RequestContext, chunk: bytearray) -> Verdict | None:
    """See a streaming response on its way to the client, chunk by chunk.

    Called for each chunk the provider sends, after the adapter's own processing (such as
    removing the usage chunk the gateway asked for), on the event loop. This runs once per chunk
    of **every** stream, so it must take microseconds: hand slow work to a task. A plugin that
    cares about some requests only should instead append a listener with the same signature to
    ``ctx.stream_listeners`` in an earlier hook (``admit``, ``pre_guardrail``, ``route``): then
    other streams pay nothing. When no plugin implements the hook and a request has no
    listeners, the core skips per-chunk dispatch entirely.

    A plugin that must **wait** before a chunk is relayed (a guardrail asking a network
    evaluator) or hold text back appends a ``tollway.StreamFilter`` to ``ctx.stream_filters``
    instead: the core awaits its ``feed(ctx, chunk)`` for each chunk after the listeners and
    relays the bytes it returns (``b""`` holds everything back; a ``Verdict("block", reason)``
    ends the stream as below), then awaits its ``end(ctx)`` once when the upstream stream ends
    or is cut, and relays what was held before anything else (such as the mid-stream error
    frame). Filters run in the order they were appended, each one's output feeding the next;
    keep your own time budget. A filter that raises fails open: it is removed, the chunk and
    what ``end`` still returns are relayed, and ``guardrail_fail_open direction=stream_chunk``
    is logged. Requests without filters pay nothing for them.

    Call mode: **each**, synchronous only (an ``async def`` implementation stops start-up);
    stops at the first ``block``.

    :param ctx: the request's ``tollway.RequestContext``.
    :param chunk: a ``bytearray`` holding one or more complete server-sent events, each ending
        with its blank line, as received. Mutate it in place (``chunk[:] = new_bytes``) to change
        what the client receives.
    :returns: ``Verdict("block", reason)`` to end the stream: the client receives a final
        ``event: error`` frame with type ``guardrail_blocked`` and code ``stream_chunk_blocked``,
        and the provider's connection is closed. ``None`` (or any other verdict) passes the chunk
        on.
    :raises Exception: logged (``guardrail_fail_open direction=stream_chunk``) and the chunk
        passes unchanged: stream guardrails fail open by contract.
    """


@hookspec
@calls("isolated")
def account(ctx: RequestContext) -> None:
    """The request is over: settle reservations, record usage, export.

    Called exactly once for every model call and every ``GET /v1/models`` call, whatever
    happened: success, a refusal at any step (a 401 included), a provider error, a client
    disconnect or a failure mid-stream. It runs after the client's response is complete (for a
    stream, after its last byte), in a background task, off the request path. On shutdown the
    gateway waits for pending calls up to ``SERVER_GRACEFUL_SECONDS``.

    Call mode: **isolated**, may be ``async def``.

    What the context holds at this point:

    * ``ctx.status``: the HTTP status sent to the client; 499 when the client left before a
      response; 200 for a stream, even one that failed later.
    * ``ctx.error_type``: ``None`` on success; the error ``type`` the gateway answered;
      ``upstream_error`` when a provider error passed through; ``provider_error`` or
      ``guardrail_blocked`` when a stream ended with ``event: error``. ``ctx.error_message`` is
      the message that went with it.
    * ``ctx.usage``: a ``tollway.Usage`` as the provider reported it, or ``None`` when no
      provider answered.
    * ``ctx.attempts``: every provider of the chain that was reached, in order:
      ``Attempt(provider, provider_type, model, outcome, status, reason, duration_s)`` with
      outcome ``ok``, ``error``, ``skipped`` (by ``before_attempt``) or ``circuit_open``
      (skipped by the breaker, not called).
    * ``ctx.provider``, ``ctx.provider_type``, ``ctx.resolved_model``: the last provider tried
      and the model it was asked for.
    * ``ctx.principal``: the key, or ``None`` when authentication failed.
    * ``ctx.stream_chunks``, ``ctx.terminated_at_chunk``, ``ctx.client_disconnected``: how a
      stream went.
    * ``ctx.started``, ``ctx.finished``, ``ctx.first_byte_at``, ``ctx.upstream_wait_s``: timings
      (``time.perf_counter()`` values and seconds).

    :param ctx: the request's ``tollway.RequestContext``, complete.
    :returns: nothing.
    :raises Exception: logged with the plugin's name (``hook_failed``); the other
        implementations still run and the client, already answered, sees nothing.
    """
