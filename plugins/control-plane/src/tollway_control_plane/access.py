"""Which records a caller may see and touch: the scope half of authorization (the permission
half is :meth:`tollway_control_plane.auth.Principal.require`).

An API token scoped to a team or a project works in its scope's subtree. Every record has a
place (organization, team, project); relative to a token's scope it is *inside* (the scope or
below), *above* (an ancestor: the token's team or organization) or *elsewhere*:

- inside: read and write;
- above: model providers, routing policies, budgets and the scopes themselves are visible
  read-only (a project's keys use the organization's providers and policies, and its
  organization's budgets apply to it); a write is 403. Virtual keys and API tokens above are
  not visible;
- elsewhere: 404, with the same message as a record that does not exist.

Creating outside the subtree is 403, naming the token's scope. An organization token's subtree
is its organization; the admin token (the super-user) sees everything.
:meth:`tollway_control_plane.service.Service.call` applies this for the admin API, the console
and the CLI alike; the request explorer uses :meth:`Access.project_ids`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from tollway_control_plane._errors import NotFound, StoreError, ValidationError
from tollway_control_plane.auth import Forbidden, Principal, parse_permissions
from tollway_control_plane.store import BUDGET_SCOPES, KEY_SCOPES, Scope, parse_scope

if TYPE_CHECKING:
    from tollway_control_plane.service import Service

__all__ = ["ABOVE", "ELSEWHERE", "INSIDE", "Access", "Location", "relation"]

INSIDE, ABOVE, ELSEWHERE = "inside", "above", "elsewhere"

#: Resources whose records above a token's scope it may read.
_INHERITED = frozenset({"providers", "policies", "budgets", "scopes"})
_WHAT = {
    "keys": ("virtual key", "virtual-keys"),
    "providers": ("model provider", "model-providers"),
    "policies": ("routing policy", "routing-policies"),
    "budgets": ("budget", "gateway-budgets"),
    "api_tokens": ("API token", "api-tokens"),
}
_READS = ("get", "list")


@attrs.frozen
class Location:
    """Where a record lives; ``organization_id`` ``None``: the whole installation (a provider
    of the gateway's config file)."""

    organization_id: str | None
    team_id: str | None = None
    project_id: str | None = None

    @property
    def label(self) -> str:
        if self.project_id:
            return f"project:{self.project_id}"
        if self.team_id:
            return f"team:{self.team_id}"
        return f"organization:{self.organization_id}" if self.organization_id else "installation"


def relation(principal: Principal, loc: Location) -> str:
    """:data:`INSIDE`, :data:`ABOVE` or :data:`ELSEWHERE`: where ``loc`` is from the
    principal's scope."""
    if principal.superuser:
        return INSIDE
    if loc.organization_id is None:
        return ABOVE
    if loc.organization_id != principal.organization_id:
        return ELSEWHERE
    if principal.scope_kind == "organization":
        return INSIDE
    if principal.scope_kind == "team":
        if loc.team_id == principal.team_id:
            return INSIDE
        return ABOVE if loc.team_id is None else ELSEWHERE
    if loc.project_id is not None and loc.project_id == principal.project_id:
        return INSIDE
    if loc.project_id is None and loc.team_id in (None, principal.team_id):
        return ABOVE
    return ELSEWHERE


class Access:
    """The scope checks of one call by a principal that is not the super-user."""

    def __init__(self, service: Service, principal: Principal) -> None:
        self.service = service
        self.store = service.store
        self.principal = principal
        self._teams: dict[str, str | None] = {}

    # --- places -------------------------------------------------------------------------

    def _team_of(self, project_id: str) -> str | None:
        if project_id not in self._teams:
            try:
                self._teams[project_id] = self.store.get_project(project_id).team_id
            except NotFound:
                self._teams[project_id] = None
        return self._teams[project_id]

    def _scope_location(self, kind: str, ident: str, org: str) -> Location:
        if kind == "organization":
            return Location(ident)
        if kind == "team":
            return Location(org, ident)
        if kind == "project":
            return Location(org, self._team_of(ident), ident)
        if kind == "virtual_key":
            try:
                key = self.store.get_key(ident)
            except NotFound:
                return Location(org)
            return Location(key.organization_id, key.team_id, key.project_id)
        return Location(org)  # principal, end_user: the organization's

    def location(self, resource: str, item: Mapping[str, Any]) -> Location:
        """The place of a record as an operation returns it (JSON)."""
        if resource in ("keys", "api_tokens"):
            return Location(item["organization_id"], item["team_id"], item["project_id"])
        if resource == "policies":
            return Location(item["organization_id"])
        if item.get("source") == "config":
            return Location(None)
        return self._scope_location(item["scope_type"], item["scope_id"], item["organization_id"])

    def _record(self, resource: str, item_id: str) -> dict[str, Any]:
        store = self.store
        if resource == "keys":
            return store.get_key(item_id).to_json()
        if resource == "providers":
            if any(p.key == item_id for p in self.service.config_providers):
                return {"source": "config"}
            return store.get_provider(item_id).to_json()
        if resource == "policies":
            return store.get_routing_policy(item_id).to_json()
        if resource == "budgets":
            return store.get_budget(item_id).to_json()
        if resource == "api_tokens":
            return store.get_api_token(item_id).to_json()
        raise AssertionError(resource)

    def _hidden(self, resource: str, item_id: str) -> NotFound:
        what, command = _WHAT[resource]
        return NotFound(
            f"no {what} {item_id!r} in the scope of this token ({self.principal.scope_label}); "
            f"`tollway {command} list` shows what it can see"
        )

    def _visible(self, resource: str, rel: str) -> bool:
        return rel == INSIDE or (rel == ABOVE and resource in _INHERITED)

    # --- the checks ---------------------------------------------------------------------

    def check_target(self, name: str, item_id: str) -> None:
        """Before an operation on one record: 404 unless visible, 403 on a write above."""
        resource, _, verb = name.partition(".")
        try:
            loc = self.location(resource, self._record(resource, item_id))
        except NotFound:
            raise self._hidden(resource, item_id) from None
        rel = relation(self.principal, loc)
        if not self._visible(resource, rel):
            raise self._hidden(resource, item_id)
        if verb not in _READS and rel != INSIDE:
            what = _WHAT[resource][0]
            raise Forbidden(
                f"{what} {item_id} belongs to {loc.label}, above this token's scope "
                f"({self.principal.scope_label}); it can read it but not change it — a token "
                f"scoped to {loc.label} (or the admin token) can"
            )

    def _require_inside(self, loc: Location, what: str) -> None:
        if relation(self.principal, loc) != INSIDE:
            raise Forbidden(
                f"this token is scoped to {self.principal.scope_label}: it can create {what} "
                f"only there or below, not at {loc.label}"
            )

    def _resolve(self, scope: str | None, allowed: tuple[str, ...], org: str | None) -> Scope:
        try:
            return self.store.resolve_scope(scope, allowed, org)
        except (NotFound, ValidationError):
            kind = parse_scope(scope, allowed)[0]  # a bad kind: its own message
            raise ValidationError(
                f"scope: {scope!r} names no {kind} this token ({self.principal.scope_label}) "
                "can see; `tollway scopes list` shows them"
            ) from None

    def check_create(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Before a create: 403 outside the subtree. Returns the body with the token's own
        scope filled in where the caller gave none."""
        p = self.principal
        out = dict(body)
        resource = name.partition(".")[0]
        if resource in ("keys", "providers", "api_tokens"):
            if out.get("scope") is None:
                out["scope"] = p.scope_label
            s = self._resolve(out["scope"], KEY_SCOPES, None)
            what = _WHAT[resource][0] + "s"
            self._require_inside(Location(s.organization_id, s.team_id, s.project_id), what)
            if resource == "api_tokens":
                self._check_grant(out.get("permissions"))
        elif resource == "budgets":
            kind = parse_scope(out.get("scope"), BUDGET_SCOPES)[0]
            if kind in ("principal", "end_user") and out.get("organization_id") is None:
                out["organization_id"] = p.organization_id
            s = self._resolve(out.get("scope"), BUDGET_SCOPES, out.get("organization_id"))
            org = s.organization_id
            loc = self._scope_location(s.type, s.id, org) if s.type != "organization" else None
            self._require_inside(loc or Location(org), "budgets")
        elif resource == "policies":
            out.setdefault("organization_id", p.organization_id)
            self._require_inside(Location(out["organization_id"]), "routing policies")
        elif resource == "scopes":
            self._check_scope_create(out)
        return out

    def _check_scope_create(self, out: dict[str, Any]) -> None:
        p = self.principal
        kind = out.get("type")
        if kind == "team":
            if out.get("parent_id") is None:
                out["parent_id"] = p.organization_id
            org = self._resolve_id("organization", out["parent_id"])
            self._require_inside(Location(org), "teams")
        elif kind == "project":
            if out.get("parent_id") is None and p.team_id is not None:
                out["parent_id"] = p.team_id
            team_id = self._resolve_id("team", out.get("parent_id"))
            team = self.store.get_team(team_id)
            self._require_inside(Location(team.organization_id, team.id), "projects")
        elif kind == "organization":
            raise Forbidden(
                f"this token is scoped to {p.scope_label}: only the admin token "
                "(TOLLWAY_ADMIN_TOKEN) can create organizations"
            )

    def _resolve_id(self, kind: str, ident: str | None) -> str:
        try:
            return self.store.resolve_scope_id(kind, ident, "parent_id")
        except StoreError:
            raise ValidationError(
                f"parent_id: {ident!r} names no {kind} this token "
                f"({self.principal.scope_label}) can see; `tollway scopes list` shows them"
            ) from None

    def _check_grant(self, permissions: Any) -> None:
        """A token mints tokens only with permissions it holds (no escalation)."""
        if permissions is None:
            return  # the store says it is required
        missing = [x for x in parse_permissions(permissions) if not self.principal.can(x)]
        if missing:
            raise Forbidden(
                f"this token cannot grant permissions it does not hold: {', '.join(missing)}"
            )

    def filter(self, name: str, result: Any) -> Any:
        """A listing with only what the principal may see."""
        resource = name.partition(".")[0]
        if resource == "scopes":
            return self._filter_scopes(result)
        return [
            item
            for item in result
            if self._visible(resource, relation(self.principal, self.location(resource, item)))
        ]

    def _filter_scopes(self, result: Mapping[str, Any]) -> dict[str, Any]:
        def keep(loc: Location) -> bool:
            return relation(self.principal, loc) != ELSEWHERE

        return {
            "organizations": [o for o in result["organizations"] if keep(Location(o["id"]))],
            "teams": [t for t in result["teams"] if keep(Location(t["organization_id"], t["id"]))],
            "projects": [
                x
                for x in result["projects"]
                if keep(Location(x["organization_id"], x["team_id"], x["id"]))
            ],
        }

    def project_ids(self) -> list[str] | None:
        """The projects whose requests the principal may see (``None``: all)."""
        if self.principal.superuser:
            return None
        return [
            x.id
            for x in self.store.list_projects()
            if relation(self.principal, Location(x.organization_id, x.team_id, x.id)) == INSIDE
        ]


def project_ids(service: Service, principal: Principal) -> list[str] | None:
    """The projects whose requests ``principal`` may see (``None``: all)."""
    return None if principal.superuser else Access(service, principal).project_ids()
