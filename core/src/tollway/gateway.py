"""The gateway: one process's settings, plugins and providers, and the request pipeline.

The pipeline (:meth:`Gateway.handle`) is written against a small request shape so the framework
adapter stays thin: parse once, call the hooks in SPEC §4 order, dispatch with fallback, relay.
Its parts live in their own modules, mixed into :class:`Gateway`:

* :mod:`tollway._intake`: context, key, body (``authenticate``);
* :mod:`tollway._router`: the built-in ``route``;
* :mod:`tollway._dispatch`: the fallback loop behind the circuit breakers;
* :mod:`tollway._reply`: replies, the stream relay, errors, settling (``account``);
* :mod:`tollway._app`: the Quart application and ``GET /v1/models``.

``Gateway``, ``ResponseView``, ``Reply``, ``CIHeaders`` and ``create_app`` stay importable
from here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import pluggy

from tollway import __version__
from tollway._app import ModelsListing, create_app
from tollway._body import effective_limit
from tollway._breaker import Breaker
from tollway._context import RequestContext, Stash, flush_deferred
from tollway._dispatch import _STORE_HINT, Dispatch, _PassThrough, _refused
from tollway._errors import (
    GatewayError,
    GuardrailBlocked,
    InternalError,
    ModelNotAllowed,
    RequestHeadersTooLarge,
    ServiceUnavailable,
)
from tollway._hooks import Hooks
from tollway._input import (
    MAX_MODEL_CHARS,
    header_problem,
    quote_input,
)
from tollway._intake import ENDPOINT_PATHS
from tollway._logging import handler_task_var, request_id_var
from tollway._netcheck import Netcheck, NetTarget, parse_hostport
from tollway._plugins import PluginInfo, PluginLoadError, build_plugin_manager, provider_classes
from tollway._reply import _LOGGED_BODY_BYTES, CIHeaders, Reply, ResponseView, _log_body
from tollway._router import Router
from tollway._routing_share import start_sharing
from tollway._stored import ResponseOwners, StoredResponses
from tollway._types import Principal, RouteTarget
from tollway.config import PROVIDER_HINT, ProviderConfig, Settings, structure_plugin_settings
from tollway.egress import Egress
from tollway.outbound import OutboundPolicy
from tollway.provider import Provider, ProviderResult, UpstreamHTTP, outbound_problems
from tollway.routing import LiveStats
from tollway.state import StateLocation

__all__ = ["CIHeaders", "Gateway", "Reply", "ResponseView", "create_app"]

log = logging.getLogger("tollway.gateway")

#: Kept under its old name for importers of ``tollway.gateway._ENDPOINT_PATHS``.
_ENDPOINT_PATHS = ENDPOINT_PATHS


class Gateway(ModelsListing, StoredResponses, Dispatch):
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
        #: Live latency, load and 429 cool-downs by provider key (tollway.routing).
        self.live = LiveStats()
        self.pm, self.plugin_infos = build_plugin_manager(
            settings.plugins,
            builtins=[("tollway.router", Router(self))],
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
        #: Which provider holds each stored response (``/v1/responses/{id}``).
        self.response_owners = ResponseOwners()
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
        """The providers a key reaches, in chain order, each with the model it pins (or None).

        One precedence for store and config-file providers (docs/operator-guide.md):

        * a key whose chain came from a routing policy (``principal.routing_policy``) reaches
          exactly that chain (an entry naming a config-file provider, ``config_provider``, is
          that provider of this gateway's file; skipped when the file has none of that name);
        * any other key reaches its own chain (the store providers it inherits, by their
          priority), then this gateway's config-file providers by ``priority`` — of equal
          priority, those speaking ``endpoint``'s format natively first.

        A key without a principal or a chain (static keys) reaches the config-file providers.
        The order a request walks them in is its strategy's (:meth:`routed_chain`).
        """
        return [(p, m) for p, m, _ in self.routed_chain(principal, endpoint)[0]]

    def routed_chain(
        self, principal: Principal | None, endpoint: str | None = None
    ) -> tuple[list[tuple[Provider, str | None, int]], str]:
        """:meth:`chain` with each entry's weight, and the strategy (:mod:`tollway.routing`)
        that orders it: the routing policy's, else the config file's ``[routing] strategy``."""
        own: list[tuple[Provider, str | None, int]] = []
        if principal is not None:
            for e in principal.chain:
                if e.config_provider is None:
                    own.append((self.provider_for(e.provider), e.model, e.weight))
                elif e.config_provider in self.providers:
                    # A routing policy naming one of this gateway's config-file providers.
                    own.append((self.providers[e.config_provider], e.model, e.weight))
            if principal.routing_policy is not None:
                return own, principal.routing_strategy
        configured = self.providers_in_order
        if endpoint is not None:
            configured = sorted(
                configured, key=lambda p: (p.config.priority, endpoint not in p.native)
            )
        own.extend((p, None, p.config.weight) for p in configured)
        return own, self.settings.routing.strategy

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
        start_sharing(self)
        self.response_owners.start(self)
        self.checks = self.hooks.readiness_checks(self)
        self.state_report = self.hooks.describe_state(self.state, self)
        self.started = True
        for callback in self.on_started:
            callback()
        log.info(
            "gateway_started version=%s providers=%s plugins=%s %s netcheck=%s "
            "gil_switch_interval_s=%g",
            __version__,
            ",".join(self.providers) or "-",
            ",".join(i.name for i in self.plugin_infos if not i.builtin) or "-",
            self.egress.summary(),
            ",".join(t.label for t in self.netcheck.targets) or "skipped",
            sys.getswitchinterval(),
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
        await self.response_owners.stop()
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
            reachable = sorted({p.type for p, _ in pool if ctx.endpoint in p.served})
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
        task_token = handler_task_var.set(asyncio.current_task())
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
            try:
                await self.hooks.admit(ctx)
                await self.guard_request(ctx)
                result = await self.answer(ctx) if self.hooks.answers else None
            except GatewayError:
                await flush_deferred(ctx)  # a deferred admission refusal still comes first
                raise
            await flush_deferred(ctx)  # admission's Redis calls: one round trip, at the latest here
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
            handler_task_var.reset(task_token)

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


def load_gateway(settings: Settings) -> Gateway:
    """Build a gateway, turning plugin problems into one readable error."""
    return Gateway(settings)


__all__ += ["PluginInfo", "load_gateway"]
