"""Opening the control plane: secrets, the store, and the state the HTTP layer shares."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from tollway.config import ProviderConfig
from tollway.outbound import OutboundPolicy
from tollway.secrets import GatewaySecrets, SecretsError, load_gateway_secrets
from tollway.state import mask_url
from tollway_control_plane._db import Database
from tollway_control_plane.service import Service
from tollway_control_plane.store import Store, read_store_id, store_target

__all__ = [
    "ControlPlane",
    "NoStore",
    "StoreLocation",
    "installed_plugin_sections",
    "load_secrets",
    "locate_store",
    "open_store",
    "store_url",
]


def load_secrets(
    data_dir: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, generate: bool = True
) -> GatewaySecrets:
    """:func:`tollway.secrets.load_gateway_secrets`, tolerant of a concurrent first start.

    Two processes starting on a fresh data dir (a gateway and a CLI command) may both try to
    generate the secrets file; the loser finds the file created (or half-written) and reads it
    again after a moment.
    """
    for _ in range(40):
        try:
            return load_gateway_secrets(data_dir, env, generate=generate)
        except FileExistsError:
            pass  # another process is creating the file right now
        except SecretsError as exc:
            if "unreadable" not in str(exc):
                raise
        time.sleep(0.05)
    return load_gateway_secrets(data_dir, env, generate=generate)


def installed_plugin_sections() -> list[str]:
    """Names of the settings sections installed plugins register (accepted as per-key config
    sections). Only called when a key's config has a top-level key this plugin does not know."""
    from tollway.config import PluginSelection
    from tollway.plugins import build_plugin_manager

    names: list[str] = []
    try:
        pm, _ = build_plugin_manager(PluginSelection())
        pm.hook.register_settings(register=lambda name, cls: names.append(name))
    except Exception:
        return []
    return names


class NoStore(Exception):
    """A read-only command found no store where it looked (nothing was created)."""


@attrs.frozen
class StoreLocation:
    """Where the store for a data dir is, whether it exists, and its id (read, not made)."""

    target: str
    kind: str
    exists: bool
    id: str | None

    @property
    def url(self) -> str:
        """``sqlite:////abs/tollway.db`` or the PostgreSQL URL, password masked."""
        return store_url(self.target)


def store_url(target: str) -> str:
    """A store target as it may be printed: ``sqlite:////abs/path/tollway.db`` or the
    PostgreSQL URL with its password masked."""
    if target.startswith(("postgresql://", "postgres://")):
        return mask_url(target)
    path = Database(target).path
    assert path is not None
    return f"sqlite:///{path.resolve()}"


def locate_store(
    data_dir: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> StoreLocation:
    """Find the store for ``data_dir`` (or ``TOLLWAY_DATABASE_URL``) without creating or
    migrating anything. Raises :class:`DatabaseError` when PostgreSQL cannot be reached."""
    target = store_target(data_dir, env)
    db = Database(target)
    try:
        if db.dialect == "sqlite":
            assert db.path is not None
            if not db.path.is_file():
                return StoreLocation(target, "sqlite", False, None)
        else:
            db.query("SELECT 1 AS ok")  # raises DatabaseError when unreachable
            if db.applied_versions() is None:
                return StoreLocation(target, "postgresql", False, None)
        return StoreLocation(target, db.dialect, True, read_store_id(db))
    finally:
        db.close()


def open_store(
    data_dir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    environment: str | None = None,
    outbound: OutboundPolicy | None = None,
    create: bool = True,
) -> tuple[Store, GatewaySecrets]:
    """The store for ``data_dir`` (or ``TOLLWAY_DATABASE_URL``) and the gateway secrets.

    With PostgreSQL the secrets must come from the environment (several control planes share
    the store, so a secret generated into one machine's data dir would be wrong). ``outbound``
    is the SSRF guard writes are checked with; by default ``ENVIRONMENT`` (or
    ``environment``) and ``GATEWAY_OUTBOUND_ALLOW_CIDRS`` (a bad list raises ``ValueError``).
    With ``create=False`` (read-only commands) a missing store raises :class:`NoStore` and no
    secrets file is generated.
    """
    env = os.environ if env is None else env
    target = store_target(data_dir, env)
    remote_db = target.startswith(("postgresql://", "postgres://"))
    if not create:
        where = locate_store(data_dir, env)
        if not where.exists:
            raise NoStore(f"no store at {where.url}")
    try:
        secrets = load_secrets(data_dir, env, generate=create and not remote_db)
    except SecretsError as exc:
        if remote_db:
            raise SecretsError(
                f"{exc}. With TOLLWAY_DATABASE_URL (a shared store) set LW_VIRTUAL_KEY_PEPPER, "
                "LW_GATEWAY_INTERNAL_SECRET and LW_GATEWAY_JWT_SECRET explicitly"
            ) from None
        raise
    if outbound is None:  # raises ValueError naming GATEWAY_OUTBOUND_ALLOW_CIDRS
        outbound = OutboundPolicy.from_env(env, environment=environment)
    store = Store.open(
        target,
        secrets.pepper,
        plugin_sections=installed_plugin_sections,
        outbound=outbound,
    )
    return store, secrets


@attrs.define
class ControlPlane:
    """What the control plane's HTTP routes share: the store, the secrets, the admin token."""

    store: Store
    secrets: GatewaySecrets
    admin_token: str | None = None
    #: True once the server is shutting down: long polls answer at once.
    stopping: Callable[[], bool] = lambda: False
    service: Service = attrs.field(init=False)
    extras: dict[str, Any] = attrs.field(factory=dict)
    #: The config file's providers, listed read-only by the admin API.
    config_providers: Sequence[ProviderConfig] = ()

    def __attrs_post_init__(self) -> None:
        self.service = Service(self.store, self.config_providers)

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        *,
        environment: str | None = None,
        config_providers: Sequence[ProviderConfig] = (),
        outbound: OutboundPolicy | None = None,
    ) -> ControlPlane:
        env = os.environ if env is None else env
        store, secrets = open_store(data_dir, env, environment=environment, outbound=outbound)
        token = env.get("TOLLWAY_ADMIN_TOKEN", "").strip() or None
        return cls(store, secrets, token, config_providers=config_providers)

    def close(self) -> None:
        self.store.close()
