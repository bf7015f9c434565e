"""The control-plane store: organizations, teams, projects, model providers, routing policies,
virtual keys, budgets, the spend ledger and the change feed.

Embedded default: a SQLite file ``<data_dir>/tollway.db``; ``TOLLWAY_DATABASE_URL=
postgresql://…`` selects PostgreSQL (same schema, same numbered migrations, applied at open).
The API is synchronous — the HTTP layer calls it from worker threads
(``asyncio.to_thread``). Every write that changes what a gateway serves appends a change event
in the same transaction.

:class:`Store` is composed of one part per resource (``_scopes``, ``_keys``, ``_providers``,
``_policies``, ``_budgets``, ``_ledger``, ``_api_tokens``, on the shared ``_base``); records are in
``_records``, the vocabulary and single-value checks in ``_values``. Import them all from
here.

Errors (all :class:`StoreError`, whose ``status`` suggests the HTTP status)::

    StoreError
    ├── NotFound          404  no such id
    ├── Conflict          409  the write contradicts the current state (revoked key, name taken)
    ├── ValidationError   422  bad input; ``problems`` lists "path: message" lines
    └── KeyRejected       401  resolve: ``code`` is unknown_key | revoked | disabled | expired
"""

from __future__ import annotations

import logging
from typing import Any

from tollway_control_plane._api_tokens import ApiToken, ApiTokensMixin
from tollway_control_plane._base import StoreBase, read_store_id, store_target
from tollway_control_plane._budgets import BudgetsMixin, window_start
from tollway_control_plane._db import DatabaseError
from tollway_control_plane._errors import (
    Conflict,
    KeyRejected,
    NotFound,
    StoreError,
    ValidationError,
)
from tollway_control_plane._keys import KeysMixin
from tollway_control_plane._ledger import (
    LEDGER_COLUMNS,
    USAGE_SUMS,
    LedgerMixin,
    check_ledger_entry,
    check_spend_query,
)
from tollway_control_plane._policies import PoliciesMixin
from tollway_control_plane._providers import ProvidersMixin
from tollway_control_plane._records import (
    Budget,
    ChangeEvent,
    ModelProvider,
    Organization,
    PolicyEntry,
    Project,
    RoutingPolicy,
    Scope,
    Team,
    VirtualKey,
)
from tollway_control_plane._scopes import ScopesMixin
from tollway_control_plane._values import (
    BUDGET_SCOPES,
    BUDGET_WINDOWS,
    CHANGE_KINDS,
    DEFAULT_ORGANIZATION,
    DEFAULT_PROJECT,
    DEFAULT_TEAM,
    KEY_SCOPES,
    MAX_MICRO_USD,
    ON_BREACH,
    PER_END_USER,
    PRICE_FIELDS,
    PRIVATE_NETWORK_REFUSED,
    PROVIDER_TYPES,
    ROTATION_GRACE,
    STORED_PROVIDER_HINT,
    check_prices,
    format_usd,
    parse_scope,
    parse_usd,
    slug,
)

__all__ = [
    "BUDGET_SCOPES",
    "BUDGET_WINDOWS",
    "CHANGE_KINDS",
    "DEFAULT_ORGANIZATION",
    "DEFAULT_PROJECT",
    "DEFAULT_TEAM",
    "KEY_SCOPES",
    "LEDGER_COLUMNS",
    "MAX_MICRO_USD",
    "ON_BREACH",
    "PER_END_USER",
    "PRICE_FIELDS",
    "PRIVATE_NETWORK_REFUSED",
    "PROVIDER_TYPES",
    "ROTATION_GRACE",
    "STORED_PROVIDER_HINT",
    "USAGE_SUMS",
    "ApiToken",
    "Budget",
    "ChangeEvent",
    "Conflict",
    "DatabaseError",
    "KeyRejected",
    "ModelProvider",
    "NotFound",
    "Organization",
    "PolicyEntry",
    "Project",
    "RoutingPolicy",
    "Scope",
    "Store",
    "StoreError",
    "Team",
    "ValidationError",
    "VirtualKey",
    "check_ledger_entry",
    "check_prices",
    "check_spend_query",
    "format_usd",
    "parse_scope",
    "parse_usd",
    "read_store_id",
    "slug",
    "store_target",
    "window_start",
]

log = logging.getLogger("tollway_control_plane")


class Store(
    ScopesMixin,
    KeysMixin,
    ProvidersMixin,
    PoliciesMixin,
    BudgetsMixin,
    LedgerMixin,
    ApiTokensMixin,
    StoreBase,
):
    """The control-plane store. Open with :meth:`open`; thread-safe; close with :meth:`close`.

    ``pepper`` hashes key secrets and derives the credential-encryption key: it must be the
    same for the life of the store. ``outbound`` is the SSRF guard every URL written here is
    checked with (provider base URLs and token endpoints, guardrail webhook URLs in key configs);
    ``allow_private_base_urls=True`` is the guard of ``ENVIRONMENT=local`` (off).
    ``plugin_sections`` returns the names of installed plugins' key-config sections.
    """

    # --- the config bundle ----------------------------------------------------------------

    def bundle(self, key_id: str) -> dict[str, Any]:
        """The config bundle a gateway caches for a key (decrypted credentials included)."""
        key = self.get_key(key_id)
        policy = self.key_routing_policy(key)
        providers: list[dict[str, Any]] = []
        for provider, model, weight in self.weighted_policy_chain(key):
            if isinstance(provider, str):
                # A provider of the gateway's config file, by name (the gateway resolves it).
                providers.append({"config_provider": provider, "model": model, "weight": weight})
                continue
            providers.append(
                {
                    "id": provider.id,
                    "name": provider.name,
                    "type": provider.type,
                    "base_url": provider.base_url,
                    "api_key": self.provider_credential(provider.id),
                    "models": provider.models,
                    "priority": provider.priority,
                    "config": provider.config,
                    "revision": provider.revision,
                    "rpm": provider.rpm,
                    "tpm": provider.tpm,
                    "rpd": provider.rpd,
                    "model": model,
                    "weight": weight,
                }
            )
        return {
            "vk_id": key.id,
            "revision": key.revision,
            "name": key.name,
            "display_prefix": key.display_prefix,
            "status": key.effective_status(),
            "expires_at": key.expires_at,
            "organization_id": key.organization_id,
            "team_id": key.team_id,
            "project_id": key.project_id,
            "principal_id": key.principal_id,
            "config": key.config,
            # Set when a routing policy ordered "providers": the gateway then routes to exactly
            # them; null: it adds its own config-file providers after them.
            "routing_policy_id": policy.id if policy is not None else None,
            # How the gateway walks "providers" per request (tollway.routing).
            "routing_strategy": policy.strategy if policy is not None else "ordered",
            "providers": providers,
            "budgets": [b.to_bundle() for b in self.key_budgets(key)],
            "extras": {"otel_auth_token": _ingest_token(self, key)},
        }


def _ingest_token(store: Store, key: VirtualKey) -> str:
    """The per-project OTLP ingest token a key's bundle carries (see :mod:`.ingest`)."""
    from tollway_control_plane.ingest import bundle_token

    return bundle_token(store, key)
