"""Routing policies: ordered provider lists (optionally pinning a model), and the provider
chain a key dispatches along."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tollway.routing import strategy_problem, weight_problem
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
        return [(p, model) for p, model, _ in self.weighted_policy_chain(key)]

    def weighted_policy_chain(
        self, key: VirtualKey
    ) -> list[tuple[ModelProvider | str, str | None, int]]:
        """:meth:`policy_chain` with each entry's weight (1 without a policy)."""
        visible = self._visible_providers(key.scope)
        policy = self.key_routing_policy(key)
        if policy is None:
            return [(p, None, 1) for p in visible]
        by_id = {p.id: p for p in visible}
        chain: list[tuple[ModelProvider | str, str | None, int]] = []
        for e in policy.entries:
            if e.from_config:
                chain.append((e.provider_id, e.model, e.weight))
            elif e.provider_id in by_id:
                chain.append((by_id[e.provider_id], e.model, e.weight))
        return chain

    @staticmethod
    def parse_entries(spec: str | Sequence[Any], strategy: str | None = None) -> list[PolicyEntry]:
        """``"mp_a:3,mp_b:claude-sonnet-4-5"`` (or a list of ids / entries / dicts) → entries.

        An entry is ``ID``, ``ID:weight``, ``ID:model`` or — when ``strategy`` is ``weighted`` —
        ``ID:model:weight`` (a model id may itself end in ``:0``, as Bedrock's do, so a trailing
        number after a model is a weight only then). An entry that is not an ``mp_`` id names a
        provider of the gateway's config file."""
        return PoliciesMixin.parse_policy(spec, strategy)[0]

    @staticmethod
    def parse_policy(
        spec: str | Sequence[Any], strategy: str | None = None
    ) -> tuple[list[PolicyEntry], str | None]:
        """:meth:`parse_entries`, and the strategy: ``strategy``, else ``weighted`` when an
        entry gives a weight, else None (unchanged / ``ordered``)."""
        items: Sequence[Any]
        items = [s for s in spec.split(",")] if isinstance(spec, str) else spec
        entries: list[PolicyEntry] = []
        weighted = False
        for i, item in enumerate(items):
            weight: Any = None
            if isinstance(item, PolicyEntry):
                entries.append(item)
                continue
            if isinstance(item, Mapping):
                pid, model, weight = item.get("provider_id"), item.get("model"), item.get("weight")
            elif isinstance(item, str):
                pid, _, model = item.strip().partition(":")
                if model.isdigit():
                    model, weight = "", int(model)
                elif strategy == "weighted" and model.rpartition(":")[2].isdigit():
                    model, _, number = model.rpartition(":")
                    weight = int(number)
            else:
                raise ValidationError(f"providers[{i}]: must be 'ID', 'ID:weight' or 'ID:model'")
            if not isinstance(pid, str) or not pid.strip():
                raise ValidationError(f"providers[{i}]: empty provider id")
            if model is not None and not isinstance(model, str):
                raise ValidationError(f"providers[{i}].model: must be a string")
            if weight is not None:
                problem = weight_problem(weight)
                if problem:
                    raise ValidationError(f"providers[{i}].weight: {problem}")
                weighted = True
            entries.append(
                PolicyEntry(
                    pid.strip(), (model or "").strip() or None, 1 if weight is None else weight
                )
            )
        if not entries:
            raise ValidationError("providers: list at least one provider id")
        if strategy is not None:
            problem = strategy_problem(strategy)
            if problem:
                raise ValidationError(f"strategy: {problem}")
        if weighted and strategy not in (None, "weighted"):
            raise ValidationError(
                f"providers: weights (ID:N) apply to the weighted strategy only, not {strategy}; "
                "drop the ':N' or use strategy weighted"
            )
        resolved = strategy or ("weighted" if weighted else None)
        if resolved == "weighted" and not any(e.weight > 0 for e in entries):
            raise ValidationError(
                "providers: every weight is 0; give at least one provider a positive weight "
                "(0 means fallback only)"
            )
        return entries, resolved

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
        strategy: str | None = None,
    ) -> RoutingPolicy:
        name = _name(name, "routing policy")
        entries, resolved = self.parse_policy(providers, strategy)
        strategy = resolved or "ordered"
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
                    "revision, created_at, updated_at, strategy) VALUES (?,?,?,?,?,?,?,?)",
                    (policy_id, organization_id, name, int(is_default), 1, ts, ts, strategy),
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
                    "provider_name, model, weight) VALUES (?,?,?,?,?)",
                    (policy_id, position, entry.provider_id, entry.model, entry.weight),
                )
                continue
            tx.execute(
                "INSERT INTO routing_policy_entries (policy_id, position, provider_id, model, "
                "weight) VALUES (?,?,?,?,?)",
                (policy_id, position, entry.provider_id, entry.model, entry.weight),
            )

    def _policy_from_row(self, row: Mapping[str, Any]) -> RoutingPolicy:
        entries = self.db.query(
            "SELECT position, provider_id, model, weight FROM routing_policy_entries "
            "WHERE policy_id = ? UNION ALL SELECT position, provider_name AS provider_id, model, "
            "weight FROM routing_policy_config_entries WHERE policy_id = ? ORDER BY position",
            (row["id"], row["id"]),
        )
        return RoutingPolicy(
            id=row["id"],
            organization_id=row["organization_id"],
            name=row["name"],
            is_default=bool(row["is_default"]),
            entries=tuple(
                PolicyEntry(e["provider_id"], e["model"], int(e["weight"])) for e in entries
            ),
            strategy=str(row["strategy"]),
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
        strategy: str | Unset = UNSET,
    ) -> RoutingPolicy:
        current = self.get_routing_policy(policy_id)
        entries = None
        given = None if isinstance(strategy, Unset) else strategy
        new_strategy = given
        if not isinstance(providers, Unset):
            # Weights without a strategy make the policy weighted; a weighted policy reads a
            # trailing ':N' after a model as a weight.
            hint = given or ("weighted" if current.strategy == "weighted" else None)
            entries, new_strategy = self.parse_policy(providers, hint)
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
        elif given is not None:
            # Checked against the entries the policy keeps.
            new_strategy = self.parse_policy(list(current.entries), given)[1]
        ts = format_time(now())
        try:
            with self.db.transaction() as tx:
                sets: dict[str, Any] = {"updated_at": ts}
                if not isinstance(name, Unset):
                    sets["name"] = _name(name, "routing policy")
                if new_strategy is not None:
                    sets["strategy"] = new_strategy
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
