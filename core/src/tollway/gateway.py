"""The gateway: the request pipeline and the Quart application around it.

The pipeline (:meth:`Gateway.handle`) is written against a small request shape so the framework
adapter stays thin: parse once, call the hooks in SPEC §4 order, dispatch with fallback, relay.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import orjson
import pluggy
from quart import Quart, Response, has_websocket_context, request, websocket
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from tollway import __version__
from tollway._body import BadEncoding, BodyReader, BodyTooLarge, decode_body, effective_limit
from tollway._breaker import Breaker
from tollway._context import CHAT, EMBEDDINGS, MESSAGES, MODELS, RESPONSES, RequestContext, Stash
from tollway._errors import (
    _NO_RETRY_STATUSES,
    BadRequest,
    GatewayError,
    GuardrailBlocked,
    InternalError,
    InvalidAPIKey,
    ModelNotAllowed,
    PayloadTooLarge,
    ProviderError,
    RequestHeadersTooLarge,
    ServiceUnavailable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamTimeoutError,
)
from tollway._hooks import Hooks
from tollway._ids import new_span_id, new_trace_id, parse_traceparent, request_id
from tollway._input import (
    MAX_MODEL_CHARS,
    duplicate_key,
    header_problem,
    header_value,
    model_problem,
    quote_input,
)
from tollway._logging import request_id_var
from tollway._markers import hookimpl
from tollway._netcheck import Netcheck, NetTarget, parse_hostport
from tollway._plugins import PluginInfo, PluginLoadError, build_plugin_manager, provider_classes
from tollway._qualified import parse_qualified_model
from tollway._sse import error_event
from tollway._types import Attempt, Credential, Principal, RouteTarget
from tollway.config import PROVIDER_HINT, ProviderConfig, Settings, structure_plugin_settings
from tollway.egress import Egress
from tollway.keys import KeyFormatError, check_key_format
from tollway.outbound import ALLOW_CIDRS_ENV, OutboundPolicy
from tollway.provider import Provider, ProviderResult, UpstreamHTTP, outbound_problems
from tollway.state import StateLocation

__all__ = ["Gateway", "ResponseView", "create_app"]

log = logging.getLogger("tollway.gateway")

#: Printable ASCII kept as is in a header value; anything else is percent-encoded.
_HEADER_SAFE = " !#$&'()*+,/:;=?@[]~"
_KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_REQUIRED: dict[str, tuple[str, ...]] = {
    CHAT: ("model", "messages"),
    MESSAGES: ("model", "messages"),
    RESPONSES: ("model",),
    EMBEDDINGS: ("model", "input"),
}
_ENDPOINT_PATHS = {
    "/v1/chat/completions": CHAT,
    "/v1/messages": MESSAGES,
    "/v1/responses": RESPONSES,
    "/v1/embeddings": EMBEDDINGS,
}


@attrs.define
class ResponseView:
    """A complete non-streaming response as ``post_guardrail`` sees it."""

    status: int
    body: bytes
    _json: Any = None
    modified: bool = False

    @property
    def json(self) -> Any:
        if self._json is None:
            self._json = orjson.loads(self.body)
        return self._json

    def set_json(self, value: Any) -> None:
        """Replace the response body (the client receives the re-serialisation)."""
        self._json = value
        self.body = orjson.dumps(value)
        self.modified = True


class _Router:
    """Built-in ``route``: the key's chain (:meth:`Gateway.chain`) filtered to the providers that
    serve the model on this endpoint."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @hookimpl(trylast=True)
    def route(self, ctx: RequestContext) -> list[RouteTarget]:
        model = ctx.model
        endpoint = ctx.endpoint
        entries = self.gateway.chain(ctx.principal, endpoint)
        qualified = parse_qualified_model(model)
        if qualified is not None:
            named = [(p, m) for p, m in entries if qualified.names(p.type, p.name)]
            if named:
                entries, model = named, qualified.model
        return [
            RouteTarget(p.key, pinned or model)
            for p, pinned in entries
            if endpoint in p.endpoints and (pinned is not None or p.serves(model))
        ]


class Gateway:
    """One gateway process: settings, plugins, providers and the request pipeline."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_plugins: list[tuple[str, object]] | None = None,
        load_installed: bool = True,
    ) -> None:
        self.settings = settings
        #: Where this gateway's state is (``tollway serve`` sets the resolved one).
        self.state = StateLocation.from_settings(settings)
        #: What plugins report about it (``describe_state``), served on ``/readyz``.
        self.state_report: dict[str, Any] = {}
        self.stash = Stash()
        #: The Quart app serving this gateway (set by ``create_app``).
        self.app: Any = None
        self.started = False
        self.draining = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._daemons: set[asyncio.Task[Any]] = set()
        self.in_flight = 0
        self.streaming_active = 0
        #: Circuit breakers by provider key.
        self.breakers: dict[str, Breaker] = {}
        self.pm, self.plugin_infos = build_plugin_manager(
            settings.plugins,
            builtins=[("tollway.router", _Router(self))],
            extra=extra_plugins or [],
            load_installed=load_installed,
        )
        self.settings = self._plugin_settings(self.pm, settings)
        #: The SSRF guard of every outbound URL (providers, and plugins' webhooks/endpoints).
        self.outbound: OutboundPolicy = settings.outbound_policy()
        self.hooks = Hooks(self.pm)
        self.provider_classes = provider_classes(self.pm)
        self.providers = self._build_providers()
        self.providers_in_order = sorted(self.providers.values(), key=lambda p: p.config.priority)
        #: Every adapter instance by :attr:`Provider.key`, including ones built from key bundles.
        self.instances: dict[str, Provider] = {p.key: p for p in self.providers.values()}
        server = settings.server
        outbound = settings.outbound
        #: The outbound proxy settings; plugins calling the outside world use them too.
        self.egress = Egress(
            proxy=outbound.proxy or None,
            https_proxy=outbound.https_proxy or None,
            http_proxy=outbound.http_proxy or None,
            no_proxy=outbound.no_proxy or None,
        )
        self.http = UpstreamHTTP(
            server.upstream_connect_timeout_seconds,
            server.upstream_timeout_seconds,
            public_only=settings.environment != "local",
            egress=self.egress,
            policy=self.outbound,
        )
        self.netcheck = Netcheck.of(
            self._netcheck_targets(),
            server.netcheck_timeout_seconds,
            server.netcheck_retry_seconds,
        )
        self.max_body = effective_limit(server.max_request_body_bytes)
        #: ``LW_LOG_MESSAGE_BODY``: request and non-streaming response bodies go to the log.
        self.log_bodies = settings.log.message_body
        self.checks: dict[str, Callable[[], Any]] = {}
        #: Called (sync) once start-up finished and the gateway accepts traffic.
        self.on_started: list[Callable[[], None]] = []

    # --- start-up -----------------------------------------------------------------------

    @staticmethod
    def _plugin_settings(pm: pluggy.PluginManager, settings: Settings) -> Settings:
        registered: dict[str, type[Any]] = {}

        def register(name: str, cls: type[Any]) -> None:
            if name in registered:
                raise PluginLoadError(f"two plugins registered settings named {name!r}")
            registered[name] = cls

        pm.hook.register_settings(register=register)
        return structure_plugin_settings(settings, registered)

    def _build_providers(self) -> dict[str, Provider]:
        from tollway.config import ConfigError

        providers: dict[str, Provider] = {}
        errors: list[str] = []
        for i, cfg in enumerate(self.settings.providers):
            cls = self.provider_classes.get(cfg.type)
            if cls is None:
                known = ", ".join(sorted(self.provider_classes)) or "none installed"
                errors.append(
                    f"providers[{i}].type: no provider adapter of type {cfg.type!r} is installed "
                    f"(installed: {known}); pip install tollway-provider-{cfg.type}"
                )
                continue
            provider = cls(cfg)
            errors.extend(f"providers[{i}]: {line}" for line in provider.validate())
            errors.extend(
                f"providers[{i}].{line}"
                for line in self.outbound_problems(provider, operator_owned=True)
            )
            providers[cfg.name] = provider
        if errors:
            raise ConfigError(errors)
        return providers

    def _netcheck_targets(self) -> list[NetTarget]:
        """``SERVER_NETCHECK_HOSTS``, else every configured provider's host — or the host of
        the proxy it is reached through."""
        hosts = self.settings.server.netcheck_hosts
        if hosts is not None:
            return [NetTarget(*parse_hostport(h), why="SERVER_NETCHECK_HOSTS") for h in hosts]
        targets = []
        for p in self.providers_in_order:
            if not p.base_url:
                continue
            choice = self.egress.for_provider(p.base_url, p.config.config)
            proxy = choice.hostport()
            if proxy is not None:
                targets.append(NetTarget(*proxy, why=f"proxy of provider {p.name}"))
                continue
            url = urlsplit(p.base_url)
            port = url.port or (443 if url.scheme == "https" else 80)
            targets.append(NetTarget(url.hostname or "", port, why=f"provider {p.name}"))
        return targets

    def provider_for(self, config: ProviderConfig) -> Provider:
        """The adapter instance for a provider credential (cached per id and revision)."""
        current = self.instances.get(config.key)
        if current is not None and current.config == config:
            return current
        cls = self.provider_classes.get(config.type)
        if cls is None:
            raise ServiceUnavailable(
                f"provider {config.name!r} has type {config.type!r}, but no adapter for it is "
                f"installed on this gateway (pip install tollway-provider-{config.type})",
                code="provider_not_installed",
            )
        provider = cls(config)
        problems = self.outbound_problems(provider)
        if problems:
            provider = _refused(provider, problems)
        self.instances[config.key] = provider
        return provider

    def chain(
        self, principal: Principal | None, endpoint: str | None = None
    ) -> list[tuple[Provider, str | None]]:
        """The providers a key reaches, in dispatch order, each with the model it pins (or None).

        One precedence for store and config-file providers (docs/operator-guide.md):

        * a key whose chain came from a routing policy (``principal.routing_policy``) reaches
          exactly that chain;
        * any other key reaches its own chain (the store providers it inherits, by their
          priority), then this gateway's config-file providers by ``priority`` — of equal
          priority, those speaking ``endpoint``'s format natively first.

        A key without a principal or a chain (static keys) reaches the config-file providers.
        """
        own: list[tuple[Provider, str | None]] = []
        if principal is not None:
            own = [(self.provider_for(e.provider), e.model) for e in principal.chain]
            if principal.routing_policy is not None:
                return own
        configured = self.providers_in_order
        if endpoint is not None:
            configured = sorted(
                configured, key=lambda p: (p.config.priority, endpoint not in p.native)
            )
        own.extend((p, None) for p in configured)
        return own

    @property
    def booted(self) -> bool:
        """``/startupz``: start-up finished and the netcheck passed."""
        return self.started and self.netcheck.passed

    def outbound_problems(self, provider: Provider, *, operator_owned: bool = False) -> list[str]:
        """What the SSRF guard refuses among the URLs ``provider`` calls (its base URL and
        :meth:`Provider.outbound_urls`), each ``<field>: <why>``. Checked once per adapter
        instance, never per request. ``allow_private_network`` counts only for the config
        file's providers (``operator_owned``), never for one from a key's bundle."""
        return outbound_problems(
            provider,
            self.outbound,
            operator_owned=operator_owned,
            hint=PROVIDER_HINT if operator_owned else _STORE_HINT,
        )

    async def startup(self) -> None:
        if not self.netcheck.passed:
            # In the background: the gateway serves (and /healthz answers) meanwhile; only
            # /startupz waits for it.
            self.spawn_daemon(self.netcheck.run())
        await self.hooks.gateway_started(self)
        self.checks = self.hooks.readiness_checks(self)
        self.state_report = self.hooks.describe_state(self.state, self)
        self.started = True
        for callback in self.on_started:
            callback()
        log.info(
            "gateway_started version=%s providers=%s plugins=%s %s netcheck=%s",
            __version__,
            ",".join(self.providers) or "-",
            ",".join(i.name for i in self.plugin_infos if not i.builtin) or "-",
            self.egress.summary(),
            ",".join(t.label for t in self.netcheck.targets) or "skipped",
        )
        if self.log_bodies:
            log.warning(
                "message_body_logging_on: LW_LOG_MESSAGE_BODY is set, so prompts and answers "
                "are written to this log (up to %d bytes each); debug only, unset it after",
                _LOGGED_BODY_BYTES,
            )

    async def shutdown(self) -> None:
        for task in list(self._daemons):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.settings.server.graceful_seconds)
        await self.hooks.gateway_stopping(self)
        await self.http.close()

    def spawn_daemon(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background until it ends or the gateway stops (cancelled)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._daemons.add(task)
        task.add_done_callback(self._daemons.discard)
        return task

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; shutdown waits for it."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- request pipeline ---------------------------------------------------------------

    def new_context(
        self, endpoint: str, method: str, path: str, query: bytes, headers: Any
    ) -> RequestContext:
        parent = parse_traceparent(headers.get("traceparent"))
        if parent is not None:
            trace_id, parent_span, flags = parent
        else:
            trace_id, parent_span, flags = new_trace_id(), None, 1
        return RequestContext(
            request_id=request_id(),
            endpoint=endpoint,
            method=method,
            path=path,
            query_string=query,
            headers=headers,
            trace_id=trace_id,
            span_id=new_span_id(),
            gateway=self,
            parent_span_id=parent_span,
            trace_flags=flags,
        )

    def base_headers(self, ctx: RequestContext) -> dict[str, str]:
        rid = ctx.request_id
        return {
            "X-LangWatch-Request-Id": rid,
            "X-Request-Id": rid,
            "X-LangWatch-Gateway-Request-Id": rid,
            "X-LangWatch-Trace-Id": ctx.trace_id,
            "X-LangWatch-Span-Id": ctx.span_id,
            "X-LangWatch-Gateway-Version": __version__,
        }

    async def read_body(self, ctx: RequestContext, chunks: AsyncIterator[bytes]) -> None:
        length = ctx.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        reader = BodyReader(self.max_body)
        try:
            async for chunk in chunks:
                reader.feed(chunk)
            data = reader.data
            encoding = ctx.headers.get("content-encoding")
            if encoding:
                data = decode_body(data, encoding, self.max_body)
        except BodyTooLarge:
            raise self._too_large() from None
        except BadEncoding as exc:
            raise BadRequest(exc.message) from None
        ctx.raw_body = data

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body exceeds {self.max_body} bytes (the gateway's "
            "SERVER_MAX_REQUEST_BODY_BYTES cap); send a smaller body or ask the operator "
            "to raise the cap"
        )

    def parse_body(self, ctx: RequestContext) -> None:
        raw = ctx.raw_body
        if not raw.strip():
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest(
                f"the request body must be a JSON object, not a JSON {type(body).__name__}"
            )
        # The gateway must judge exactly what the provider will act on (SPEC §2).
        try:
            duplicate = duplicate_key(raw, body)
        except ValueError as exc:
            raise BadRequest(str(exc), code="duplicate_key") from None
        if duplicate is not None:
            raise BadRequest(
                f"the request body names the key {quote_input(duplicate)} twice in one JSON "
                "object; parsers disagree on which value wins, so this gateway refuses "
                "duplicate keys. Send each key once",
                code="duplicate_key",
            )
        ctx.body = body
        for field in _REQUIRED[ctx.endpoint]:
            if field not in body:
                raise BadRequest(f"missing required field {field!r}", param=field)
        model = body["model"]
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a non-empty string", param="model")
        problem = model_problem(model)
        if problem is not None:
            raise BadRequest(f"'model' {problem}", code="invalid_model", param="model")
        ctx.model = model
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise BadRequest("'stream' must be true or false", param="stream")
        ctx.stream = bool(stream) and ctx.endpoint != EMBEDDINGS
        if ctx.endpoint in (CHAT, MESSAGES) and not isinstance(body["messages"], list):
            raise BadRequest("'messages' must be an array", param="messages")

    async def authenticate(self, ctx: RequestContext) -> None:
        headers = ctx.headers
        presented: str | None = None
        source = ""
        for name in _KEY_HEADERS:
            value = headers.get(name)
            if value:
                presented, source = value.strip(), name
                break
        if presented is not None and source == "authorization":
            scheme, _, token = presented.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidAPIKey(
                    "the Authorization header must be 'Bearer <virtual key>'",
                    code="malformed_key",
                )
            presented = token.strip()
        try:
            secret = check_key_format(presented)
        except KeyFormatError as exc:
            raise InvalidAPIKey(exc.message, code=exc.code) from None
        principal = await self.hooks.authenticate(ctx, Credential(secret, source))
        if principal is None:
            raise InvalidAPIKey(
                f"the virtual key {secret[:18]}… is not known to this gateway; check that you "
                "copied the whole secret, that the key was not deleted, and that the CLI that "
                "created it uses this gateway's store (`tollway status` compares them)",
                code="unknown_key",
            )
        ctx.principal = principal

    async def guard_request(self, ctx: RequestContext) -> None:
        for plugin, verdict in await self.hooks.pre_guardrail(ctx):
            ctx.verdicts.append(("pre", plugin, verdict))
            if verdict.decision == "block":
                raise GuardrailBlocked(
                    verdict.reason or f"blocked by guardrail {verdict.evaluator or plugin}"
                )

    async def answer(self, ctx: RequestContext) -> ProviderResult | None:
        """A plugin's own answer (``answer`` hook), or None: then the providers answer."""
        found = await self.hooks.answer(ctx)
        if found is None:
            return None
        plugin, result = found
        ctx.answered_by = plugin
        ctx.span_attributes["langwatch.answered_by"] = plugin
        return result

    async def route(self, ctx: RequestContext) -> list[RouteTarget]:
        targets = await self.hooks.route(ctx) or []
        if not targets:
            pool = self.chain(ctx.principal, ctx.endpoint)
            reachable = sorted({p.type for p, _ in pool if ctx.endpoint in p.endpoints})
            names = ", ".join(reachable) if reachable else "none"
            raise ModelNotAllowed(
                f"model {quote_input(ctx.model, MAX_MODEL_CHARS)} is not served by any "
                f"provider this key can reach on {ctx.path} (providers: {names}); use a model "
                "those providers serve, or "
                "attach a provider that serves it",
                code="model_not_routable",
            )
        ctx.targets = targets
        return targets

    async def dispatch(self, ctx: RequestContext) -> ProviderResult:
        """Try the chain in order; fall back on retryable failures before the first byte.

        Providers whose breaker is open are skipped without waiting for their timeout (not
        counted as attempts); ``fallback.max_attempts`` in the key's config caps the attempts.
        """
        failures: list[tuple[Provider, UpstreamError]] = []
        skipped: GatewayError | None = None
        max_attempts = _max_attempts(ctx)
        for target in ctx.targets:
            if len(failures) >= max_attempts:
                break
            provider = self.instances.get(target.provider)
            if provider is None:
                raise ServiceUnavailable(
                    f"the route names provider {target.provider!r}, which is not configured on "
                    "this gateway; fix the routing policy or the route plugin",
                    code="provider_unknown",
                )
            breaker = self.breakers.get(provider.key)
            if breaker is None:
                breaker = self.breakers[provider.key] = Breaker()
            if not breaker.allow():
                ctx.attempts.append(
                    Attempt(
                        provider.key,
                        provider.type,
                        target.model,
                        "circuit_open",
                        None,
                        "circuit_open",
                        0.0,
                    )
                )
                continue
            try:
                await self.hooks.before_attempt(ctx, target)
            except GatewayError as exc:
                breaker.release()
                skipped = exc
                ctx.attempts.append(
                    Attempt(
                        provider.key, provider.type, target.model, "skipped", None, exc.type, 0.0
                    )
                )
                continue
            ctx.provider, ctx.provider_type, ctx.resolved_model = (
                provider.name,
                provider.type,
                target.model,
            )
            t0 = time.perf_counter()
            try:
                result = await provider.send(ctx, target, self.http.for_provider(provider.config))
                if result.events is not None:
                    result.events = await _prime(result.events)
            except UpstreamError as exc:
                elapsed = time.perf_counter() - t0
                ctx.upstream_wait_s += elapsed
                status = getattr(exc, "status", None)
                if status is None or status >= 500:
                    breaker.failure()
                else:
                    breaker.success()
                ctx.attempts.append(
                    Attempt(
                        provider.key,
                        provider.type,
                        target.model,
                        "error",
                        status,
                        exc.reason,
                        elapsed,
                    )
                )
                log.info(
                    "provider_attempt_failed provider=%s model=%s reason=%s",
                    provider.name,
                    target.model,
                    exc.reason,
                )
                failures.append((provider, exc))
                if not exc.retryable:
                    break
                continue
            except BaseException:
                breaker.release()
                raise
            breaker.success()
            elapsed = time.perf_counter() - t0
            ctx.upstream_wait_s += elapsed
            ctx.attempts.append(
                Attempt(provider.key, provider.type, target.model, "ok", result.status, "", elapsed)
            )
            return result
        if not failures:
            if skipped is not None:
                raise skipped
            names = ", ".join(t.provider for t in ctx.targets)
            raise ServiceUnavailable(
                f"every provider for this request is failing and temporarily skipped by its "
                f"circuit breaker ({names}); retry shortly",
                code="circuit_open",
                retry_after=5,
            )
        error = _exhausted(failures)
        ctx.attempts_exhausted = not isinstance(error, _PassThrough)
        raise error

    def routed_headers(self, ctx: RequestContext) -> dict[str, str]:
        out = {"X-LangWatch-Fallback-Count": str(ctx.fallback_count)}
        if ctx.provider_type:
            out["X-LangWatch-Provider"] = ctx.provider_type
        if ctx.provider:
            # Which credential of that type (two OpenAI accounts look alike in the header above).
            out["X-LangWatch-Provider-Name"] = quote(ctx.provider, safe=_HEADER_SAFE)
        if ctx.resolved_model:
            out["X-LangWatch-Model"] = header_value(ctx.resolved_model)
        return out

    async def handle(
        self,
        endpoint: str,
        method: str,
        path: str,
        query: bytes,
        headers: Mapping[str, str],
        chunks: AsyncIterator[bytes],
        on_parsed: Callable[[RequestContext], None] | None = None,
    ) -> Reply:
        """Serve one model call (chat, messages, responses, embeddings).

        The adapter sends the reply; for a non-streaming reply it then calls :meth:`finish`
        (a stream settles itself when its body ends). ``headers`` must answer lower-case names.
        ``on_parsed`` is told the context once the body is parsed (the heartbeat needs to know
        whether the call streams).
        """
        ctx = self.new_context(endpoint, method, path, query, headers)
        token = request_id_var.set(ctx.request_id)
        self.in_flight += 1
        try:
            if self.draining:
                raise ServiceUnavailable(
                    "the gateway is shutting down; retry (another replica will answer)",
                    code="draining",
                    retry_after=1,
                )
            problem = header_problem(headers.items())
            if problem is not None:
                raise RequestHeadersTooLarge(problem, code="request_headers_too_large")
            await self.authenticate(ctx)
            await self.read_body(ctx, chunks)
            self.parse_body(ctx)
            if self.log_bodies:
                _log_body("request", ctx.body_bytes())
            if on_parsed is not None:
                on_parsed(ctx)
            await self.hooks.admit(ctx)
            await self.guard_request(ctx)
            result = await self.answer(ctx) if self.hooks.answers else None
            if result is None:
                await self.route(ctx)
                result = await self.dispatch(ctx)
            if result.events is not None:
                return self._stream_reply(ctx, result)
            return await self._body_reply(ctx, result)
        except GatewayError as exc:
            return self.error_reply(ctx, exc)
        except _PassThrough as exc:
            return self._passthrough_reply(ctx, exc.error)
        except asyncio.CancelledError:
            ctx.client_disconnected = True
            ctx.status = 499
            self.finish(ctx)
            raise
        except Exception:
            log.exception("internal_error path=%s", ctx.path)
            return self.error_reply(
                ctx,
                InternalError(
                    f"the gateway hit an internal error; report request id {ctx.request_id}"
                ),
            )
        finally:
            request_id_var.reset(token)

    def finish(self, ctx: RequestContext) -> None:
        """The client's response is complete: settle the request (``account``) off-path."""
        self.in_flight -= 1
        ctx.finished = time.perf_counter()
        # The task copies the current context: make its log lines carry this request's id.
        token = request_id_var.set(ctx.request_id)
        try:
            self.spawn(self.hooks.account(ctx))
        finally:
            request_id_var.reset(token)

    async def _body_reply(self, ctx: RequestContext, result: ProviderResult) -> Reply:
        body = result.body or b""
        if self.hooks._post_guardrail:
            view = ResponseView(result.status, body)
            for plugin, verdict in await self.hooks.post_guardrail(ctx, view):
                ctx.verdicts.append(("post", plugin, verdict))
                if verdict.decision == "block":
                    raise GuardrailBlocked(
                        verdict.reason or f"blocked by guardrail {verdict.evaluator or plugin}"
                    )
            body = view.body
        if self.log_bodies:
            _log_body("response", body)
        headers = self.base_headers(ctx)
        headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        ctx.status = result.status
        return Reply(ctx, result.status, _merge(result.headers, headers), body)

    def _stream_reply(self, ctx: RequestContext, result: ProviderResult) -> Reply:
        assert result.events is not None
        headers = self.base_headers(ctx)
        headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        headers.update(_SSE_HEADERS)
        ctx.status = result.status
        state = _StreamState()
        body = self._relay(ctx, result, state)
        # If the client leaves before the body starts, the generator never runs its `finally`:
        # settle when it is dropped instead (CPython frees it at once).
        weakref.finalize(body, self._abandoned, ctx, result, state)
        return Reply(ctx, result.status, _merge(result.headers, headers), stream=body)

    def _abandoned(self, ctx: RequestContext, result: ProviderResult, state: _StreamState) -> None:
        if state.started:
            return
        ctx.client_disconnected = True
        if result.close is not None:
            result.close()
        self.finish(ctx)

    async def _relay(
        self, ctx: RequestContext, result: ProviderResult, state: _StreamState
    ) -> AsyncIterator[bytes]:
        assert result.events is not None
        state.started = True
        listeners = self.hooks.stream_chunk
        if ctx.stream_listeners:
            listeners = (*listeners, *ctx.stream_listeners)
        events = result.events
        token = request_id_var.set(ctx.request_id)
        self.streaming_active += 1
        try:
            async for chunk in events:
                ctx.stream_chunks += chunk.count(b"\n\n") or 1
                if ctx.first_byte_at is None:
                    ctx.first_byte_at = time.perf_counter()
                if listeners:
                    buf = bytearray(chunk)
                    for listener in listeners:
                        try:
                            verdict = listener(ctx, buf)
                        except Exception as exc:
                            # Stream guardrails fail open by contract (SPEC §6).
                            log.warning("guardrail_fail_open direction=stream_chunk error=%r", exc)
                            continue
                        if verdict is not None:
                            ctx.verdicts.append(("stream_chunk", "", verdict))
                        if verdict is not None and verdict.decision == "block":
                            ctx.terminated_at_chunk = ctx.stream_chunks
                            ctx.error_type = "guardrail_blocked"
                            yield error_event(
                                verdict.reason or "blocked by a stream guardrail",
                                code="stream_chunk_blocked",
                                type_="guardrail_blocked",
                            )
                            return
                    chunk = bytes(buf)
                yield chunk
        except UpstreamError as exc:
            ctx.terminated_at_chunk = ctx.stream_chunks
            ctx.error_type = "provider_error"
            ctx.error_message = exc.message
            log.warning(
                "upstream_mid_stream_failure provider=%s chunks=%d error=%s",
                ctx.provider,
                ctx.stream_chunks,
                exc.message,
            )
            yield error_event(
                f"the upstream provider failed mid-stream after {ctx.stream_chunks} event(s): "
                f"{exc.message}"
            )
        except (asyncio.CancelledError, GeneratorExit):
            ctx.client_disconnected = True
            raise
        finally:
            self.streaming_active -= 1
            if result.close is not None:
                result.close()
            self.finish(ctx)
            request_id_var.reset(token)

    def error_reply(self, ctx: RequestContext, exc: GatewayError) -> Reply:
        ctx.status = exc.status
        ctx.error_type = exc.type
        ctx.error_message = exc.message
        # Recorded on the context too, so `account` sees e.g. the rate-limit dimension.
        ctx.response_headers.update(exc.headers())
        headers = self.base_headers(ctx)
        if ctx.attempts:
            headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        headers.update(exc.headers())
        if exc.status >= 500:
            log.warning("request_failed status=%d type=%s %s", exc.status, exc.type, exc.message)
        headers["content-type"] = "application/json"
        return Reply(
            ctx, exc.status, list(headers.items()), exc.envelope(anthropic=ctx.is_anthropic_client)
        )

    def error_response(self, ctx: RequestContext, exc: GatewayError) -> Response:
        """An error as a Quart response (for routes served by Quart)."""
        return to_quart(self.error_reply(ctx, exc))

    def _passthrough_reply(self, ctx: RequestContext, err: UpstreamHTTPError) -> Reply:
        ctx.status = err.status
        ctx.error_type = "upstream_error"
        headers = self.base_headers(ctx)
        headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        if err.status in _NO_RETRY_STATUSES and not any(
            k.lower() == "x-should-retry" for k, _ in err.headers
        ):
            # A provider's refusal is no more retryable through us than ours (SPEC §2).
            headers["x-should-retry"] = "false"
        return Reply(ctx, err.status, _merge(err.headers, headers), err.body)

    async def list_models(self) -> Response:
        ctx = self.new_context(MODELS, "GET", request.path, request.query_string, request.headers)
        token = request_id_var.set(ctx.request_id)
        self.in_flight += 1
        try:
            await self.authenticate(ctx)
            # What a call with this key can route to: its chain (routing policy, inherited and
            # config-file providers, as for a call), a pinned model as itself.
            owners: dict[str, str] = {}
            for p, pinned in self.chain(ctx.principal):
                for m in (pinned,) if pinned is not None else p.models():
                    owners.setdefault(m, p.type)
            models = list(owners)
            await self.hooks.filter_models(ctx, models)
            created = int(time.time())
            data = [
                {"id": m, "object": "model", "created": created, "owned_by": owners.get(m, "")}
                for m in models
            ]
            ctx.status = 200
            return Response(
                orjson.dumps({"object": "list", "data": data}),
                status=200,
                headers=self.base_headers(ctx),
                content_type="application/json",
            )
        except GatewayError as exc:
            return self.error_response(ctx, exc)
        finally:
            self.finish(ctx)
            request_id_var.reset(token)

    def startup_status(self) -> tuple[int, dict[str, Any]]:
        """``/startupz``: 503 until start-up finished and the netcheck passed; the body names
        each netcheck host's state (``error: dns resolution failed: …``)."""
        netcheck = self.netcheck
        checks: dict[str, Any] = {"netcheck": netcheck.report() if netcheck.targets else "skipped"}
        if self.booted:
            return 200, {"status": "ok", "checks": checks}
        if not self.started:
            return 503, {"status": "starting", "checks": checks}
        if netcheck.status == "failed":
            lines = list(netcheck.failures.values())
            return 503, {
                "status": "netcheck_failed",
                "error": "; ".join(lines),
                "checks": checks,
                "retry_seconds": netcheck.retry,
            }
        return 503, {"status": "netcheck_running", "checks": checks}

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        if self.draining:
            return 503, {"status": "draining", "checks": {"draining": "error: shutting down"}}
        if not self.started:
            return 503, {"status": "starting", "checks": {}}
        results: dict[str, str] = {}
        failed = False
        for name, check in self.checks.items():
            try:
                outcome = check()
                if inspect.isawaitable(outcome):
                    outcome = await asyncio.wait_for(outcome, timeout=2)
                text = "ok" if outcome in (None, True, "ok") else str(outcome)
            except Exception as exc:
                text = f"error: {exc}"
            if text.startswith(("error", "stale")):
                failed = True
            results[name] = text
        body: dict[str, Any] = {"status": "error" if failed else "ok", "checks": results}
        if self.state_report:
            body["state"] = self.state_report
        return (503 if failed else 200), body


@attrs.define(slots=True)
class Reply:
    """What the gateway answers, independent of the server framework."""

    ctx: RequestContext
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: For streams: chunks of SSE events; the gateway settles the request when it ends.
    stream: AsyncIterator[bytes] | None = None


class CIHeaders(dict[str, str]):
    """Request headers keyed by lower-case name; lookups ignore case."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


_LOGGED_BODY_BYTES = 64 * 1024


def _log_body(direction: str, body: bytes) -> None:
    """One ``message_body`` line (the request id comes from the log context)."""
    shown = body[:_LOGGED_BODY_BYTES].decode("utf-8", "replace")
    log.info(
        "message_body direction=%s bytes=%d%s body=%s",
        direction,
        len(body),
        " truncated=true" if len(body) > _LOGGED_BODY_BYTES else "",
        shown,
    )


def _merge(upstream: list[tuple[str, str]], ours: dict[str, str]) -> list[tuple[str, str]]:
    """Upstream headers, minus those we set, then ours."""
    mine = {k.lower() for k in ours}
    out = [(k, v) for k, v in upstream if k.lower() not in mine]
    out.extend(ours.items())
    return out


def to_quart(reply: Reply) -> Response:
    """A :class:`Reply` as a Quart response."""
    body: Any = reply.stream if reply.stream is not None else reply.body
    response = Response(body, status=reply.status, headers=Headers(reply.headers))
    if reply.stream is not None:
        response.timeout = None
    return response


class _StreamState:
    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = False


class _PassThrough(Exception):
    def __init__(self, error: UpstreamHTTPError) -> None:
        self.error = error


async def _prime(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Wait for the first upstream event, so a stream that fails before any content can still
    fall back; then hand back an iterator that yields it first."""
    it = events.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = b""

    async def chained() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in it:
                yield chunk
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    return chained()


def _max_attempts(ctx: RequestContext) -> int:
    principal = ctx.principal
    if principal is not None:
        fallback = principal.config.get("fallback")
        if isinstance(fallback, dict):
            value = fallback.get("max_attempts")
            if isinstance(value, int) and value > 0:
                return value
    return len(ctx.targets)


_STORE_HINT = (
    f"the gateway operator can list its network in {ALLOW_CIDRS_ENV}; a stored provider "
    "cannot set allow_private_network"
)


class _RefusedMixin:
    """An adapter whose URLs the SSRF guard refuses: every attempt fails before connecting
    (a failed attempt, so the fallback chain goes on), saying what to fix."""

    name: str
    refused_because: str

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        raise OutboundRefusedError(
            f"provider {self.name!r} is refused by the SSRF guard: {self.refused_because}"
        )


class OutboundRefusedError(UpstreamConnectError):
    """An attempt refused by the SSRF guard before any connection was made."""

    reason = "outbound_refused"


_REFUSED_CLASSES: dict[type[Provider], type[Provider]] = {}


def _refused(provider: Provider, problems: list[str]) -> Provider:
    cls = type(provider)
    refused_cls = _REFUSED_CLASSES.get(cls)
    if refused_cls is None:
        refused_cls = type(f"Refused{cls.__name__}", (_RefusedMixin, cls), {})
        _REFUSED_CLASSES[cls] = refused_cls
    refused = refused_cls(provider.config)
    refused.refused_because = "; ".join(problems)  # type: ignore[attr-defined]
    log.warning("provider_refused_by_ssrf_guard provider=%s reason=%s", provider.name, problems[0])
    return refused


def _exhausted(failures: list[tuple[Provider, UpstreamError]]) -> Exception:
    last_provider, last = failures[-1]
    if isinstance(last, UpstreamHTTPError) and not last.retryable:
        # A refusal no other provider can fix (e.g. 400): the client sees it as it is.
        return _PassThrough(last)
    if len(failures) == 1:
        if isinstance(last, UpstreamHTTPError):
            return _PassThrough(last)
        if isinstance(last, UpstreamTimeoutError):
            return UpstreamTimeout(
                f"provider {last_provider.name} ({last_provider.type}) did not answer in time: "
                f"{last.message}"
            )
        return ProviderError(
            f"provider {last_provider.name} ({last_provider.type}) failed: {last.message}",
            code=last.reason,
        )
    summary = "; ".join(f"{p.name}: {e.reason}" for p, e in failures)
    if all(isinstance(e, UpstreamTimeoutError) for _, e in failures):
        return UpstreamTimeout(f"every provider attempt timed out ({summary})")
    return ProviderError(
        f"all {len(failures)} provider attempts failed ({summary}); check the providers' "
        "status and credentials",
        code="fallback_exhausted",
    )


def create_app(gateway: Gateway) -> Quart:
    """The Quart application serving ``gateway``."""
    app = Quart("tollway")
    app.config.update(
        MAX_CONTENT_LENGTH=None,  # the gateway enforces its own cap, with the SPEC envelope
        RESPONSE_TIMEOUT=None,  # streams last as long as the upstream streams
        BODY_TIMEOUT=120,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.extensions["tollway"] = gateway
    gateway.app = app

    @app.before_serving
    async def _startup() -> None:
        if not gateway.started:
            await gateway.startup()

    @app.after_serving
    async def _shutdown() -> None:
        await gateway.shutdown()

    for path, endpoint in _ENDPOINT_PATHS.items():

        async def view(endpoint: str = endpoint) -> Response:
            # Normally never reached: serve_asgi() answers these before Quart sees them. Kept so
            # the plain Quart app (e.g. Quart's test client) serves the same endpoints.
            headers = CIHeaders((k.lower(), v) for k, v in request.headers.items())
            reply = await gateway.handle(
                endpoint,
                request.method,
                request.path,
                request.query_string,
                headers,
                request.body.__aiter__(),
            )
            if reply.stream is None:
                gateway.finish(reply.ctx)
            return to_quart(reply)

        app.add_url_rule(path, f"v1_{endpoint}", view, methods=["POST"])

    # Codex's built-in provider first tries a WebSocket upgrade on GET /v1/responses. Refused
    # with 426 it falls back to POST /v1/responses at once and for the session; a 404, 405, 5xx
    # costs 5 reconnects (~6 s) first, and a 400 ends the Codex run (docs/codex.md).
    @app.websocket("/v1/responses")
    async def responses_websocket() -> Response:
        return _refuse_websocket(gateway, websocket.path, websocket.headers)

    @app.get("/v1/responses")
    async def responses_get() -> Response:
        # A proxy that drops the hop-by-hop Upgrade header still passes Sec-WebSocket-Key on.
        if "sec-websocket-key" in request.headers:
            return _refuse_websocket(gateway, request.path, request.headers)
        ctx = gateway.new_context("", request.method, request.path, b"", request.headers)
        return gateway.error_response(
            ctx, _MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        )

    reserved = {rule.rule for rule in app.url_map.iter_rules()}
    gateway.pm.hook.register_routes(app=app, gateway=gateway)
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("v1_") or rule.rule in reserved:
            continue
        if rule.rule.startswith("/v1/") or rule.rule in ("/healthz", "/startupz", "/readyz"):
            raise PluginLoadError(f"a plugin registered route {rule.rule}, which the core owns")

    @app.get("/v1/models")
    async def models() -> Response:
        return await gateway.list_models()

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/startupz")
    async def startupz() -> Response:
        status, body = gateway.startup_status()
        return _json(status, body)

    @app.get("/readyz")
    async def readyz() -> Response:
        status, body = await gateway.readiness()
        return _json(status, body)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if has_websocket_context():
            # A WebSocket upgrade anywhere else: the same refusal, never a 500.
            return _refuse_websocket(gateway, websocket.path, websocket.headers)
        ctx = gateway.new_context("", request.method, request.path, b"", request.headers)
        anthropic = request.path.startswith("/v1/messages")
        status = exc.code or 500
        err: GatewayError
        if status == 404:
            err = _NotFound(
                f"no route for {request.method} {request.path}; Tollway serves POST "
                "/v1/chat/completions, /v1/messages, /v1/responses, /v1/embeddings and "
                "GET /v1/models"
            )
        elif status == 405:
            err = _MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        else:
            err = BadRequest(exc.description or "bad request")
        ctx.endpoint = MESSAGES if anthropic else ""
        return gateway.error_response(ctx, err)

    return app


class _NotFound(GatewayError):
    type = "not_found"
    status = 404


class _MethodNotAllowed(GatewayError):
    type = "method_not_allowed"
    status = 405


class _WebSocketNotSupported(GatewayError):
    type = "websocket_not_supported"
    status = 426


def _refuse_websocket(gateway: Gateway, path: str, headers: Any) -> Response:
    """426 for a WebSocket upgrade on ``path``: clients that can (Codex) fall back to HTTP."""
    ctx = gateway.new_context("", "GET", path, b"", headers)
    if path == "/v1/responses":
        message = (
            f"Tollway does not serve WebSocket on {path}; send POST {path} (streaming with "
            '"stream": true). Codex falls back to it by itself; a model_providers entry with '
            'wire_api = "responses" skips the WebSocket attempt'
        )
    elif path in _ENDPOINT_PATHS:
        message = f"Tollway does not serve WebSocket on {path}; send POST {path} over HTTP"
    else:
        message = (
            f"Tollway serves no WebSocket (asked on {path}); every route is plain HTTP, "
            'model calls stream as server-sent events with "stream": true'
        )
    return gateway.error_response(
        ctx, _WebSocketNotSupported(message, code="websocket_not_supported")
    )


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def load_gateway(settings: Settings) -> Gateway:
    """Build a gateway, turning plugin problems into one readable error."""
    return Gateway(settings)


__all__ += ["PluginInfo", "load_gateway"]
