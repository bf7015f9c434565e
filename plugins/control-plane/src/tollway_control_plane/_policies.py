"""Routing policies: ordered provider lists (optionally pinning a model), and the provider
chain a key dispatches along."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tollway_control_plane._base import StoreBase
from tollway_control_plane._db import IntegrityError, Transaction
from tollway_control_plane._errors import Conflict, NotFound, ValidationError
from tollway_control_plane._records import (
    ModelProvider,
    PolicyEntry,
    RoutingPolicy,
    Scope,
    VirtualKey,
    _records,
)
from tollway_control_plane._util import UNSET, Unset, format_time, new_id, now
from tollway_control_plane._values import DEFAULT_ORGANIZATION, _name


class PoliciesMixin(StoreBase):
    def key_routing_policy(self, key: VirtualKey) -> RoutingPolicy | None:
        """The routing policy that orders a key's providers: its own, else its organization's
        default, else None (the key inherits every visible provider)."""
        if key.routing_policy_id:
            return self.get_routing_policy(key.routing_policy_id)
        return self.default_routing_policy(key.organization_id)

    def provider_chain(self, key: VirtualKey) -> list[tuple[ModelProvider, str | None]]:
        """A key's stored providers in dispatch order, each with its pinned model (or None).

        The key's routing policy, else its organization's default policy — filtered to the
        providers visible from the key's scope — else every visible provider by priority (lower
        first), then creation time (older first). Policy entries naming a config-file provider
        are left out (see :meth:`policy_chain`).
        """
        return [(p, model) for p, model in self.policy_chain(key) if isinstance(p, ModelProvider)]

    def policy_chain(self, key: VirtualKey) -> list[tuple[ModelProvider | str, str | None]]:
        """As :meth:`provider_chain`, with a routing policy's config-file entries in their
        place: the provider's name (the gateway serving the key resolves it in its own file)."""
        visible = self._visible_providers(key.scope)
        policy = self.key_routing_policy(key)
        if policy is None:
            return [(p, None) for p in visible]
        by_id = {p.id: p for p in visible}
        chain: list[tuple[ModelProvider | str, str | None]] = []
        for e in policy.entries:
            if e.from_config:
                chain.append((e.provider_id, e.model))
            elif e.provider_id in by_id:
                chain.append((by_id[e.provider_id], e.model))
        return chain

    @staticmethod
    def parse_entries(spec: str | Sequence[Any]) -> list[PolicyEntry]:
        """``"mp_a,mp_b:claude-sonnet-4-5"`` (or a list of ids / entries / dicts) → entries.
        An entry that is not an ``mp_`` id names a provider of the gateway's config file."""
        items: Sequence[Any]
        items = [s for s in spec.split(",")] if isinstance(spec, str) else spec
        entries: list[PolicyEntry] = []
        for i, item in enumerate(items):
            if isinstance(item, PolicyEntry):
                entries.append(item)
                continue
            if isinstance(item, Mapping):
                pid, model = item.get("provider_id"), item.get("model")
            elif isinstance(item, str):
                pid, _, model = item.strip().partition(":")
            else:
                raise ValidationError(f"providers[{i}]: must be 'ID' or 'ID:model'")
            if not isinstance(pid, str) or not pid.strip():
                raise ValidationError(f"providers[{i}]: empty provider id")
            if model is not None and not isinstance(model, str):
                raise ValidationError(f"providers[{i}].model: must be a string")
            entries.append(PolicyEntry(pid.strip(), (model or "").strip() or None))
        if not entries:
            raise ValidationError("providers: list at least one provider id")
        return entries

    def _check_entries(self, entries: Sequence[PolicyEntry], organization_id: str) -> None:
        for i, entry in enumerate(entries):
            if entry.from_config:
                continue  # checked against the config file by the service, which knows it
            try:
                provider = self.get_provider(entry.provider_id)
            except NotFound as exc:
                raise ValidationError(f"providers[{i}]: {exc.message}") from None
            if provider.organization_id != organization_id:
                raise ValidationError(
                    f"providers[{i}]: {entry.provider_id} belongs to organization "
                    f"{provider.organization_id}, not {organization_id}"
                )

    def create_routing_policy(
        self,
        *,
        name: str,
        providers: str | Sequence[Any],
        is_default: bool = False,
        organization_id: str = DEFAULT_ORGANIZATION,
    ) -> RoutingPolicy:
        name = _name(name, "routing policy")
        entries = self.parse_entries(providers)
        self.get_organization(organization_id)
        self._check_entries(entries, organization_id)
        policy_id = new_id("rp")
        ts = format_time(now())
        try:
            with self.db.transaction() as tx:
                if is_default:
                    tx.execute(
                        "UPDATE routing_policies SET is_default = 0, updated_at = ? "
                        "WHERE organization_id = ? AND is_default = 1",
                        (ts, organization_id),
                    )
                tx.execute(
                    "INSERT INTO routing_policies (id, organization_id, name, is_default, "
                    "revision, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (policy_id, organization_id, name, int(is_default), 1, ts, ts),
                )
                self._write_entries(tx, policy_id, entries)
                self._event(tx, "policy_changed")
        except IntegrityError:
            raise Conflict(
                f"organization {organization_id} already has a routing policy named {name!r}"
            ) from None
        return self.get_routing_policy(policy_id)

    @staticmethod
    def _write_entries(tx: Transaction, policy_id: str, entries: Sequence[PolicyEntry]) -> None:
        tx.execute("DELETE FROM routing_policy_entries WHERE policy_id = ?", (policy_id,))
        tx.execute("DELETE FROM routing_policy_config_entries WHERE policy_id = ?", (policy_id,))
        for position, entry in enumerate(entries):
            if entry.from_config:
                tx.execute(
                    "INSERT INTO routing_policy_config_entries (policy_id, position, "
                    "provider_name, model) VALUES (?,?,?,?)",
                    (policy_id, position, entry.provider_id, entry.model),
                )
                continue
            tx.execute(
                "INSERT INTO routing_policy_entries (policy_id, position, provider_id, model) "
                "VALUES (?,?,?,?)",
                (policy_id, position, entry.provider_id, entry.model),
            )

    def _policy_from_row(self, row: Mapping[str, Any]) -> RoutingPolicy:
        entries = self.db.query(
            "SELECT position, provider_id, model FROM routing_policy_entries WHERE policy_id = ? "
            "UNION ALL SELECT position, provider_name AS provider_id, model "
            "FROM routing_policy_config_entries WHERE policy_id = ? ORDER BY position",
            (row["id"], row["id"]),
        )
        return RoutingPolicy(
            id=row["id"],
            organization_id=row["organization_id"],
            name=row["name"],
            is_default=bool(row["is_default"]),
            entries=tuple(PolicyEntry(e["provider_id"], e["model"]) for e in entries),
            revision=int(row["revision"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def get_routing_policy(self, policy_id: str) -> RoutingPolicy:
        rows = self.db.query("SELECT * FROM routing_policies WHERE id = ?", (policy_id,))
        if not rows:
            raise NotFound(
                f"no routing policy {policy_id!r}; `tollway routing-policies list` shows them"
            )
        return self._policy_from_row(rows[0])

    def default_routing_policy(self, organization_id: str) -> RoutingPolicy | None:
        rows = self.db.query(
            "SELECT * FROM routing_policies WHERE organization_id = ? AND is_default = 1",
            (organization_id,),
        )
        return self._policy_from_row(rows[0]) if rows else None

    def list_routing_policies(self) -> list[RoutingPolicy]:
        rows = self.db.query("SELECT * FROM routing_policies ORDER BY created_at, id")
        return _records(rows, self._policy_from_row)

    def update_routing_policy(
        self,
        policy_id: str,
        *,
        name: str | Unset = UNSET,
        providers: str | Sequence[Any] | Unset = UNSET,
        is_default: bool | Unset = UNSET,
    ) -> RoutingPolicy:
        current = self.get_routing_policy(policy_id)
        entries = None
        if not isinstance(providers, Unset):
            entries = self.parse_entries(providers)
            self._check_entries(entries, current.organization_id)
            users = self.db.query(
                "SELECT id, scope_type, organization_id, team_id, project_id FROM virtual_keys "
                "WHERE routing_policy_id = ?",
                (policy_id,),
            )
            for u in users:
                scope = Scope(u["scope_type"], u["organization_id"], u["team_id"], u["project_id"])
                visible = {p.id for p in self._visible_providers(scope)}
                hidden = [e.provider_id for e in entries if e.provider_id not in visible]
                if hidden:
                    raise ValidationError(
                        f"providers: key {u['id']} ({scope.label}) uses this policy and cannot "
                        f"see {', '.join(dict.fromkeys(hidden))}"
                    )
        ts = format_time(now())
        try:
            with self.db.transaction() as tx:
                sets: dict[str, Any] = {"updated_at": ts}
                if not isinstance(name, Unset):
                    sets["name"] = _name(name, "routing policy")
                if not isinstance(is_default, Unset):
                    if is_default:
                        tx.execute(
                            "UPDATE routing_policies SET is_default = 0, updated_at = ? "
                            "WHERE organization_id = ? AND is_default = 1",
                            (ts, current.organization_id),
                        )
                    sets["is_default"] = int(bool(is_default))
                assignments = ", ".join(f"{k} = ?" for k in sets)
                if not tx.execute(
                    f"UPDATE routing_policies SET {assignments}, revision = revision + 1 "
                    "WHERE id = ?",
                    (*sets.values(), policy_id),
                ):
                    raise NotFound(f"no routing policy {policy_id!r}")
                if entries is not None:
                    self._write_entries(tx, policy_id, entries)
                self._event(tx, "policy_changed")
        except IntegrityError:
            raise Conflict(f"another routing policy is named {name!r}") from None
        return self.get_routing_policy(policy_id)

    def delete_routing_policy(self, policy_id: str) -> None:
        with self.db.transaction() as tx:
            if not tx.query("SELECT id FROM routing_policies WHERE id = ?", (policy_id,)):
                raise NotFound(f"no routing policy {policy_id!r}")
            users = tx.query(
                "SELECT id FROM virtual_keys WHERE routing_policy_id = ? ORDER BY id", (policy_id,)
            )
            if users:
                ids = ", ".join(r["id"] for r in users[:5]) + (" …" if len(users) > 5 else "")
                raise Conflict(
                    f"routing policy {policy_id} is used by key(s) {ids}; point them at another "
                    "policy (tollway virtual-keys update ID --routing-policy …) first"
                )
            tx.execute("DELETE FROM routing_policy_entries WHERE policy_id = ?", (policy_id,))
            tx.execute(
                "DELETE FROM routing_policy_config_entries WHERE policy_id = ?", (policy_id,)
            )
            tx.execute("DELETE FROM routing_policies WHERE id = ?", (policy_id,))
            self._event(tx, "policy_changed")
