"""Frozen value types that cross the plugin boundary."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

import attrs

if TYPE_CHECKING:
    from tollway._context import RequestContext, StashKey
    from tollway.config import ProviderConfig

__all__ = [
    "Attempt",
    "ChainEntry",
    "Credential",
    "Principal",
    "RouteTarget",
    "StreamFilter",
    "Usage",
    "Verdict",
]

T = TypeVar("T")


@attrs.frozen
class ChainEntry:
    """One entry of a key's provider chain: a provider credential, and optionally the model to
    ask it for whatever the client requested (SPEC §5 ``--providers id,id:model``)."""

    provider: ProviderConfig
    model: str | None = None
    #: Set when a routing policy names a provider of the gateway's own config file instead of a
    #: stored one: its name there (``provider`` is then only a placeholder with that name).
    config_provider: str | None = None
    #: The entry's share under the ``weighted`` strategy (0: fallback only); see
    #: :mod:`tollway.routing`.
    weight: int = 1


@attrs.frozen
class Credential:
    """The key a client presented, and the header it came in."""

    secret: str = attrs.field(repr=False)
    header: str

    @property
    def display_prefix(self) -> str:
        """The first 18 characters: safe to log."""
        return self.secret[:18]


@attrs.frozen
class Principal:
    """Who is calling: the virtual key an ``authenticate`` hook accepted, with its config."""

    key_id: str
    display_prefix: str
    name: str = ""
    organization_id: str = "default"
    team_id: str | None = None
    project_id: str | None = None
    #: The key's config (SPEC §3 ``--config-json``): ``models_allowed``, ``rate_limits``, …
    #: Treat it as read-only.
    config: Mapping[str, Any] = attrs.field(factory=dict)
    revision: int = 0
    #: The key's own provider chain in dispatch order (its routing policy's entries, else the
    #: providers it inherits, by fallback priority). See :attr:`routing_policy` for what the
    #: gateway adds to it.
    chain: tuple[ChainEntry, ...] = ()
    #: The key's owner, for ``principal`` budgets.
    principal_id: str | None = None
    #: Anything else the key's bundle carries for plugins (e.g. ``otel_auth_token``).
    extras: Mapping[str, Any] = attrs.field(factory=dict)
    #: The routing policy :attr:`chain` came from (its id), or None. With a policy the key
    #: reaches exactly :attr:`chain`; without one it reaches :attr:`chain`, then the gateway's
    #: config-file providers by priority (:meth:`tollway.gateway.Gateway.chain`).
    routing_policy: str | None = None
    #: How :attr:`chain` is walked per request (:data:`tollway.routing.STRATEGIES`); with no
    #: routing policy the config file's ``[routing] strategy`` applies instead.
    routing_strategy: str = "ordered"
    #: What plugins derived from this principal (see :meth:`derive`); not part of its value.
    _derived: dict[Any, Any] = attrs.field(init=False, factory=dict, eq=False, repr=False)

    def derive(self, key: StashKey[T], build: Callable[[Principal], T]) -> T:
        """``build(self)``, computed on this principal's first request and reused after.

        For what a plugin reads out of :attr:`config` the same way on every request (parsed
        limits, compiled rules): an authenticator keeps one principal per key revision, so
        this is per key, and a changed key (a new principal) is derived afresh. ``key`` is the
        plugin's own :class:`~tollway.StashKey`. If ``build`` raises, nothing is kept and
        the next call builds again.
        """
        derived = self._derived
        try:
            return derived[key]  # type: ignore[no-any-return]
        except KeyError:
            value = derived[key] = build(self)
            return value


@attrs.frozen
class Usage:
    """Usage as the provider reported it: tokens, and for the audio and image endpoints the
    units they are priced by."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0
    #: Characters of text turned into speech (``/v1/audio/speech``).
    characters: int = 0
    #: Seconds of audio transcribed (``/v1/audio/transcriptions``).
    audio_seconds: float = 0.0
    #: Images generated (``/v1/images/generations``) by a model priced per image.
    images: int = 0

    @property
    def has_units(self) -> bool:
        """Whether any non-token unit (characters, audio seconds, images) is counted."""
        return bool(self.characters or self.audio_seconds or self.images)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.characters + other.characters,
            self.audio_seconds + other.audio_seconds,
            self.images + other.images,
        )


@attrs.frozen
class RouteTarget:
    """One entry of a fallback chain: a configured provider and the model to ask it for."""

    provider: str
    model: str


@attrs.frozen
class Verdict:
    """A guardrail's decision. ``modify`` means the hook already rewrote the body it was given."""

    decision: Literal["allow", "block", "modify"]
    reason: str = ""
    evaluator: str = ""
    #: For ``modify`` from an evaluator: the rewritten content (its shape is the evaluator
    #: protocol's, see :mod:`tollway.guardrails`).
    content: Any = None


@attrs.frozen
class Attempt:
    """One provider attempt of a request, for headers, spans and metrics."""

    provider: str
    provider_type: str
    model: str
    outcome: str
    status: int | None
    reason: str
    duration_s: float
    #: The provider's circuit breaker once this attempt ended (``closed``, ``open``,
    #: ``half_open``; see docs/reliability.md).
    breaker_state: str = "closed"


@runtime_checkable
class StreamFilter(Protocol):
    """A per-request stream filter that may **wait** before a chunk is relayed, and hold bytes
    back (``ctx.stream_filters``; see ``on_stream_chunk`` in the hook reference).

    The core awaits :meth:`feed` for each chunk after the ``on_stream_chunk`` listeners, relays
    what it returns, and awaits :meth:`end` once when the upstream stream ends or is cut, to
    relay what was held back. Bytes a filter returns must be complete SSE events.
    """

    async def feed(self, ctx: RequestContext, chunk: bytes) -> bytes | Verdict:
        """The bytes to relay now (``b""`` holds everything back), or ``Verdict("block", …)``
        to end the stream with the terminal ``event: error`` frame instead."""
        ...

    async def end(self, ctx: RequestContext) -> bytes | Verdict:
        """The held-back bytes, when the upstream stream is over (normally or cut)."""
        ...
