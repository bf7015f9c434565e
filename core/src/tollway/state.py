"""Which state a command works on: one resolution for ``tollway serve`` and every command.

The rule (docs/operator-guide.md, "Which store a command uses"):

- the config file is ``--config FILE``, else ``TOLLWAY_CONFIG``, else none;
- the data dir is ``--data-dir DIR``, else ``TOLLWAY_DATA_DIR``, else the file's ``data_dir``,
  else ``.tollway``. A relative ``data_dir`` written in a file (and the default, when there is a
  file) is relative to the file's folder; one given on the command line or in the environment
  is relative to the current directory;
- the control plane's store is ``TOLLWAY_DATABASE_URL`` when set, else the SQLite file in the
  data dir (the control plane plugin says which, through ``describe_state``);
- ``TOLLWAY_ADMIN_URL`` + ``TOLLWAY_ADMIN_TOKEN`` make the control-plane commands talk to a
  running control plane's admin API instead of a store. ``TOLLWAY_ADMIN_TOKEN`` alone does not:
  it turns on the admin API of the process that reads it, over that process's store.

``--config`` and ``--data-dir`` are accepted on the root command, on groups and on leaf commands
(``tollway --config f.toml vk list`` = ``tollway vk list --config f.toml``); the last one given
wins. :func:`cli_state` is what a command calls to get the resolved :class:`StateLocation`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import click

from tollway.config import ConfigError, Settings, load_settings, read_config_file

__all__ = [
    "StateLocation",
    "add_state_options",
    "cli_state",
    "mask_url",
    "resolve_state",
    "state_options",
]

_META = "tollway.state"


def mask_url(url: str) -> str:
    """``postgresql://u:pw@h/db`` → ``postgresql://u:***@h/db`` (what may be printed)."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


@attrs.frozen
class StateLocation:
    """Where a command's (or a gateway's) state is, and why: each ``*_from`` names the source
    (``--config``, ``TOLLWAY_CONFIG``, ``--data-dir``, ``TOLLWAY_DATA_DIR``,
    ``tollway.toml data_dir``, ``default``)."""

    settings: Settings
    #: Absolute path of the config file, or None.
    config_file: str | None
    config_from: str | None
    #: Absolute path of the data dir.
    data_dir: str
    data_dir_from: str
    #: ``TOLLWAY_DATABASE_URL`` (may hold a password: print :func:`mask_url` of it).
    database_url: str | None = None
    #: ``TOLLWAY_ADMIN_URL`` and whether ``TOLLWAY_ADMIN_TOKEN`` is set.
    admin_url: str | None = None
    admin_token_set: bool = False
    #: Whether ``--config`` / ``--data-dir`` were given on the command line.
    explicit: bool = False

    @classmethod
    def from_settings(
        cls, settings: Settings, env: Mapping[str, str] | None = None
    ) -> StateLocation:
        """The location of already-built settings (a gateway built without :func:`resolve_state`;
        the sources are not known)."""
        env = os.environ if env is None else env
        config = env.get("TOLLWAY_CONFIG") or None
        return cls(
            settings,
            str(Path(config).resolve()) if config else None,
            "TOLLWAY_CONFIG" if config else None,
            str(Path(settings.data_dir).resolve()),
            "settings",
            (env.get("TOLLWAY_DATABASE_URL") or "").strip() or None,
            (env.get("TOLLWAY_ADMIN_URL") or "").strip() or None,
            bool((env.get("TOLLWAY_ADMIN_TOKEN") or "").strip()),
        )

    @property
    def environment(self) -> str:
        return self.settings.environment

    @property
    def remote(self) -> bool:
        """True when the control-plane commands talk to ``TOLLWAY_ADMIN_URL``. The admin token
        alone is not remote mode: it turns on this process's admin API (and console) over its
        own store, and the commands keep using that store."""
        return bool(self.admin_url)

    @property
    def data_dir_text(self) -> str:
        """``/abs/.tollway (from tollway.toml data_dir)``."""
        return f"{self.data_dir} (from {self.data_dir_from})"

    def to_json(self) -> dict[str, Any]:
        """What ``tollway status --json`` prints under ``cli`` (no secrets)."""
        return {
            "config_file": self.config_file,
            "config_from": self.config_from,
            "data_dir": self.data_dir,
            "data_dir_from": self.data_dir_from,
            "database_url": mask_url(self.database_url) if self.database_url else None,
            "admin_url": self.admin_url,
        }


def resolve_state(
    config_file: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StateLocation:
    """Resolve the config file, settings and data dir exactly as ``tollway serve`` does.

    ``config_file`` / ``data_dir`` are the command-line options (None: not given). Raises
    :class:`tollway.config.ConfigError` for a missing or invalid config file or settings.
    """
    env = os.environ if env is None else env
    config_from: str | None = None
    if config_file:
        config_from = "--config"
    elif env.get("TOLLWAY_CONFIG"):
        config_file, config_from = env["TOLLWAY_CONFIG"], "TOLLWAY_CONFIG"
    merged: dict[str, Any] = dict(overrides or {})
    if data_dir:
        merged["data_dir"] = str(Path(data_dir).resolve())
    settings = load_settings(env, config_file, merged or None)
    config_abs = str(Path(config_file).resolve()) if config_file else None
    if data_dir:
        data_dir_from = "--data-dir"
    elif env.get("TOLLWAY_DATA_DIR"):
        data_dir_from = "TOLLWAY_DATA_DIR"
    elif overrides and "data_dir" in overrides:
        data_dir_from = "the command"
    elif config_file:
        name = Path(config_file).name
        in_file = "data_dir" in read_config_file(config_file)
        data_dir_from = f"{name} data_dir" if in_file else f"the default, next to {name}"
    else:
        data_dir_from = "the default ./.tollway"
    return StateLocation(
        settings,
        config_abs,
        config_from,
        str(Path(settings.data_dir).resolve()),
        data_dir_from,
        (env.get("TOLLWAY_DATABASE_URL") or "").strip() or None,
        (env.get("TOLLWAY_ADMIN_URL") or "").strip() or None,
        bool((env.get("TOLLWAY_ADMIN_TOKEN") or "").strip()),
        explicit=bool(data_dir) or config_from == "--config",
    )


# --- click ------------------------------------------------------------------------------------


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name:
        ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def _params() -> list[click.Option]:
    return [
        click.Option(
            ["--config", "state_config_file"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_remember,
            metavar="FILE",
            help="TOML config file (default: TOLLWAY_CONFIG), as `tollway serve` reads it.",
        ),
        click.Option(
            ["--data-dir", "state_data_dir"],
            type=click.Path(file_okay=False),
            expose_value=False,
            callback=_remember,
            metavar="DIR",
            help="Data dir: the store and secrets (default: TOLLWAY_DATA_DIR, the config "
            "file's data_dir, .tollway).",
        ),
    ]


def add_state_options(command: click.Command, *, recursive: bool = True) -> click.Command:
    """Give ``command`` (and, for a group, its sub-commands) ``--config`` and ``--data-dir``.

    The values land in the click context's ``meta`` (shared by the whole command chain), where
    :func:`cli_state` reads them; commands do not take them as arguments.
    """
    names = {o for p in command.params for o in getattr(p, "opts", ())}
    if "--data-dir" not in names:
        command.params.extend(_params())
    if recursive and isinstance(command, click.Group):
        for sub in command.commands.values():
            add_state_options(sub)
    return command


def state_options(f: Any) -> Any:
    """Decorator form of :func:`add_state_options` for one command (apply after ``@command``)."""
    return add_state_options(f, recursive=False)


def cli_state(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> StateLocation:
    """The state for the running ``tollway`` command: its ``--config`` / ``--data-dir`` (from
    any level of the command line) and the environment. A config error exits 1 with it."""
    ctx = click.get_current_context(silent=True)
    chosen = ctx.meta.get(_META, {}) if ctx is not None else {}
    try:
        return resolve_state(
            chosen.get("state_config_file"), chosen.get("state_data_dir"), env, overrides
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
