"""Model prices and the cost of a request, in integer micro-USD.

Prices come from the packaged price table (litellm's ``model_prices_and_context_window``, USD
per token, see ``data/SOURCE.md``), overridden per model provider by its ``config.prices``
(USD per million tokens — which is exactly micro-USD per token). Every price is converted once
to an exact :class:`~fractions.Fraction` of micro-USD per token (through the decimal text of
the number, so ``2.5e-06`` USD is exactly 5/2 micro-USD, never a binary float's neighbour);
a request's cost is the exact sum ``sum(tokens * price)``, **rounded once, half up, to a whole
micro-USD**. Sums of costs are then plain integers: order-independent, no drift.

Token classes (:class:`tollway.Usage`, as the provider adapters fill it):

* ``input_tokens`` — prompt tokens *not* read from or written to a cache (the OpenAI adapters
  already subtract ``cached_tokens``), at the input price;
* ``cache_read_input_tokens`` at the cache-read price, ``cache_creation_input_tokens`` at the
  cache-write price (Anthropic's 5-minute write; the 1-hour write is not reported apart);
* ``output_tokens`` at the output price. Reasoning tokens are output: OpenAI and Anthropic count
  them inside ``output_tokens`` (``reasoning_tokens`` ≤ ``output_tokens``), so they are not
  added twice; a usage whose ``reasoning_tokens`` exceed its ``output_tokens`` was reported
  apart, and both are billed.

Long-context tiers (``*_above_200k_tokens`` …): when the prompt (input + cache read + cache
write) is above a tier's threshold, the whole request is priced at that tier, as the providers
bill it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from importlib.resources import files
from typing import Any

import attrs
import orjson

from tollway import Usage

__all__ = [
    "PRICE_FIELDS",
    "PriceError",
    "PriceTable",
    "Prices",
    "billed_output_tokens",
    "cost_micros",
    "parse_override",
    "round_half_up",
]

log = logging.getLogger("tollway.budgets")

#: Fields of one model's entry in ``config.prices`` (USD per million tokens).
PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
_MICROS_PER_USD = 1_000_000
_TABLE_FIELDS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
}
_TIER = re.compile(
    r"(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|"
    r"cache_creation_input_token_cost)_above_(\d+)k_tokens"
)
_TIER_FIELD = {v: k for k, v in _TABLE_FIELDS.items()}
#: Provider type → the prefix litellm's table uses for that provider's model names.
_TABLE_PREFIX = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure": "azure",
    "bedrock": "bedrock",
    "vertex": "vertex_ai",
    "gemini": "gemini",
}
_DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


class PriceError(ValueError):
    """A price that is not a non-negative number; the message names it."""


def _fraction(value: Any, where: str) -> Fraction:
    """A number (int, float, or decimal string) as an exact Fraction, via its decimal text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise PriceError(f"{where}: {value!r} is not a number")
    try:
        amount = Decimal(value) if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise PriceError(f"{where}: {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PriceError(f"{where}: {value!r} must be a non-negative number")
    return Fraction(amount)


@attrs.frozen
class Prices:
    """One model's prices in micro-USD per token (exact), and its long-context tiers."""

    input: Fraction
    output: Fraction
    cache_read: Fraction
    cache_write: Fraction
    #: ``(threshold, prices)``, ascending: above ``threshold`` prompt tokens, ``prices`` apply.
    tiers: tuple[tuple[int, Prices], ...] = ()
    #: Where they came from: ``table:<entry>``, ``provider:<name>:<entry>`` or ``default``.
    source: str = ""
    #: The most output tokens the model produces in one answer (the table's
    #: ``max_output_tokens``), when known: the worst case of a request without ``max_tokens``.
    max_output_tokens: int | None = None
    #: The four prices as integers over one common denominator (exact; integer arithmetic is
    #: several times faster than Fractions on the request path).
    scaled: tuple[int, int, int, int, int] = attrs.field(
        init=False, eq=False, repr=False, default=(0, 0, 0, 0, 1)
    )

    def __attrs_post_init__(self) -> None:
        prices = (self.input, self.output, self.cache_read, self.cache_write)
        denominator = math.lcm(*(Fraction(p).denominator for p in prices))
        numerators = [int(Fraction(p) * denominator) for p in prices]
        object.__setattr__(self, "scaled", (*numerators, denominator))

    def for_prompt(self, prompt_tokens: int) -> Prices:
        """The prices that apply to a request with ``prompt_tokens`` prompt tokens."""
        chosen = self
        for threshold, tier in self.tiers:
            if prompt_tokens > threshold:
                chosen = tier
        return chosen

    @classmethod
    def per_mtok(
        cls, entry: Mapping[str, Any], base: Prices | None = None, source: str = ""
    ) -> Prices:
        """Prices from a ``config.prices`` entry (USD per million tokens = micro-USD per
        token). Fields it leaves out come from ``base`` (the table's prices for the model),
        else 0 — except the cache prices, which default to the input price."""
        unknown = [k for k in entry if k not in PRICE_FIELDS]
        if unknown:
            raise PriceError(
                f"{', '.join(unknown)}: unknown price field (known: {', '.join(PRICE_FIELDS)})"
            )

        def pick(field: str, fallback: Fraction | None) -> Fraction | None:
            value = entry.get(field)
            return fallback if value is None else _fraction(value, field)

        zero = Fraction(0)
        input_ = pick("input_per_mtok", base.input if base else None)
        input_ = zero if input_ is None else input_
        output = pick("output_per_mtok", base.output if base else None)
        cache_read = pick("cache_read_per_mtok", base.cache_read if base else None)
        cache_write = pick("cache_write_per_mtok", base.cache_write if base else None)
        return cls(
            input=input_,
            output=zero if output is None else output,
            cache_read=input_ if cache_read is None else cache_read,
            cache_write=input_ if cache_write is None else cache_write,
            # An override replaces the table's tiers: its prices are what the provider charges.
            tiers=(),
            source=source,
            max_output_tokens=base.max_output_tokens if base else None,
        )


def round_half_up(value: Fraction) -> int:
    """``value`` (≥ 0) to the nearest integer, halves up: floor(value + 1/2), exactly."""
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


def billed_output_tokens(usage: Usage) -> int:
    """Output tokens to bill: reasoning tokens are counted inside ``output_tokens`` by the
    providers that report them; only a usage that reports more reasoning than output reported
    them apart (and both are billed)."""
    if usage.reasoning_tokens > usage.output_tokens:
        return usage.output_tokens + usage.reasoning_tokens
    return usage.output_tokens


def cost_micros(usage: Usage, prices: Prices) -> int:
    """The cost of ``usage`` at ``prices`` in micro-USD, rounded once (half up)."""
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    i, o, r, w, d = prices.for_prompt(prompt).scaled
    exact = (
        usage.input_tokens * i
        + billed_output_tokens(usage) * o
        + usage.cache_read_input_tokens * r
        + usage.cache_creation_input_tokens * w
    )
    return (2 * exact + d) // (2 * d)  # = round_half_up(exact / d)


def _from_table(name: str, raw: Mapping[str, Any]) -> Prices | None:
    try:
        base: dict[str, Fraction | None] = {}
        for ours, theirs in _TABLE_FIELDS.items():
            value = raw.get(theirs)
            base[ours] = None if value is None else _fraction(value, theirs) * _MICROS_PER_USD
        if base["input"] is None and base["output"] is None:
            return None
        zero = Fraction(0)
        input_ = base["input"] or zero
        prices = Prices(
            input=input_,
            output=base["output"] or zero,
            cache_read=input_ if base["cache_read"] is None else base["cache_read"],
            cache_write=input_ if base["cache_write"] is None else base["cache_write"],
            source=f"table:{name}",
            max_output_tokens=_max_output(raw.get("max_output_tokens")),
        )
        tiers: dict[int, dict[str, Fraction]] = {}
        for key, value in raw.items():
            match = _TIER.fullmatch(key)
            if match is None or value is None:
                continue
            threshold = int(match.group(2)) * 1000
            field = _TIER_FIELD[match.group(1)]
            tiers.setdefault(threshold, {})[field] = _fraction(value, key) * _MICROS_PER_USD
        if tiers:
            prices = attrs.evolve(
                prices,
                tiers=tuple(
                    (threshold, attrs.evolve(prices, tiers=(), **fields))  # type: ignore[arg-type]
                    for threshold, fields in sorted(tiers.items())
                ),
            )
        return prices
    except PriceError:
        return None


def _max_output(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


class PriceTable:
    """The packaged price table: model name → raw prices, converted on first use."""

    def __init__(
        self,
        raw: Mapping[str, Mapping[str, Any]],
        max_output: Mapping[str, int] | None = None,
    ) -> None:
        self._raw = raw
        self._max_output = max_output or {}
        self._converted: dict[str, Prices | None] = {}
        self._lookups: dict[tuple[str, str], Prices | None] = {}

    @classmethod
    def packaged(cls) -> PriceTable:
        """Load ``data/litellm-model-prices.json`` (keeping only the price fields)."""
        data = orjson.loads(
            files("tollway_budgets").joinpath("data/litellm-model-prices.json").read_bytes()
        )
        raw: dict[str, dict[str, Any]] = {}
        max_output: dict[str, int] = {}
        for name, entry in data.items():
            if name == "sample_spec" or not isinstance(entry, dict):
                continue
            most = entry.get("max_output_tokens")
            if isinstance(most, int) and not isinstance(most, bool) and most > 0:
                max_output[name] = most
            kept = {
                k: v
                for k, v in entry.items()
                if k in _TABLE_FIELDS.values()
                or k == "max_output_tokens"
                or _TIER.fullmatch(k) is not None
            }
            if kept:
                raw[name] = kept
        return cls(raw, max_output)

    def max_output(self, model: str, provider_type: str = "") -> int | None:
        """The table's maximum output tokens for ``model`` (names tried as :meth:`lookup`
        does), or None: what the gateway fills in as ``max_tokens`` at most
        (:data:`tollway.routing.MAX_OUTPUT_LOOKUP`)."""
        for name in _candidates(model, provider_type):
            found = self._max_output.get(name)
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return len(self._raw)

    def entry(self, name: str) -> Prices | None:
        """The table's prices under exactly ``name``."""
        if name not in self._converted:
            raw = self._raw.get(name)
            self._converted[name] = None if raw is None else _from_table(name, raw)
        return self._converted[name]

    def lookup(self, model: str, provider_type: str = "") -> Prices | None:
        """Prices for ``model`` served by a provider of ``provider_type``: the provider-prefixed
        name (``azure/gpt-4o``), the bare name, then both without a date or ``-latest``
        suffix (``claude-sonnet-4-5-20250929`` → ``claude-sonnet-4-5``)."""
        key = (model, provider_type)
        if key in self._lookups:
            return self._lookups[key]
        found = None
        for name in _candidates(model, provider_type):
            found = self.entry(name)
            if found is not None:
                break
        if len(self._lookups) > 10_000:
            self._lookups.clear()
        self._lookups[key] = found
        return found


def _candidates(model: str, provider_type: str) -> list[str]:
    names: list[str] = []
    bases = [model]
    if "/" in model:
        bases.append(model.rsplit("/", 1)[1])
    undated = [_DATED.sub("", b) for b in bases]
    prefix = _TABLE_PREFIX.get(provider_type)
    for base in [*bases, *undated]:
        if prefix and not base.startswith(prefix + "/"):
            names.append(f"{prefix}/{base}")
        names.append(base)
    return list(dict.fromkeys(names))


def parse_override(prices: Any, where: str) -> dict[str, Mapping[str, Any]]:
    """A provider's ``config.prices`` checked for shape: ``{model or trailing-* glob: {…}}``.
    Raises :class:`PriceError` naming the entry."""
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise PriceError(f'{where}: must be a table {{"<model>" = {{ input_per_mtok = … }}}}')
    out: dict[str, Mapping[str, Any]] = {}
    for model, entry in prices.items():
        if not isinstance(entry, Mapping):
            raise PriceError(f"{where}.{model}: must be a table with {', '.join(PRICE_FIELDS)}")
        try:
            Prices.per_mtok(entry)
        except PriceError as exc:
            raise PriceError(f"{where}.{model}.{exc}") from None
        out[str(model)] = entry
    return out


def override_entry(prices: Mapping[str, Mapping[str, Any]], model: str) -> str | None:
    """The ``config.prices`` key that prices ``model``: exact, else the longest matching
    trailing-``*`` glob."""
    if model in prices:
        return model
    best: str | None = None
    for key in prices:
        if (
            key.endswith("*")
            and model.startswith(key[:-1])
            and (best is None or len(key) > len(best))
        ):
            best = key
    return best
