"""The cache key: a digest of the normalised request, scoped per project.

Two requests share an entry when they would get the same answer from the same model:

* same endpoint (chat, messages, responses, embeddings) and same **resolved** model (after the
  key's alias);
* same body, compared as parsed JSON: whitespace and the order of top-level fields do not
  matter; nested values (messages, tools, schemas) are compared as sent, order included,
  because property order in a JSON schema can change what a model generates;
* same ``stream`` flag: streamed and non-streamed answers are different wire formats, so they
  are separate entries and each is replayed byte-for-byte as it was first served;
* same ``anthropic-version`` / ``anthropic-beta`` / ``openai-beta`` request headers (they switch
  API behaviour).

Fields that never change the answer are left out: ``user``, ``metadata`` (Claude Code puts its
session id there), ``store``, ``safety_identifier``, ``prompt_cache_key``,
``prompt_cache_retention`` and ``service_tier``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

import orjson

__all__ = [
    "IGNORED_FIELDS",
    "KEYED_HEADERS",
    "cache_digest",
    "cache_scope",
    "cacheable_temperature",
]

#: Bumped when the key material changes shape, so old entries are never misread.
_VERSION = 1

#: Top-level body fields that do not change the answer.
IGNORED_FIELDS = frozenset(
    {
        "stream",  # keyed separately, normalised to a bool
        "model",  # keyed separately, as resolved
        "user",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
    }
)
#: Request headers that switch API behaviour, hence part of the key (lower-case).
KEYED_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta")

_IGNORED = IGNORED_FIELDS
_NAME = itemgetter(0)


def cache_digest(
    endpoint: str,
    model: str,
    stream: bool,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
) -> str:
    """A 128-bit hex digest of the normalised request (see the module docstring).

    Raises :class:`TypeError` when the body cannot be serialised (orjson refuses, e.g., an
    integer over 64 bits): such a request is not cached.
    """
    # Top-level fields in name order (names are unique, so sorting by name alone is the order
    # of the (name, value) pairs: the digest is the one earlier versions made).
    fields = [item for item in body.items() if item[0] not in _IGNORED]
    fields.sort(key=_NAME)
    get = headers.get
    keyed = [(h, get(h)) for h in KEYED_HEADERS]
    material = orjson.dumps([_VERSION, endpoint, model, stream, keyed, fields])
    return hashlib.sha256(material).digest()[:16].hex()


def cache_scope(organization_id: str, project_id: str | None) -> str:
    """Entries are shared within a project (a key without one: within its organization)."""
    return f"{organization_id}/{project_id or '-'}"


def cacheable_temperature(body: Mapping[str, Any]) -> bool:
    """Whether the request asks for a deterministic answer: ``temperature`` absent or ≤ 0.

    An absent temperature counts as deterministic: the key's owner turned the cache on, and a
    client that wants varied samples says so with ``temperature`` > 0 (or
    ``X-LangWatch-Cache: bypass``).
    """
    temperature = body.get("temperature")
    if temperature is None:
        return True
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return False
    return temperature <= 0
