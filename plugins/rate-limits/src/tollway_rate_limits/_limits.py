"""Pure helpers: reading limits, estimating tokens, naming keys, wording answers."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from tollway_rate_limits._window import DAY_MS, NEVER, Decision, Spec

__all__ = [
    "DIMENSIONS",
    "InvalidLimits",
    "Limits",
    "ScopeSpecs",
    "TokenEstimate",
    "estimate_tokens",
    "go_duration",
    "human_wait",
    "key_base",
    "parse_limits",
    "provider_base",
    "scope_specs",
    "specs_for",
    "success_headers",
]

DIMENSIONS = ("rpm", "rpd", "tpm")
_UNITS = {"rpm": "requests per minute", "rpd": "requests per day", "tpm": "tokens per minute"}
_MAX_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class InvalidLimits(ValueError):
    """A key's ``rate_limits`` holds something other than integers >= 0 or null."""


@attrs.frozen
class Limits:
    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.rpd is not None or self.tpm is not None


NO_LIMITS = Limits()


def parse_limits(raw: Any) -> Limits:
    """``{"rpm": N|null, "rpd": N|null, "tpm": N|null}`` (absent or null: off). Unknown fields
    are ignored (the control plane validates on write); a value that is not a whole number >= 0
    raises :class:`InvalidLimits` naming the field."""
    if raw is None:
        return NO_LIMITS
    if not isinstance(raw, Mapping):
        raise InvalidLimits(f"rate_limits must be an object, not {type(raw).__name__}")
    values: dict[str, int | None] = {}
    for name in DIMENSIONS:
        value = raw.get(name)
        if value is None:
            values[name] = None
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidLimits(f"rate_limits.{name} must be a whole number >= 0 or null")
        else:
            values[name] = value
    if not any(v is not None for v in values.values()):
        return NO_LIMITS
    return Limits(**values)


@attrs.frozen
class TokenEstimate:
    """A request's worst case for ``tpm``: its output cap plus its input (body bytes / 4)."""

    input_tokens: int
    output_tokens: int
    #: Whether ``output_tokens`` came from the body (else it is the configured default).
    explicit: bool

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def cost(self, limit: int) -> int:
        """The reservation against ``limit``: a default guess never exceeds the limit itself
        (so a request without ``max_tokens`` can pass on an idle key); an explicit cap does."""
        total = max(1, self.total)
        if not self.explicit and total > limit:
            return max(1, limit)
        return total

    def describe(self) -> str:
        source = "max_tokens" if self.explicit else "assumed output, no max_tokens set"
        return f"{self.output_tokens} ({source}) + ~{self.input_tokens} input"


def estimate_tokens(
    body: Mapping[str, Any], raw_len: int, default_output: int, *, embeddings: bool
) -> TokenEstimate:
    """The ``tpm`` pre-check's estimate for one request."""
    input_tokens = math.ceil(raw_len / 4)
    if embeddings:
        return TokenEstimate(input_tokens, 0, True)
    for name in _MAX_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return TokenEstimate(input_tokens, value, True)
    return TokenEstimate(input_tokens, default_output, False)


def key_base(prefix: str, organization_id: str, key_id: str) -> str:
    """Key names of a virtual key's counters; the hash tag keeps them on one cluster slot."""
    return f"{prefix}:{{org:{_tag(organization_id)}}}:vk:{key_id}"


def provider_base(prefix: str, provider_key: str) -> str:
    """Key names of a provider credential's counters (shared by every key that uses it)."""
    return f"{prefix}:{{prov:{_tag(provider_key)}}}:p"


def _tag(value: str) -> str:
    return value.replace("{", "(").replace("}", ")")


@attrs.frozen
class ScopeSpecs:
    """One scope's specs less the request's ``tpm`` cost: built once per key (or provider
    credential) and reused for each of its requests."""

    limits: Limits
    #: rpm and rpd (each costs 1 per request).
    fixed: tuple[Spec, ...]
    #: tpm's ``(log, total)`` keys, when the scope has a tpm limit.
    tpm_keys: tuple[str, str] | None

    def specs(self, estimate: TokenEstimate | None) -> list[Spec]:
        """The request's specs, in the order rpm, rpd, tpm (tpm only with an estimate)."""
        specs = list(self.fixed)
        tpm = self.limits.tpm
        if self.tpm_keys is not None and tpm is not None and estimate is not None:
            specs.append(Spec("tpm", "log", self.tpm_keys, tpm, estimate.cost(tpm)))
        return specs


def scope_specs(base: str, limits: Limits) -> ScopeSpecs:
    """The per-scope part of :func:`specs_for`."""
    fixed = []
    if limits.rpm is not None:
        fixed.append(Spec("rpm", "log", (f"{base}:rpm", f"{base}:rpm:n"), limits.rpm, 1))
    if limits.rpd is not None:
        fixed.append(Spec("rpd", "day", (f"{base}:rpd",), limits.rpd, 1))
    tpm_keys = (f"{base}:tpm", f"{base}:tpm:n") if limits.tpm is not None else None
    return ScopeSpecs(limits, tuple(fixed), tpm_keys)


def specs_for(base: str, limits: Limits, estimate: TokenEstimate | None) -> list[Spec]:
    """The specs of one scope, in the order rpm, rpd, tpm."""
    return scope_specs(base, limits).specs(estimate)


def go_duration(ms: int) -> str:
    """OpenAI's reset format (Go durations): ``250ms``, ``1s``, ``6m0s``, ``2h3m4s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = math.ceil(ms / 1000)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def human_wait(ms: int) -> str:
    """``12 s``, ``3 min 5 s``, ``5 h 3 min`` (whole seconds, rounded up)."""
    seconds = max(1, math.ceil(ms / 1000))
    if seconds < 60:
        return f"{seconds} s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m} min"
    return f"{m} min {s} s" if s else f"{m} min"


def reset_ms(spec: Spec, now_ms: int, window_ms: int) -> int:
    """Time until an admitted spec is back to its full allowance: a whole window after the
    newest entry of a log (this one), midnight UTC for a day."""
    if spec.kind == "day":
        return (now_ms // DAY_MS + 1) * DAY_MS - now_ms
    return window_ms


def success_headers(
    specs: Sequence[Spec], decision: Decision, window_ms: int, out: dict[str, str]
) -> None:
    """OpenAI-style ``x-ratelimit-*`` headers for an admitted request. ``-requests`` reports
    whichever of rpm / rpd has less headroom; ``-tokens`` reports tpm."""
    best: tuple[int, Spec] | None = None
    for spec, remaining in zip(specs, decision.remaining, strict=True):
        if spec.dimension == "tpm":
            _put(out, "tokens", spec, remaining, reset_ms(spec, decision.now_ms, window_ms))
        elif best is None or remaining < best[0]:
            best = (remaining, spec)
    if best is not None:
        remaining, spec = best
        _put(out, "requests", spec, remaining, reset_ms(spec, decision.now_ms, window_ms))


#: Per unit: the names of its limit, remaining and reset headers.
_HEADER_NAMES = {
    unit: tuple(f"x-ratelimit-{part}-{unit}" for part in ("limit", "remaining", "reset"))
    for unit in ("requests", "tokens")
}
#: ``go_duration`` of the resets that repeat (a sliding window's is the window itself).
_reset_text = functools.lru_cache(maxsize=256)(go_duration)


def _put(out: dict[str, str], unit: str, spec: Spec, remaining: int, reset: int) -> None:
    limit, left, reset_name = _HEADER_NAMES[unit]
    out[limit] = str(spec.limit)
    out[left] = str(max(0, remaining))
    out[reset_name] = _reset_text(reset)


def refusal_message(
    scope: str,
    spec: Spec,
    decision: Decision,
    window_ms: int,
    estimate: TokenEstimate | None,
    fix: str,
) -> str:
    """Say which limit refused, what it is, when it resets, and what to change."""
    unit = _UNITS[spec.dimension]
    window = f"{window_ms / 1000:g} s"
    if spec.dimension == "tpm":
        what = (
            f"{scope} allows {spec.limit} {unit} (tpm); {decision.used} are in use in the last "
            f"{window} and this request may use up to {spec.cost}"
        )
        if estimate is not None:
            what += f" ({estimate.describe()})"
    elif spec.dimension == "rpd":
        what = f"{scope} allows {spec.limit} {unit} (rpd, UTC calendar day) and they are used up"
    else:
        what = (
            f"{scope} allows {spec.limit} {unit} (rpm) and {decision.used} were made in the "
            f"last {window}"
        )
    if decision.retry_ms == NEVER:
        if spec.dimension == "tpm":
            return (
                f"rate limit exceeded: {what}, more than the limit itself; lower max_tokens (or "
                f"set it) so that a single request fits, or {fix}"
            )
        return f"rate limit exceeded: {what}, so no request can pass; {fix}"
    if spec.dimension == "rpd":
        when = f"it resets at 00:00 UTC, in {human_wait(decision.retry_ms)}"
    else:
        when = f"retry in {human_wait(decision.retry_ms)} (the window slides)"
    return f"rate limit exceeded: {what}; {when}, or {fix}"
