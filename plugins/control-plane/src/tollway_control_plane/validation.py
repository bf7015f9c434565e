"""What the admin operations accept, field by field: checked before the store is touched, and
the same table renders the request schemas of the admin API's OpenAPI document.

Every operation of :data:`~tollway_control_plane.service.OPERATIONS` that takes a body has an
entry in :data:`BODIES` (field name → :class:`Field`); :func:`check_body` refuses a body with
one ``field: what is allowed`` line per problem (a :class:`~tollway_control_plane.store.
ValidationError`, 422 over HTTP, ``refused: …`` in the CLI), and :func:`check_path_id` refuses an
id that no record can have. The limits are those of both stores (SQLite and PostgreSQL):

- times: ISO-8601 with a UTC offset (``2027-01-01T00:00:00Z``) or a date (UTC midnight),
  between :data:`MIN_TIME` and :data:`MAX_TIME`;
- money: 0 … :data:`MAX_USD` USD in micro-dollar steps (a signed 64-bit count of micro-USD);
- integers: signed 64-bit; rate limits at least 1;
- strings: no NUL and no unpaired surrogate (PostgreSQL stores neither), at most a stated
  length; ids: letters, digits and ``_ - . : @``;
- JSON configs: at most :data:`MAX_CONFIG_BYTES` bytes and :data:`MAX_CONFIG_DEPTH` levels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
import orjson

from tollway.routing import STRATEGIES, weight_problem
from tollway_control_plane.auth import PERMISSIONS, parse_permissions
from tollway_control_plane.store import (
    BUDGET_WINDOWS,
    ON_BREACH,
    PROVIDER_TYPES,
    ValidationError,
)

__all__ = [
    "BODIES",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_TIME",
    "MAX_USD",
    "MIN_TIME",
    "Field",
    "check_body",
    "check_path_id",
    "check_time",
    "check_usd",
    "request_schema",
]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
#: The largest budget limit: what a signed 64-bit count of micro-USD holds.
MAX_USD = Decimal(INT64_MAX) / 1_000_000
MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 16
MAX_NAME = 200
MAX_ID = 128
MAX_EXTERNAL_ID = 256
MAX_URL = 2048
MAX_SECRET = 8192
MAX_MODELS = 1000
MAX_MODEL = 256
MAX_POLICY_ENTRIES = 100

#: A store id (``vk_01J…``, ``org_default``) or an external id (a principal, an end user).
ID_PATTERN = r"^[A-Za-z0-9_.:@-]+$"
_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]+")


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no unpaired surrogates)"
    return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), iteratively (no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if level > MAX_CONFIG_DEPTH + 1:
            return level
        stack.extend((child, level) for child in children)
    return deepest


def check_time(name: str, value: str) -> datetime:
    """``value`` as an aware UTC time in range, or :class:`ValidationError` naming ``name``."""
    problem = _text_problem(value)
    if problem:
        raise ValidationError(f"{name}: {problem}")
    hint = "write e.g. 2027-01-01T00:00:00Z (or a date, 2027-01-01, meaning UTC midnight)"
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{name}: {value[:64]!r} is not an ISO-8601 time; {hint}") from None
    if dt.tzinfo is None:
        if len(text) > 10:  # a time of day without an offset is ambiguous
            raise ValidationError(
                f"{name}: {value[:64]!r} has no UTC offset; add Z or +HH:MM ({hint})"
            )
        dt = dt.replace(tzinfo=UTC)
    utc: datetime | None
    try:
        utc = dt.astimezone(UTC)  # 9999-12-31T23:00-05:00 is past datetime.max in UTC
    except OverflowError:
        utc = None
    if utc is None or not MIN_TIME <= utc <= MAX_TIME:
        raise ValidationError(
            f"{name}: {value[:64]!r} is out of range; write a time between "
            "2000-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
        )
    return utc


def check_usd(name: str, value: Any) -> Decimal:
    """An amount of USD (a number or a string like ``"12.50"`` or ``"$5"``) within 0 …
    :data:`MAX_USD` in micro-dollar steps."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationError(f"{name}: must be an amount in USD (a number or a string like 12.50)")
    text = str(value).strip()
    if len(text) > 64:
        raise ValidationError(f"{name}: at most 64 characters")
    try:
        amount = Decimal(text.lstrip("$"))
    except InvalidOperation:
        raise ValidationError(
            f"{name}: {text!r} is not an amount in USD (e.g. 100 or 12.50)"
        ) from None
    if not amount.is_finite() or amount < 0 or amount > MAX_USD:
        raise ValidationError(f"{name}: {text!r} must be between 0 and {MAX_USD} USD")
    if amount * 1_000_000 != (amount * 1_000_000).to_integral_value():
        raise ValidationError(f"{name}: {text!r} has more precision than a micro-dollar")
    return amount


@attrs.frozen
class Field:
    """One body field: its JSON schema (what the OpenAPI document shows) and a checker that
    returns a problem (``must be …``) or None. ``null`` is allowed when ``nullable``."""

    schema: dict[str, Any]
    check: Callable[[str, Any], str | None]
    nullable: bool = False

    def problem(self, name: str, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else f"{name}: must not be null"
        problem = self.check(name, value)
        return None if problem is None else f"{name}: {problem}"

    def json_schema(self) -> dict[str, Any]:
        schema = dict(self.schema)
        if self.nullable:
            kinds = schema.get("type")
            if isinstance(kinds, str):
                schema["type"] = [kinds, "null"]
            elif isinstance(kinds, list):
                schema["type"] = [*kinds, "null"]
            elif "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
        return schema


def _string(
    max_length: int,
    *,
    min_length: int = 0,
    pattern: str | None = None,
    blank: bool = True,
    what: str = "",
) -> Callable[[str, Any], str | None]:
    regex = re.compile(pattern) if pattern else None

    def check(name: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if len(value) > max_length:
            return f"at most {max_length} characters (got {len(value)})"
        if len(value) < min_length or (not blank and not value.strip()):
            return "must not be empty"
        problem = _text_problem(value)
        if problem:
            return problem
        if regex is not None and not regex.fullmatch(value):
            return what or f"must match {pattern}"
        return None

    return check


def _str_field(
    max_length: int,
    *,
    nullable: bool = False,
    min_length: int = 0,
    pattern: str | None = None,
    blank: bool = True,
    what: str = "",
    **schema: Any,
) -> Field:
    body: dict[str, Any] = {"type": "string", "maxLength": max_length, **schema}
    if min_length:
        body["minLength"] = min_length
    if pattern:
        body["pattern"] = pattern
    check = _string(max_length, min_length=min_length, pattern=pattern, blank=blank, what=what)
    return Field(body, check, nullable)


def _name(nullable: bool = False) -> Field:
    return _str_field(MAX_NAME, nullable=nullable, min_length=1, blank=False)


def _id(nullable: bool = False, description: str = "") -> Field:
    schema: dict[str, Any] = {"description": description} if description else {}
    return _str_field(
        MAX_ID,
        nullable=nullable,
        min_length=1,
        pattern=ID_PATTERN,
        what="must be an id (letters, digits and _ - . : @)",
        **schema,
    )


def _external_id(nullable: bool = True) -> Field:
    return _str_field(MAX_EXTERNAL_ID, nullable=nullable, min_length=1, blank=False)


def _enum(values: tuple[str, ...], nullable: bool = False, **schema: Any) -> Field:
    def check(name: str, value: Any) -> str | None:
        if value not in values or not isinstance(value, str):
            return f"must be one of {', '.join(values)}"
        return None

    return Field({"type": "string", "enum": list(values), **schema}, check, nullable)


def _bool() -> Field:
    def check(name: str, value: Any) -> str | None:
        return None if isinstance(value, bool) else "must be true or false"

    return Field({"type": "boolean"}, check)


def _int(minimum: int, maximum: int = INT64_MAX, nullable: bool = False, **schema: Any) -> Field:
    def check(name: str, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if not minimum <= value <= maximum:
            return f"must be an integer between {minimum} and {maximum}"
        return None

    body = {"type": "integer", "minimum": minimum, "maximum": maximum, **schema}
    return Field(body, check, nullable)


def _time(nullable: bool = True, **schema: Any) -> Field:
    def check(name: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be an ISO-8601 time string, not {_type_name(value)}"
        try:
            check_time(name, value)
        except ValidationError as exc:
            return exc.message.partition(": ")[2]
        return None

    body = {
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
        "description": "RFC 3339 with an offset, between 2000-01-01T00:00:00Z and "
        "9999-12-31T23:59:59Z (a date alone means UTC midnight)",
        **schema,
    }
    return Field(body, check, nullable)


def _usd(**schema: Any) -> Field:
    def check(name: str, value: Any) -> str | None:
        try:
            check_usd(name, value)
        except ValidationError as exc:
            return exc.message.partition(": ")[2]
        return None

    body = {
        "description": f"USD, 0 to {MAX_USD}, at most 6 decimals (a number or a string "
        "like '12.50')",
        "oneOf": [
            {"type": "number", "minimum": 0, "maximum": float(MAX_USD)},
            {"type": "string", "maxLength": 64, "pattern": r"^\$?[0-9]+(\.[0-9]{1,6})?$"},
        ],
        **schema,
    }
    return Field(body, check)


def _config(nullable: bool = True, **schema: Any) -> Field:
    def check(name: str, value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"must be a JSON object, not {_type_name(value)}"
        if _depth(value) > MAX_CONFIG_DEPTH:
            return f"nested deeper than {MAX_CONFIG_DEPTH} levels"
        problem = _json_text_problem(value)
        if problem:
            return problem
        try:
            size = len(orjson.dumps(value))
        except (TypeError, orjson.JSONEncodeError) as exc:
            return f"is not storable JSON ({exc})"
        if size > MAX_CONFIG_BYTES:
            return f"at most {MAX_CONFIG_BYTES} bytes of JSON (got {size})"
        return None

    body = {
        "type": "object",
        "description": f"A JSON object of at most {MAX_CONFIG_BYTES} bytes and "
        f"{MAX_CONFIG_DEPTH} levels",
        **schema,
    }
    return Field(body, check, nullable)


def _json_text_problem(value: Any) -> str | None:
    """NULs, lone surrogates or out-of-range integers anywhere in a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"strings in it {problem}"
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not INT64_MIN <= item <= INT64_MAX
        ):
            return "integers in it must fit in 64 bits"
    return None


def _models() -> Field:
    item = _string(MAX_MODEL, min_length=1, blank=False)

    def check(name: str, value: Any) -> str | None:
        if isinstance(value, str):
            return _string(MAX_MODELS * 16)(name, value)
        if not isinstance(value, list):
            return "must be a list of model ids, or a comma-separated string"
        if len(value) > MAX_MODELS:
            return f"at most {MAX_MODELS} models (got {len(value)})"
        for i, model in enumerate(value):
            problem = item(name, model)
            if problem:
                return f"[{i}] {problem}"
        return None

    body = {
        "description": "model ids or trailing-* globs: a list, or 'a,b'",
        "oneOf": [
            {
                "type": "array",
                "maxItems": MAX_MODELS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_MODEL},
            },
            {"type": "string", "maxLength": MAX_MODELS * 16},
        ],
    }
    return Field(body, check, nullable=True)


def _policy_providers() -> Field:
    provider_id = _string(MAX_ID, min_length=1)
    model = _string(MAX_MODEL)

    def check(name: str, value: Any) -> str | None:
        if isinstance(value, str):
            return _string(MAX_POLICY_ENTRIES * (MAX_ID + MAX_MODEL + 10))(name, value)
        if not isinstance(value, list):
            return "must be 'ID,ID:model,ID:weight' or a list of {provider_id, model, weight}"
        if len(value) > MAX_POLICY_ENTRIES:
            return f"at most {MAX_POLICY_ENTRIES} entries (got {len(value)})"
        for i, entry in enumerate(value):
            if isinstance(entry, str):
                problem = _string(MAX_ID + MAX_MODEL + 9)(name, entry)
            elif isinstance(entry, Mapping):
                unknown = [k for k in entry if k not in ("provider_id", "model", "weight")]
                if unknown:
                    return f"[{i}].{unknown[0]}: unknown field (known: provider_id, model, weight)"
                if "weight" in entry and weight_problem(entry["weight"]):
                    return f"[{i}].weight: {weight_problem(entry['weight'])}"
                problem = provider_id(name, entry.get("provider_id"))
                if problem:
                    return f"[{i}].provider_id: {problem}"
                if entry.get("model") is not None:
                    problem = model(name, entry["model"])
                    if problem:
                        return f"[{i}].model: {problem}"
                continue
            else:
                problem = "must be 'ID', 'ID:model' or {provider_id, model}"
            if problem:
                return f"[{i}] {problem}"
        return None

    entry = {
        "type": "object",
        "additionalProperties": False,
        "required": ["provider_id"],
        "properties": {
            "provider_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID},
            "model": {"type": ["string", "null"], "maxLength": MAX_MODEL},
            "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        },
    }
    body = {
        "description": "'mp_a:3,mp_b:model:1' or [{provider_id, model, weight}]",
        "oneOf": [
            {"type": "string", "maxLength": MAX_POLICY_ENTRIES * (MAX_ID + MAX_MODEL + 10)},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_POLICY_ENTRIES,
                "items": {
                    "oneOf": [
                        {"type": "string", "maxLength": MAX_ID + MAX_MODEL + 9},
                        entry,
                    ]
                },
            },
        ],
    }
    return Field(body, check)


def _scope(description: str, nullable: bool = False) -> Field:
    # The kind is checked by the store (its message lists the kinds); ids of principals and
    # end users are free-form.
    body = {"type": "string", "maxLength": MAX_EXTERNAL_ID + 32, "description": description}
    return Field(body, _string(MAX_EXTERNAL_ID + 32), nullable)


def _permissions() -> Field:
    def check(name: str, value: Any) -> str | None:
        try:
            parse_permissions(value if isinstance(value, str | list) else [value])
        except ValidationError as exc:
            return exc.message.removeprefix("permissions: ")
        return None

    item = {"type": "string", "enum": [*PERMISSIONS, "*"]}
    body = {
        "description": "permissions, a list or 'a,b' (* for all)",
        "oneOf": [{"type": "array", "minItems": 1, "items": item}, {"type": "string"}],
    }
    return Field(body, check)


_KEY_SCOPE = _scope("organization|team|project[:ID]", nullable=True)
_RATE = _int(1, nullable=True, description="a positive limit; null: no limit")
_PRIORITY = _int(INT64_MIN, description="lower is tried first")

#: Operation name → field name → :class:`Field`; a body may hold only these.
BODIES: dict[str, dict[str, Field]] = {
    "keys.create": {
        "name": _name(),
        "scope": _KEY_SCOPE,
        "env": _enum(("live", "test")),
        "config": _config(description="The key's config"),
        "routing_policy_id": _id(nullable=True),
        "expires_at": _time(),
        "principal_id": _external_id(),
    },
    "keys.update": {
        "name": _name(),
        "config": _config(description="JSON merge patch: null clears a field"),
        "routing_policy_id": _id(nullable=True),
        "expires_at": _time(),
        "principal_id": _external_id(),
    },
    "providers.create": {
        "type": _enum(PROVIDER_TYPES),
        "name": _name(),
        "api_key": _str_field(MAX_SECRET, nullable=True, writeOnly=True),
        "base_url": _str_field(MAX_URL, nullable=True),
        "config": _config(),
        "rpm": _RATE,
        "tpm": _RATE,
        "rpd": _RATE,
        "priority": _PRIORITY,
        "scope": _KEY_SCOPE,
        "models": _models(),
    },
    "providers.update": {
        "name": _name(),
        "api_key": _str_field(MAX_SECRET, nullable=True, writeOnly=True),
        "base_url": _str_field(MAX_URL, nullable=True),
        "config": _config(description="JSON merge patch"),
        "rpm": _RATE,
        "tpm": _RATE,
        "rpd": _RATE,
        "priority": _PRIORITY,
        "models": _models(),
    },
    "policies.create": {
        "name": _name(),
        "providers": _policy_providers(),
        "strategy": _enum(STRATEGIES),
        "is_default": _bool(),
        "organization_id": _id(),
    },
    "policies.update": {
        "name": _name(),
        "providers": _policy_providers(),
        "strategy": _enum(STRATEGIES),
        "is_default": _bool(),
    },
    "budgets.create": {
        "scope": _scope(
            "organization|team|project[:ID], virtual_key:ID, principal:ID, end_user:ID "
            "(end_user:* caps each end user separately)",
        ),
        "organization_id": _id(
            nullable=True, description="the organization of a principal or end_user budget"
        ),
        "window": _enum(BUDGET_WINDOWS),
        "limit_usd": _usd(),
        "on_breach": _enum(ON_BREACH),
        "name": _name(nullable=True),
    },
    "budgets.update": {
        "limit_usd": _usd(),
        "on_breach": _enum(ON_BREACH),
        "name": _name(nullable=True),
    },
    "scopes.create": {
        "type": _enum(("organization", "team", "project")),
        "name": _name(),
        "parent_id": _id(nullable=True, description="the team's organization / the project's team"),
    },
}

BODIES["api_tokens.create"] = {
    "name": _name(),
    "scope": _scope("organization|team:ID|project:ID (default: the calling token's scope)"),
    "permissions": _permissions(),
    "expires_at": _time(),
}

#: Fields a create must have.
REQUIRED: dict[str, tuple[str, ...]] = {
    "keys.create": ("name",),
    "providers.create": ("type", "name"),
    "policies.create": ("name", "providers"),
    "budgets.create": ("scope", "limit_usd"),
    "scopes.create": ("type", "name"),
    "api_tokens.create": ("permissions",),
}


def check_body(op: str, body: Any) -> None:
    """Refuse ``body`` for operation ``op`` unless every field is one the store can hold.

    Raises :class:`ValidationError` with one ``field: message`` line per problem."""
    fields = BODIES.get(op)
    if fields is None or body is None:
        return
    if not isinstance(body, Mapping):
        raise ValidationError(f"body: must be a JSON object, not {_type_name(body)}")
    problems = []
    for name, value in body.items():
        field = fields.get(name)
        if field is None:
            known = ", ".join(fields)
            problems.append(f"{str(name)[:64]}: unknown field (known: {known})")
            continue
        problem = field.problem(name, value)
        if problem:
            problems.append(problem)
    problems.extend(f"{name}: required" for name in REQUIRED.get(op, ()) if name not in body)
    if problems:
        raise ValidationError(problems)


def check_path_id(value: str | None) -> bool:
    """Whether ``value`` can be the id of a record (else the record cannot exist: 404)."""
    return bool(value) and len(value or "") <= MAX_ID and bool(_ID_RE.fullmatch(value or ""))


def request_schema(op: str) -> dict[str, Any]:
    """The JSON schema of ``op``'s request body, for the OpenAPI document."""
    fields = BODIES.get(op, {})
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: field.json_schema() for name, field in fields.items()},
    }
    if REQUIRED.get(op):
        schema["required"] = list(REQUIRED[op])
    return schema
