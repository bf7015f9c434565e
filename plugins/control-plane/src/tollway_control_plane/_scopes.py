"""Organizations, teams and projects, and how scope text resolves to them."""

from __future__ import annotations

from collections.abc import Sequence

from tollway_control_plane._base import StoreBase
from tollway_control_plane._db import IntegrityError
from tollway_control_plane._errors import Conflict, NotFound, ValidationError
from tollway_control_plane._records import Organization, Project, Scope, Team
from tollway_control_plane._util import format_time, new_id, now
from tollway_control_plane._values import (
    DEFAULT_ORGANIZATION,
    DEFAULT_PROJECT,
    DEFAULT_TEAM,
    KEY_SCOPES,
    _name,
    parse_scope,
    slug,
)


class ScopesMixin(StoreBase):
    def create_organization(self, name: str) -> Organization:
        name = _name(name, "organization")
        ts = format_time(now())
        org = Organization(new_id("org"), name, ts, ts)
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO organizations (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                    (org.id, org.name, ts, ts),
                )
        except IntegrityError:
            raise Conflict(f"an organization named {name!r} already exists") from None
        return org

    def create_team(self, name: str, organization_id: str = DEFAULT_ORGANIZATION) -> Team:
        name = _name(name, "team")
        self.get_organization(organization_id)
        ts = format_time(now())
        team = Team(new_id("team"), organization_id, name, ts, ts)
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO teams (id, organization_id, name, created_at, updated_at) "
                    "VALUES (?,?,?,?,?)",
                    (team.id, organization_id, name, ts, ts),
                )
        except IntegrityError:
            raise Conflict(f"organization {organization_id} already has a team {name!r}") from None
        return team

    def create_project(self, name: str, team_id: str = DEFAULT_TEAM) -> Project:
        name = _name(name, "project")
        team = self.get_team(team_id)
        ts = format_time(now())
        project = Project(new_id("proj"), team.organization_id, team.id, name, ts, ts)
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO projects (id, organization_id, team_id, name, created_at, "
                    "updated_at) VALUES (?,?,?,?,?,?)",
                    (project.id, project.organization_id, team.id, name, ts, ts),
                )
        except IntegrityError:
            raise Conflict(f"team {team_id} already has a project {name!r}") from None
        return project

    def get_organization(self, org_id: str) -> Organization:
        rows = self.db.query("SELECT * FROM organizations WHERE id = ?", (org_id,))
        if not rows:
            raise NotFound(f"no organization {org_id!r}")
        return Organization(**rows[0])

    def get_team(self, team_id: str) -> Team:
        rows = self.db.query("SELECT * FROM teams WHERE id = ?", (team_id,))
        if not rows:
            raise NotFound(f"no team {team_id!r}")
        return Team(**rows[0])

    def get_project(self, project_id: str) -> Project:
        rows = self.db.query("SELECT * FROM projects WHERE id = ?", (project_id,))
        if not rows:
            raise NotFound(f"no project {project_id!r}")
        return Project(**rows[0])

    def list_organizations(self) -> list[Organization]:
        rows = self.db.query("SELECT * FROM organizations ORDER BY created_at, id")
        return [Organization(**r) for r in rows]

    def list_teams(self) -> list[Team]:
        rows = self.db.query("SELECT * FROM teams ORDER BY created_at, id")
        return [Team(**r) for r in rows]

    def list_projects(self) -> list[Project]:
        rows = self.db.query("SELECT * FROM projects ORDER BY created_at, id")
        return [Project(**r) for r in rows]

    def resolve_scope(
        self,
        scope: str | Scope | None,
        allowed: Sequence[str] = KEY_SCOPES,
        organization_id: str | None = None,
    ) -> Scope:
        """``"project:proj_x"`` (or ``"team"``, ``None`` …) → a resolved :class:`Scope`.

        A scope without an id means the ``default`` one; ``None`` means the default
        organization. ``organization_id`` places a ``principal`` or ``end_user`` scope (their
        ids are not the store's, so they cannot name their organization; default: the default
        organization).
        """
        if isinstance(scope, Scope):
            return scope
        kind, ident = parse_scope(scope, allowed)
        if kind == "organization":
            org = self.get_organization(self.resolve_scope_id(kind, ident))
            return Scope("organization", org.id)
        if kind == "team":
            team = self.get_team(self.resolve_scope_id(kind, ident))
            return Scope("team", team.organization_id, team.id)
        if kind == "project":
            project = self.get_project(self.resolve_scope_id(kind, ident))
            return Scope("project", project.organization_id, project.team_id, project.id)
        if not ident:
            raise ValidationError(f"scope: a {kind} budget needs an id ({kind}:ID)")
        if kind == "virtual_key":
            key = self.get_key(ident)
            return Scope(kind, key.organization_id, key.team_id, key.project_id, other_id=key.id)
        org_id = self.resolve_scope_id("organization", organization_id, "organization_id")
        return Scope(kind, org_id, other_id=ident)

    def resolve_scope_id(self, kind: str, ident: str | None, field: str = "scope") -> str:
        """The id of the organization, team or project ``ident`` names: its id, ``default``
        (or nothing: the default one), its name or its slug (the name in lower case, runs of
        other characters as ``-``), case-insensitively. Raises :class:`ValidationError` naming
        ``field`` and the candidates when nothing or more than one matches."""
        defaults = {
            "organization": DEFAULT_ORGANIZATION,
            "team": DEFAULT_TEAM,
            "project": DEFAULT_PROJECT,
        }
        text = (ident or "").strip()
        if not text or text.lower() == "default":
            return defaults[kind]
        rows: list[Organization | Team | Project]
        if kind == "organization":
            rows = list(self.list_organizations())
        elif kind == "team":
            rows = list(self.list_teams())
        else:
            rows = list(self.list_projects())
        exact = [r for r in rows if r.id == text]
        if exact:
            return exact[0].id
        lower, wanted = text.lower(), slug(text)
        found = [
            r for r in rows if lower in (r.id.lower(), r.name.lower()) or slug(r.name) == wanted
        ]
        if len(found) == 1:
            return found[0].id
        orgs = {o.id: o.name for o in self.list_organizations()}
        teams = {t.id: t.name for t in self.list_teams()}

        def where(r: Organization | Team | Project) -> str:
            if isinstance(r, Project):
                return f"{r.id} ({r.name}, team {teams.get(r.team_id, r.team_id)})"
            if isinstance(r, Team):
                return f"{r.id} ({r.name}, organization {orgs.get(r.organization_id, '?')})"
            return f"{r.id} ({r.name})"

        if found:
            raise ValidationError(
                f"{field}: {kind} {text!r} is ambiguous: "
                + ", ".join(where(r) for r in found)
                + "; give the id"
            )
        known = ", ".join(where(r) for r in rows[:20]) or "none"
        more = f" and {len(rows) - 20} more" if len(rows) > 20 else ""
        raise ValidationError(
            f"{field}: no {kind} {text!r} (by id, name or slug); {kind}s: {known}{more}"
        )
