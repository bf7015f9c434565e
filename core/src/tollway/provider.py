"""The provider adapter base class and the shared upstream HTTP client.

Providers are registered once (``register_providers(register)``) and then called per request
through :meth:`Provider.send`. A provider speaks wire formats and knows nothing of policy: it
builds the upstream request, relays the answer (translating when the client's format is not its
own) and reports usage on the context.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import attrs
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from tollway._errors import UpstreamConnectError, UpstreamHTTPError, UpstreamTimeoutError
from tollway._sse import SSESplitter
from tollway.egress import PROVIDER_KEY, Egress, ProxyChoice, redact
from tollway.outbound import OutboundPolicy, normalise_host

if TYPE_CHECKING:
    from tollway._context import RequestContext
    from tollway._types import RouteTarget
    from tollway.config import ProviderConfig

__all__ = [
    "ModelIds",
    "Provider",
    "ProviderResult",
    "UpstreamHTTP",
    "adapter_problems",
    "core_translated",
    "forwardable_request_headers",
    "outbound_problems",
    "relay_sse",
    "response_headers",
]

# Never forwarded upstream: hop-by-hop, framing, and every header that can carry the client's
# virtual key or the gateway's own metadata.
_DROP_REQUEST = frozenset(
    {
        "host",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "accept-encoding",
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
    }
)
# Never forwarded back: hop-by-hop and framing (the gateway frames its own response).
_DROP_RESPONSE = frozenset(
    {
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
        "set-cookie",
        "alt-svc",
        "via",
    }
)


def forwardable_request_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's headers that may travel upstream (``anthropic-beta``, ``openai-beta``,
    Codex's session headers, …) — never its key, never ``x-langwatch-*``."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in _DROP_REQUEST or lower.startswith("x-langwatch-"):
            continue
        out[lower] = value
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's response headers that pass through to the client."""
    return [(k, v) for k, v in headers if k.lower() not in _DROP_RESPONSE]


@attrs.define
class ProviderResult:
    """A successful upstream answer: a complete body, or a stream of SSE event chunks."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    #: Chunks of one or more *complete* SSE events, in arrival order.
    events: AsyncIterator[bytes] | None = None
    #: Releases the upstream connection (idempotent). Called by the core when the client goes.
    close: Callable[[], None] | None = None


class _Pool:
    """What every view of one :class:`UpstreamHTTP` shares: its sessions and caches."""

    def __init__(self) -> None:
        self.direct: aiohttp.ClientSession | None = None
        #: For calls through a proxy: it only ever resolves proxy hosts (the operator's own,
        #: often on a private network), so it uses the default resolver.
        self.proxied: aiohttp.ClientSession | None = None
        self.resolver: PublicOnlyResolver | None = None
        #: host → monotonic expiry of its last passed SSRF check (proxied calls).
        self.guarded: dict[str, float] = {}


#: How long a proxied target host's SSRF check is trusted (as the connector's DNS cache).
_GUARD_TTL = 300.0


class UpstreamHTTP:
    """One keep-alive aiohttp session per process, with the gateway's timeouts and proxies.

    Errors become :class:`UpstreamConnectError` / :class:`UpstreamTimeoutError`; error statuses
    are left to the provider, which knows the body's shape. Calls go through the proxy that
    :class:`~tollway.egress.Egress` chooses; :meth:`for_provider` gives a view that applies a
    provider's own ``config.proxy``.
    """

    def __init__(
        self,
        connect_timeout: float,
        timeout: float,
        *,
        public_only: bool = False,
        egress: Egress | None = None,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=timeout
        )
        self._pool = _Pool()
        #: Refuse host names that resolve to loopback/private/link-local addresses (the SSRF
        #: guard outside ``ENVIRONMENT=local``; literal addresses are refused per provider, when
        #: its adapter is built). ``policy`` adds the operator's allowlist. Through a proxy, the
        #: target host is checked the same way before the call.
        self.public_only = public_only or (policy is not None and policy.guard)
        self.policy = policy
        self.egress = egress or Egress()
        #: A provider's ``config`` when it sets ``proxy`` (see :meth:`for_provider`).
        self._provider_config: Mapping[str, Any] = {}

    def for_provider(self, config: ProviderConfig) -> UpstreamHTTP:
        """A view for one provider: same sessions, plus the provider's ``config.proxy``."""
        if PROVIDER_KEY not in config.config:
            return self
        view = copy.copy(self)
        view._provider_config = config.config
        return view

    def proxy_for(self, url: str | yarl.URL) -> ProxyChoice:
        """The proxy a call to ``url`` goes through (its ``url`` None: direct)."""
        return self.egress.for_provider(str(url), self._provider_config)

    def _new_session(self, resolver: AbstractResolver | None) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0, ttl_dns_cache=300, enable_cleanup_closed=True, resolver=resolver
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type"),
            raise_for_status=False,
            # No cookie jar: a cookie an upstream set (a CDN's) on one caller's call would be
            # sent on every later call to that host, whoever makes it.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session for direct calls."""
        pool = self._pool
        if pool.direct is None:
            pool.direct = self._new_session(
                PublicOnlyResolver(self.policy) if self.public_only else None
            )
        return pool.direct

    def _proxied_session(self) -> aiohttp.ClientSession:
        pool = self._pool
        if pool.proxied is None:
            pool.proxied = self._new_session(None)
        return pool.proxied

    async def _guard_target(self, url: str | yarl.URL) -> None:
        """The SSRF guard for a proxied call: the proxy resolves the target, not us, so check
        the target host here the way the direct session's resolver would. A literal address is
        not resolved by either path: it was checked when the provider's adapter was built (with
        its ``allow_private_network``), exactly as for a direct call."""
        host = yarl.URL(str(url)).host or ""
        if not isinstance(normalise_host(host), str):
            return
        pool = self._pool
        loop = asyncio.get_running_loop()
        if pool.guarded.get(host, 0.0) > loop.time():
            return
        if pool.resolver is None:
            pool.resolver = PublicOnlyResolver(self.policy)
        try:
            await pool.resolver.resolve(host, 0, socket.AF_UNSPEC)
        except OSError as exc:
            raise UpstreamConnectError(
                f"refusing to call {host} through the outbound proxy: {exc}"
            ) from None
        pool.guarded[host] = loop.time() + _GUARD_TTL

    async def _send(
        self,
        method: str,
        url: str | yarl.URL,
        headers: dict[str, str],
        body: bytes | None,
    ) -> aiohttp.ClientResponse:
        choice = self.proxy_for(url)
        if choice.url is None:
            session, proxy = self.session, None
        else:
            if self.public_only:
                await self._guard_target(url)
            session, proxy = self._proxied_session(), choice.url
        try:
            resp = await session.request(
                method, url, data=body, headers=headers, allow_redirects=False, proxy=proxy
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            via = f" through the outbound proxy {choice.describe()}" if proxy else ""
            raise UpstreamTimeoutError(
                redact(f"no answer from {_host(url)}{via} in time ({exc!r})", proxy)
            ) from exc
        except aiohttp.ClientProxyConnectionError as exc:
            raise UpstreamConnectError(
                redact(
                    f"cannot connect to the outbound proxy {choice.describe()} to reach "
                    f"{_host(url)}: {exc.os_error}",
                    proxy,
                )
            ) from None
        except aiohttp.ClientHttpProxyError as exc:
            raise UpstreamConnectError(
                redact(
                    f"the outbound proxy {choice.describe()} refused to tunnel to {_host(url)}: "
                    f"HTTP {exc.status} {exc.message}",
                    proxy,
                )
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(
                redact(f"cannot connect to {_host(url)}: {exc.os_error}", proxy)
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(
                redact(f"connection to {_host(url)} failed: {type(exc).__name__}: {exc}", proxy)
            ) from exc
        except ValueError as exc:  # a URL aiohttp cannot send (e.g. credentials in it)
            raise UpstreamConnectError(
                f"the upstream URL cannot be used ({exc}); fix the provider's base_url"
            ) from exc
        if proxy is not None and resp.status == 407:
            # A plain-HTTP proxy answers for itself: never relay that as the provider's answer.
            resp.release()
            raise UpstreamConnectError(
                f"the outbound proxy {choice.describe()} asked for credentials (HTTP 407) to "
                f"reach {_host(url)}; put them in the proxy URL (http://user:password@host:port)"
            )
        return resp

    async def post(
        self, url: str | yarl.URL, headers: dict[str, str], body: bytes
    ) -> aiohttp.ClientResponse:
        """POST and wait for the response headers. A ``yarl.URL(..., encoded=True)`` is sent
        exactly as given (a signed path such as Bedrock's ``%3A`` must not be re-encoded)."""
        # We relay bodies as they are: ask for them uncompressed.
        headers["accept-encoding"] = "identity"
        return await self._send("POST", url, headers, body)

    async def get(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        return await self._send("GET", url, headers, None)

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> aiohttp.ClientResponse:
        """Any method (``DELETE /responses/{id}``, …); bodies relayed as they are."""
        headers["accept-encoding"] = "identity"
        return await self._send(method, url, headers, body)

    async def close(self) -> None:
        pool = self._pool
        for session in (pool.direct, pool.proxied):
            if session is not None:
                await session.close()
        pool.direct = pool.proxied = None


class PublicOnlyResolver(AbstractResolver):
    """The default resolver, minus the addresses the SSRF guard refuses (loopback, private,
    link-local, unspecified, … — :meth:`OutboundPolicy.refused_address`, which honours the
    operator's allowlist).

    A provider host name that resolves only to such addresses (an internal name, a DNS record
    pointing at the cloud metadata address) fails to connect with a message saying why, the
    same as a literal private address in the configuration. The host names in
    ``policy.private_names`` (config-file providers with ``allow_private_network``) are not
    filtered.
    """

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._policy = policy or OutboundPolicy()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        policy = self._policy
        found = await self._inner.resolve(host, port, family)
        if host.lower().rstrip(".") in policy.private_names:
            return found
        public = [r for r in found if not policy.refused_address(r["host"])]
        if not public:
            addresses = ", ".join(sorted({r["host"] for r in found}))
            raise OSError(
                f"{host} resolves to {addresses}: loopback/private addresses are refused "
                "outside ENVIRONMENT=local (SSRF guard)"
            )
        return public

    async def close(self) -> None:
        await self._inner.close()


def _host(url: str | yarl.URL) -> str:
    """The host (and port) an error message names; only built on the error path."""
    from urllib.parse import urlsplit

    text = str(url)
    return urlsplit(text).netloc or text


async def read_body(resp: aiohttp.ClientResponse) -> bytes:
    """Read a whole (non-streaming) upstream body, mapping transport failures."""
    try:
        return await resp.read()
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        resp.close()
        raise UpstreamTimeoutError("upstream stopped sending the response body") from exc
    except aiohttp.ClientError as exc:
        resp.close()
        raise UpstreamConnectError(f"upstream connection lost while reading: {exc!r}") from exc


async def raise_for_upstream_status(resp: aiohttp.ClientResponse) -> None:
    """Turn an upstream error status into :class:`UpstreamHTTPError` (body capped at 1 MiB)."""
    if resp.status < 400:
        return
    try:
        body = await resp.content.read(1024 * 1024)
    except (TimeoutError, aiohttp.ClientError):
        body = b""
    finally:
        resp.release()
    raise UpstreamHTTPError(resp.status, response_headers(resp.headers.items()), body)


async def relay_sse(
    resp: aiohttp.ClientResponse,
    inspect: Callable[[bytes], bytes | None] | None = None,
    marker: bytes = b"",
) -> AsyncIterator[bytes]:
    """Relay an upstream SSE body as chunks of complete events, as they arrive.

    ``inspect`` sees each event block that contains ``marker`` (cheap substring test, so most
    events are never parsed) and returns the bytes to send instead (``b""`` drops it) or ``None``
    to keep it. A transport failure mid-stream raises :class:`UpstreamConnectError`.
    """
    splitter = SSESplitter()
    try:
        async for data in resp.content.iter_any():
            events = splitter.feed(data)
            if not events:
                continue
            if inspect is not None:
                out = []
                for ev in events:
                    if marker in ev:
                        replacement = inspect(ev)
                        if replacement is not None:
                            ev = replacement
                    if ev:
                        out.append(ev)
                if not out:
                    continue
                yield out[0] if len(out) == 1 else b"".join(out)
            else:
                yield events[0] if len(events) == 1 else b"".join(events)
        tail = splitter.tail()
        if tail.strip():
            yield tail
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeoutError("upstream stopped sending events (read timeout)") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectError(f"upstream connection lost mid-stream: {exc!r}") from exc
    finally:
        resp.close()


class ModelIds:
    """``config.model_ids``: the model ids clients send → the upstream's own ids.

    For adapters whose upstream names models differently (Bedrock's
    ``us.anthropic.claude-sonnet-4-5-20250929-v1:0``, Vertex's ``claude-sonnet-4-5@20250929``):
    the keys are served and listed besides ``models``, the value goes upstream, and the client
    keeps seeing the name it asked for.
    """

    KEY = "model_ids"

    def __init__(self, config: ProviderConfig, example: str = "") -> None:
        self._raw = config.config.get(self.KEY)
        self._example = example
        raw = self._raw
        self.map: dict[str, str] = (
            {str(k): v for k, v in raw.items() if isinstance(v, str) and v and "*" not in k}
            if isinstance(raw, dict)
            else {}
        )

    def __contains__(self, model: object) -> bool:
        return model in self.map

    def upstream(self, model: str) -> str:
        """The id ``model`` is sent upstream as."""
        return self.map.get(model, model)

    def problems(self) -> list[str]:
        raw = self._raw
        if raw is None:
            return []
        example = f" (e.g. {self._example})" if self._example else ""
        if not isinstance(raw, dict):
            return [
                f"config.{self.KEY}: must be a table mapping the model ids clients send to the "
                f"provider's model ids{example}"
            ]
        return [
            f"config.{self.KEY}.{name}: {value!r} must be the provider's model id (a string), "
            "keyed by an exact client model id (no globs)"
            for name, value in raw.items()
            if not isinstance(value, str) or not value or "*" in str(name)
        ]


class Provider:
    """Base class of provider adapters. One instance per configured provider credential.

    Subclasses set :attr:`type`, :attr:`endpoints` (client formats served natively) and
    :attr:`default_models`, and implement :meth:`send`.

    Chat is the hub: an adapter whose native formats include ``"chat"`` but whose
    :attr:`endpoints` leave out ``"messages"`` also serves Anthropic clients — the core
    translates the request to a chat request before :meth:`send` and the answer (body or SSE
    stream) back after it, so the adapter only ever sees chat. The same holds the other way
    for a Messages-native adapter and chat clients. An adapter that serves chat (any way) but
    not ``"responses"`` also serves OpenAI Responses API clients: their requests reach it as
    chat (then Messages, for a Messages-native one). :attr:`translated` lists what the core
    translates for this adapter; set :attr:`core_translation` to ``False`` to serve only
    :attr:`endpoints`.
    """

    #: Configuration ``type`` this adapter serves, e.g. ``"openai"``.
    type: ClassVar[str] = ""
    #: Client endpoints this adapter serves, natively or by translation (``"chat"``,
    #: ``"messages"``, ``"responses"``, ``"embeddings"``).
    endpoints: ClassVar[frozenset[str]] = frozenset()
    #: The subset served in the provider's own wire format (byte-for-byte). Without a routing
    #: policy, native providers are tried before translating ones of the same priority.
    #: ``None``: every endpoint served; ``frozenset()``: none (a wire of its own, e.g. Bedrock).
    native_endpoints: ClassVar[frozenset[str] | None] = None
    #: Whether the core translates the other client formats to this adapter's native hub
    #: format (see the class docstring and :attr:`translated`).
    core_translation: ClassVar[bool] = True
    #: Model ids / trailing-``*`` globs served when the configuration does not list models.
    default_models: ClassVar[tuple[str, ...]] = ("*",)
    #: Concrete model ids listed by ``GET /v1/models`` when the configuration lists none.
    listed_models: ClassVar[tuple[str, ...]] = ()
    default_base_url: ClassVar[str] = ""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        #: ``native_endpoints``, defaulting to every endpoint served.
        native = type(self).native_endpoints
        self.native: frozenset[str] = type(self).endpoints if native is None else native
        #: Client formats the core translates for this adapter (its :meth:`send` sees them in
        #: the native format): ``"messages"`` for a chat-native adapter without it,
        #: ``"chat"`` for a Messages-native one without it, ``"responses"`` for one serving
        #: chat but not the Responses API.
        self.translated: frozenset[str] = type(self).translated_endpoints()
        #: Every client format this adapter serves: :attr:`endpoints` plus :attr:`translated`.
        self.served: frozenset[str] = type(self).endpoints | self.translated
        #: Stable id used in route targets, metrics and breakers.
        self.key = config.key
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")
        self.api_key = config.api_key or ""
        patterns = tuple(config.models) if config.models is not None else self.default_models
        self._exact = frozenset(p for p in patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    @classmethod
    def translated_endpoints(cls) -> frozenset[str]:
        """The client formats the core translates for this adapter class (see the class
        docstring); ``cls.endpoints | cls.translated_endpoints()`` is everything it serves."""
        if not cls.core_translation:
            return frozenset()
        native = cls.endpoints if cls.native_endpoints is None else cls.native_endpoints
        return core_translated(cls.endpoints, native)

    def validate(self) -> list[str]:
        """Configuration problems, one line each (checked at start-up)."""
        return []

    def outbound_urls(self) -> list[tuple[str, str]]:
        """Every URL this adapter calls besides its upstream requests' host, as ``(field,
        url)`` — e.g. a token endpoint. The core checks each, with :attr:`base_url`, against
        the SSRF guard when the adapter is built; an adapter that calls other hosts overrides
        this (and may raise nothing: a URL it cannot read is left to :meth:`validate`)."""
        return []

    def serves(self, model: str) -> bool:
        """Whether this provider serves ``model`` (exact id or trailing-``*`` glob)."""
        return model in self._exact or model.startswith(self._prefixes)

    def models(self) -> list[str]:
        """Concrete model ids for ``GET /v1/models``."""
        if self.config.models is not None:
            return [m for m in self.config.models if not m.endswith("*")]
        return list(self.listed_models)

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """Make one attempt. Raise :class:`~tollway.UpstreamError` subclasses on failure.

        Set ``ctx.usage`` for a complete body; for a stream, set it as the usage events pass.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.base_url}>"


#: Client format → the native format the core translates it to (chat is the hub).
_HUB_LANES = (("messages", "chat"), ("chat", "messages"))


def core_translated(endpoints: frozenset[str], native: frozenset[str]) -> frozenset[str]:
    """The client formats the core translates for an adapter serving ``endpoints`` with
    ``native`` among them: each hub lane whose target is native and whose source the adapter
    does not serve itself; and ``"responses"`` (the OpenAI Responses API, translated to chat)
    when the adapter does not serve it but serves chat one way or another — itself, natively
    or by its own translation, or through the core's Messages lane."""
    lanes = {src for src, dst in _HUB_LANES if dst in native and src not in endpoints}
    if "responses" not in endpoints and ("chat" in endpoints or "chat" in lanes):
        lanes.add("responses")
    return frozenset(lanes)


def upstream_url(base: str, suffix: str, query_string: bytes) -> str:
    """``base + suffix`` plus the client's query string (Claude Code's ``?beta=true``)."""
    if query_string:
        return f"{base}{suffix}?{query_string.decode('latin-1')}"
    return base + suffix


@functools.cache
def _installed_classes() -> dict[str, type[Provider]]:
    """Every installed adapter class by type, read once per process from the entry points
    (no plugin manager: only the ``register_providers`` functions are called)."""
    from tollway._plugins import installed_provider_classes

    return installed_provider_classes()


def outbound_problems(
    provider: Provider,
    policy: OutboundPolicy,
    *,
    operator_owned: bool = False,
    hint: str | None = None,
) -> list[str]:
    """What ``policy`` refuses among the URLs ``provider`` calls — its :attr:`~Provider.base_url`
    and :meth:`Provider.outbound_urls` — each ``<field>: <why>``.

    ``allow_private_network`` counts only for an ``operator_owned`` provider (the config
    file's), never for one from a store or a key's bundle. ``hint`` ends a refusal with what to
    do instead.
    """
    allow = operator_owned and provider.config.allow_private_network
    urls = [("base_url", provider.base_url)] if provider.base_url else []
    try:
        urls.extend(provider.outbound_urls())
    except Exception as exc:  # an adapter bug must not hide the other checks
        return [f"outbound URLs: the {provider.type} adapter could not list them: {exc!r}"]
    out = []
    for field, url in urls:
        problem = (
            policy.url_problem(url, allow_private=allow)
            if hint is None
            else policy.url_problem(url, allow_private=allow, hint=hint)
        )
        if problem is not None:
            out.append(f"{field}: {problem}")
    return out


def adapter_problems(
    config: ProviderConfig, outbound: OutboundPolicy | None = None, hint: str | None = None
) -> list[str] | None:
    """What the installed adapter of ``config.type`` finds wrong with ``config`` (its
    :meth:`Provider.validate`, and with ``outbound`` the URLs it would call:
    :func:`outbound_problems`), or ``None`` when no adapter of that type is installed here.

    For stores that accept provider credentials (the control plane checks them on write, so a
    bad deployment map or region is refused with a 400 instead of silently serving nothing).
    """
    cls = _installed_classes().get(config.type)
    if cls is None:
        return None
    try:
        provider = cls(config)
        problems = provider.validate()
    except Exception as exc:  # an adapter that cannot even be built from this config
        return [f"the {config.type} adapter cannot use this configuration: {exc}"]
    if outbound is not None:
        problems.extend(outbound_problems(provider, outbound, hint=hint))
    return problems
