"""Frozen value types that cross the plugin boundary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from tollway.config import ProviderConfig

__all__ = ["Attempt", "ChainEntry", "Credential", "Principal", "RouteTarget", "Usage", "Verdict"]


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


@attrs.frozen
class Usage:
    """Token usage as the provider reported it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
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
