"""Model providers: their checks (URL, models, config, the installed adapter's own), the
encrypted credential, and which providers a scope sees."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tollway.egress import PROVIDER_KEY as PROXY_KEY
from tollway.egress import proxy_problem
from tollway.outbound import OutboundPolicy
from tollway_control_plane._base import StoreBase
from tollway_control_plane._crypto import mask_secret
from tollway_control_plane._db import IntegrityError
from tollway_control_plane._errors import Conflict, NotFound, ValidationError
from tollway_control_plane._records import ModelProvider, Scope, _records
from tollway_control_plane._util import UNSET, Unset, dumps, format_time, loads, new_id, now
from tollway_control_plane._values import (
    PRIVATE_NETWORK_REFUSED,
    PROVIDER_TYPES,
    STORED_PROVIDER_HINT,
    _name,
    _positive,
    check_prices,
)
from tollway_control_plane.vkconfig import merge_patch


class ProvidersMixin(StoreBase):
    def _check_base_url(self, base_url: str | None, ptype: str) -> str | None:
        if base_url is None or base_url == "":
            if ptype == "custom":
                raise ValidationError("base_url: a custom (OpenAI-compatible) provider needs one")
            return None
        problem = self.outbound.url_problem(base_url, hint=STORED_PROVIDER_HINT)
        if problem is not None:
            raise ValidationError(f"base_url: {problem}")
        return base_url

    @staticmethod
    def _check_models(models: Any) -> list[str] | None:
        if models is None:
            return None
        if not isinstance(models, list | tuple) or not all(
            isinstance(m, str) and m for m in models
        ):
            raise ValidationError("models: must be a list of model ids or trailing-* globs")
        for m in models:
            if "*" in m[:-1]:
                raise ValidationError(f"models: {m!r}: '*' is only allowed at the end")
        return list(models) or None

    @staticmethod
    def _check_provider_config(config: Any) -> dict[str, Any]:
        if config is None:
            return {}
        if not isinstance(config, Mapping):
            raise ValidationError("config: the provider config must be a JSON object")
        if "allow_private_network" in config:
            raise ValidationError(f"config.allow_private_network: {PRIVATE_NETWORK_REFUSED}")
        problems = check_prices(config.get("prices"))
        proxy = proxy_problem(config.get(PROXY_KEY))
        if proxy is not None:
            problems.append(f"config.{PROXY_KEY}: {proxy}")
        if problems:
            raise ValidationError(problems)
        cleaned = merge_patch({}, config)
        assert isinstance(cleaned, dict)
        return cleaned

    def create_provider(
        self,
        *,
        type: str,
        name: str,
        api_key: str | None = None,
        base_url: str | None = None,
        config: Mapping[str, Any] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        rpd: int | None = None,
        priority: int = 0,
        scope: str | Scope | None = None,
        models: Sequence[str] | None = None,
    ) -> ModelProvider:
        if type not in PROVIDER_TYPES:
            raise ValidationError(
                f"type: {type!r} is not a provider type; use one of {', '.join(PROVIDER_TYPES)}"
            )
        name = _name(name, "provider")
        resolved = self.resolve_scope(scope)
        url = self._check_base_url(base_url, type)
        for field, value in (("rpm", rpm), ("tpm", tpm), ("rpd", rpd)):
            _positive(field, value)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError("priority: must be an integer (lower is tried first)")
        checked_models = self._check_models(models)
        checked_config = self._check_provider_config(config)
        _check_adapter(type, name, api_key, url, checked_config, checked_models, self.outbound)
        provider_id = new_id("mp")
        credential = hint = None
        if api_key:
            credential = self.box.encrypt(api_key, provider_id)
            hint = mask_secret(api_key)
        ts = format_time(now())
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO model_providers (id, organization_id, scope_type, scope_id, "
                    "name, type, base_url, credential, credential_hint, models, priority, "
                    "config, rpm, tpm, rpd, revision, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        provider_id,
                        resolved.organization_id,
                        resolved.type,
                        resolved.id,
                        name,
                        type,
                        url,
                        credential,
                        hint,
                        None if checked_models is None else dumps(checked_models),
                        priority,
                        dumps(checked_config),
                        rpm,
                        tpm,
                        rpd,
                        1,
                        ts,
                        ts,
                    ),
                )
                self._event(tx, "provider_updated", provider_id=provider_id)
        except IntegrityError:
            raise Conflict(
                f"organization {resolved.organization_id} already has a provider named {name!r}"
            ) from None
        return self.get_provider(provider_id)

    def get_provider(self, provider_id: str) -> ModelProvider:
        rows = self.db.query("SELECT * FROM model_providers WHERE id = ?", (provider_id,))
        if not rows:
            raise NotFound(
                f"no model provider {provider_id!r}; `tollway model-providers list` shows them"
            )
        return ModelProvider.from_row(rows[0])

    def list_providers(self, organization_id: str | None = None) -> list[ModelProvider]:
        if organization_id:
            rows = self.db.query(
                "SELECT * FROM model_providers WHERE organization_id = ? "
                "ORDER BY priority, created_at, id",
                (organization_id,),
            )
        else:
            rows = self.db.query("SELECT * FROM model_providers ORDER BY priority, created_at, id")
        return _records(rows, ModelProvider.from_row)

    def update_provider(
        self,
        provider_id: str,
        *,
        name: str | Unset = UNSET,
        api_key: str | Unset | None = UNSET,
        base_url: str | Unset | None = UNSET,
        config: Mapping[str, Any] | Unset | None = UNSET,
        rpm: int | Unset | None = UNSET,
        tpm: int | Unset | None = UNSET,
        rpd: int | Unset | None = UNSET,
        priority: int | Unset = UNSET,
        models: Sequence[str] | Unset | None = UNSET,
    ) -> ModelProvider:
        """Change a provider. ``config`` is a JSON merge patch (``None`` clears it); ``None``
        for rpm/tpm/rpd removes that limit; ``api_key=None`` removes the credential."""
        current = self.get_provider(provider_id)
        sets: dict[str, Any] = {}
        if not isinstance(name, Unset):
            sets["name"] = _name(name, "provider")
        if not isinstance(api_key, Unset):
            sets["credential"] = self.box.encrypt(api_key, provider_id) if api_key else None
            sets["credential_hint"] = mask_secret(api_key) if api_key else None
        if not isinstance(base_url, Unset):
            sets["base_url"] = self._check_base_url(base_url, current.type)
        if not isinstance(config, Unset):
            merged = {} if config is None else merge_patch(current.config, config)
            sets["config"] = dumps(self._check_provider_config(merged))
        for field, value in (("rpm", rpm), ("tpm", tpm), ("rpd", rpd)):
            if not isinstance(value, Unset):
                _positive(field, value)
                sets[field] = value
        if not isinstance(priority, Unset):
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise ValidationError("priority: must be an integer (lower is tried first)")
            sets["priority"] = priority
        if not isinstance(models, Unset):
            checked = self._check_models(models)
            sets["models"] = None if checked is None else dumps(checked)
        _check_adapter(
            current.type,
            sets.get("name", current.name),
            self.provider_credential(provider_id) if isinstance(api_key, Unset) else api_key,
            sets.get("base_url", current.base_url),
            loads(sets["config"]) if "config" in sets else current.config,
            current.models if isinstance(models, Unset) else checked,
            self.outbound,
        )
        sets["updated_at"] = format_time(now())
        assignments = ", ".join(f"{k} = ?" for k in sets)
        try:
            with self.db.transaction() as tx:
                changed = tx.execute(
                    f"UPDATE model_providers SET {assignments}, revision = revision + 1 "
                    "WHERE id = ?",
                    (*sets.values(), provider_id),
                )
                if not changed:
                    raise NotFound(f"no model provider {provider_id!r}")
                self._event(tx, "provider_updated", provider_id=provider_id)
        except IntegrityError:
            raise Conflict(f"another provider of this organization is named {name!r}") from None
        return self.get_provider(provider_id)

    def delete_provider(self, provider_id: str) -> None:
        with self.db.transaction() as tx:
            if not tx.query("SELECT id FROM model_providers WHERE id = ?", (provider_id,)):
                raise NotFound(f"no model provider {provider_id!r}")
            users = tx.query(
                "SELECT DISTINCT policy_id FROM routing_policy_entries WHERE provider_id = ?",
                (provider_id,),
            )
            if users:
                ids = ", ".join(sorted(r["policy_id"] for r in users))
                raise Conflict(
                    f"provider {provider_id} is in routing policy {ids}; remove it from the "
                    "policy (or delete the policy) first"
                )
            tx.execute("DELETE FROM model_providers WHERE id = ?", (provider_id,))
            self._event(tx, "provider_updated", provider_id=provider_id)

    def provider_credential(self, provider_id: str) -> str | None:
        """The decrypted credential (for the config bundle only; never log it)."""
        rows = self.db.query("SELECT credential FROM model_providers WHERE id = ?", (provider_id,))
        if not rows:
            raise NotFound(f"no model provider {provider_id!r}")
        stored = rows[0]["credential"]
        return None if stored is None else self.box.decrypt(stored, provider_id)

    def _visible_providers(self, scope: Scope) -> list[ModelProvider]:
        """Providers a key scoped to ``scope`` inherits, by priority then age."""
        rows = self.db.query(
            "SELECT * FROM model_providers WHERE organization_id = ? AND ("
            "scope_type = 'organization' OR (scope_type = 'team' AND scope_id = ?) "
            "OR (scope_type = 'project' AND scope_id = ?)) ORDER BY priority, created_at, id",
            (scope.organization_id, scope.team_id or "", scope.project_id or ""),
        )
        return [ModelProvider.from_row(r) for r in rows]


def _check_adapter(
    type_: str,
    name: str,
    api_key: str | None,
    base_url: str | None,
    config: Mapping[str, Any],
    models: Sequence[str] | None,
    outbound: OutboundPolicy | None = None,
) -> None:
    """Refuse what the installed adapter of ``type_`` would refuse at a gateway's start-up (a
    missing region, an empty deployment map, a token endpoint the SSRF guard refuses, …).
    Where no adapter of that type is installed, only the store's own checks apply."""
    from tollway.config import ProviderConfig
    from tollway.provider import adapter_problems

    problems = adapter_problems(
        ProviderConfig(
            name=name,
            type=type_,
            base_url=base_url,
            api_key=api_key,
            models=None if models is None else list(models),
            config=dict(config),
        ),
        outbound,
        STORED_PROVIDER_HINT,
    )
    if problems:
        raise ValidationError(f"the {type_} adapter refuses this provider: " + "; ".join(problems))
