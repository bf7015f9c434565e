"""Configuration: environment variables first, then an optional TOML file (SPEC §8).

Everything is validated at start; every error names its path (``providers[1].base_url``) or
environment variable, and unknown keys are refused rather than ignored.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from tollway._breaker import BreakerSettings
from tollway.egress import mask_url, proxy_problem, standard_from_env
from tollway.outbound import (
    ALLOW_CIDRS_ENV,
    OutboundPolicy,
    normalise_host,
    parse_cidrs,
    redact_userinfo,
)
from tollway.routing import strategy_problem, weight_problem

__all__ = [
    "ConfigError",
    "LogSettings",
    "OutboundSettings",
    "PluginSelection",
    "ProviderConfig",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "json_type",
    "load_settings",
    "read_config_file",
]


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))
        self.errors = errors


@attrs.frozen
class ServerSettings:
    addr: str = ":5563"
    #: 0 → the 32 MiB default.
    max_request_body_bytes: int = 0
    graceful_seconds: float = 30.0
    #: After SIGTERM, /readyz answers 503 this long before the listener closes.
    drain_delay_seconds: float = 1.0
    heartbeat_seconds: float = 0.0
    upstream_connect_timeout_seconds: float = 10.0
    #: Time allowed for an upstream to answer (headers) and between two body reads.
    upstream_timeout_seconds: float = 300.0
    #: ``host[:port]`` list the start-up netcheck dials (None: every configured provider's
    #: host, or its proxy's; ``[]``: skip the netcheck).
    netcheck_hosts: list[str] | None = None
    #: Bound on the netcheck of one host (DNS + TCP connect); hosts are checked concurrently.
    netcheck_timeout_seconds: float = 5.0
    #: A failed netcheck is run again after this long (``/startupz`` stays 503 meanwhile).
    netcheck_retry_seconds: float = 5.0
    #: How long a thread may hold the GIL while another waits for it (``sys.setswitchinterval``;
    #: Python's default is 5 ms). Background threads (the span exporter, the store's writes)
    #: then hold up the event loop for at most this long each time it wakes.
    gil_switch_interval_seconds: float = 0.0005


@attrs.frozen
class OutboundSettings:
    """Outbound proxies (see :mod:`tollway.egress` for the precedence)."""

    #: ``LW_GATEWAY_OUTBOUND_PROXY``: one proxy for every outbound call.
    proxy: str | None = attrs.field(default=None, repr=False)
    #: ``HTTPS_PROXY`` / ``https_proxy``.
    https_proxy: str | None = attrs.field(default=None, repr=False)
    #: ``HTTP_PROXY`` / ``http_proxy``.
    http_proxy: str | None = attrs.field(default=None, repr=False)
    #: ``NO_PROXY`` / ``no_proxy``: hosts the standard variables do not apply to.
    no_proxy: str | None = None


@attrs.frozen
class LogSettings:
    #: ``json`` or ``pretty``.
    format: str = "json"
    level: str = "INFO"
    message_body: bool = False


@attrs.frozen
class PluginSelection:
    #: Only these entry-point names are loaded (None: all installed).
    allow: list[str] | None = None
    disable: list[str] = attrs.field(factory=list)
    #: Plugins whose import failure is logged instead of stopping start-up.
    optional: list[str] = attrs.field(factory=list)


@attrs.frozen
class ProviderConfig:
    """One model provider credential: from the config file, or from a key's bundle (store)."""

    name: str
    type: str
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    #: Model ids or trailing-``*`` globs this provider serves (None: the adapter's default).
    models: list[str] | None = None
    #: Fallback priority: lower first.
    priority: int = 0
    #: Provider-specific settings (region, deployment map, ``anthropic_version``, …).
    config: dict[str, Any] = attrs.field(factory=dict)
    #: Stable id (the store's); defaults to ``name``.
    id: str | None = None
    #: Bumped by the store on every change; a new revision gets a new adapter instance.
    revision: int = 0
    #: Gateway-side rate limits for this credential, applied before dispatch (None = off).
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    #: Config file only: this provider may call a loopback/private address (a self-hosted model
    #: server on the operator's network) outside ``ENVIRONMENT=local``. Never set by a store.
    allow_private_network: bool = False
    #: Config file only: this provider's share under ``[routing] strategy = "weighted"``
    #: (0: fallback only).
    weight: int = 1

    @property
    def key(self) -> str:
        """The id used in :class:`~tollway.RouteTarget` and metrics."""
        return self.id or self.name


@attrs.frozen
class RoutingSettings:
    """``[routing]``: how the config file's providers share the load (docs/operator-guide.md).
    A routing policy from the control plane carries its own strategy."""

    #: ``ordered`` (by ``priority``), ``weighted``, ``least-latency`` or ``least-busy``.
    strategy: str = "ordered"
    #: The largest ``max_tokens`` the gateway fills in for a request that carries none when an
    #: upstream requires it (Anthropic); the model's own maximum output is used when smaller.
    default_max_tokens: int = 4096
    #: When every provider of a request is cooling down after 429s, wait this long at most
    #: for the first to come back before answering 429 (0: never wait).
    max_cooldown_wait_seconds: float = 5.0


@attrs.frozen
class Settings:
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    outbound: OutboundSettings = OutboundSettings()
    routing: RoutingSettings = RoutingSettings()
    plugins: PluginSelection = PluginSelection()
    data_dir: str = ".tollway"
    environment: str = "production"
    redis_url: str | None = None
    #: ``GATEWAY_REDIS_URL`` names a Redis Cluster (SPEC §1).
    redis_cluster: bool = False
    #: ``GATEWAY_OUTBOUND_ALLOW_CIDRS``: networks every outbound URL may reach despite the SSRF
    #: guard (see :mod:`tollway.outbound`).
    outbound_allow_cidrs: list[str] = attrs.field(factory=list)
    providers: list[ProviderConfig] = attrs.field(factory=list)
    #: Raw ``[plugin.<name>]`` sections, structured by :meth:`plugin` once plugins registered.
    plugin_sections: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    _plugin_values: dict[str, Any] = attrs.field(factory=dict, alias="_plugin_values")

    def plugin(self, name: str) -> Any:
        """The structured settings a plugin registered under ``name``."""
        return self._plugin_values[name]

    def outbound_policy(self) -> OutboundPolicy:
        """The SSRF guard of this configuration (:class:`tollway.outbound.OutboundPolicy`):
        ``environment``, ``outbound_allow_cidrs``, and the host names of the providers with
        ``allow_private_network``."""
        names = set()
        for p in self.providers:
            if p.allow_private_network and p.base_url:
                host = urlsplit(p.base_url).hostname
                if host:
                    found = normalise_host(host)
                    if isinstance(found, str):
                        names.add(found)
        return OutboundPolicy(
            guard=self.environment != "local",
            allow_cidrs=parse_cidrs(self.outbound_allow_cidrs, "outbound_allow_cidrs"),
            private_names=frozenset(names),
        )

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets masked (for ``tollway config show``)."""
        data: dict[str, Any] = dict(converter.unstructure(self))
        data.pop("_plugin_values", None)
        data["plugin"] = data.pop("plugin_sections")
        for name, value in self._plugin_values.items():
            data["plugin"][name] = converter.unstructure(value)
        for p in data["providers"]:
            if p.get("base_url"):
                p["base_url"] = redact_userinfo(p["base_url"])
            if p.get("api_key"):
                p["api_key"] = p["api_key"][:4] + "…"
            config = p.get("config")
            if isinstance(config, dict) and isinstance(config.get("proxy"), str):
                config["proxy"] = mask_url(config["proxy"])
        for name in ("proxy", "https_proxy", "http_proxy"):
            if data["outbound"].get(name):
                data["outbound"][name] = mask_url(data["outbound"][name])
        masked: dict[str, Any] = _mask(data)
        return masked


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if isinstance(value, str) and value and any(s in key.lower() for s in _SECRET_WORDS):
        return "****"
    return value


_SECRET_WORDS = ("secret", "password", "token", "pepper")

converter = cattrs.Converter(forbid_extra_keys=True)


def _structure_settings(data: Mapping[str, Any], _: type) -> Settings:
    data = dict(data)
    sections = data.pop("plugin", {})
    if not isinstance(sections, dict):
        raise ValueError("'plugin' must be a table of [plugin.<name>] sections")
    base = _settings_fn(data, Settings)
    return attrs.evolve(base, plugin_sections=sections)


_settings_fn = make_dict_structure_fn(
    Settings,
    converter,
    _cattrs_forbid_extra_keys=True,
    plugin_sections=cattrs.override(omit=True),
    _plugin_values=cattrs.override(omit=True),
)
converter.register_structure_hook(Settings, _structure_settings)


# Environment variables → config paths (SPEC §8 names).
_ENV: dict[str, tuple[str, ...]] = {
    "SERVER_ADDR": ("server", "addr"),
    "SERVER_MAX_REQUEST_BODY_BYTES": ("server", "max_request_body_bytes"),
    "SERVER_GRACEFUL_SECONDS": ("server", "graceful_seconds"),
    "SERVER_DRAIN_DELAY_SECONDS": ("server", "drain_delay_seconds"),
    "SERVER_HEARTBEAT_SECONDS": ("server", "heartbeat_seconds"),
    "SERVER_UPSTREAM_TIMEOUT_SECONDS": ("server", "upstream_timeout_seconds"),
    "SERVER_UPSTREAM_CONNECT_TIMEOUT_SECONDS": ("server", "upstream_connect_timeout_seconds"),
    "SERVER_NETCHECK_HOSTS": ("server", "netcheck_hosts"),
    "SERVER_NETCHECK_TIMEOUT_SECONDS": ("server", "netcheck_timeout_seconds"),
    "SERVER_NETCHECK_RETRY_SECONDS": ("server", "netcheck_retry_seconds"),
    "SERVER_GIL_SWITCH_INTERVAL_SECONDS": ("server", "gil_switch_interval_seconds"),
    "LW_GATEWAY_OUTBOUND_PROXY": ("outbound", "proxy"),
    "LOG_FORMAT": ("log", "format"),
    "LOG_LEVEL": ("log", "level"),
    "LW_LOG_MESSAGE_BODY": ("log", "message_body"),
    "TOLLWAY_PLUGINS": ("plugins", "allow"),
    "TOLLWAY_DISABLE_PLUGINS": ("plugins", "disable"),
    "TOLLWAY_OPTIONAL_PLUGINS": ("plugins", "optional"),
    "TOLLWAY_DATA_DIR": ("data_dir",),
    "ENVIRONMENT": ("environment",),
    "GATEWAY_REDIS_URL": ("redis_url",),
    "GATEWAY_REDIS_CLUSTER": ("redis_cluster",),
    ALLOW_CIDRS_ENV: ("outbound_allow_cidrs",),
}
_LIST_ENV = {
    "TOLLWAY_PLUGINS",
    "TOLLWAY_DISABLE_PLUGINS",
    "TOLLWAY_OPTIONAL_PLUGINS",
    "SERVER_NETCHECK_HOSTS",
    ALLOW_CIDRS_ENV,
}
#: Set to the empty string, these mean an empty list rather than "unset".
_EMPTY_MEANS_NONE = {"SERVER_NETCHECK_HOSTS"}
_BOOL_ENV = {"LW_LOG_MESSAGE_BODY", "GATEWAY_REDIS_CLUSTER"}


def _from_env(env: Mapping[str, str], data: dict[str, Any]) -> None:
    for var, path in _ENV.items():
        raw = env.get(var)
        if raw is None or (raw.strip() == "" and var not in _EMPTY_MEANS_NONE):
            continue
        value: Any = raw
        if var in _LIST_ENV:
            value = [p.strip() for p in raw.split(",") if p.strip()]
        elif var in _BOOL_ENV:
            value = raw.strip().lower() in ("1", "true", "yes", "on")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([f"{'.'.join(path[:-1])}: must be a table (set by {var})"])
        node[path[-1]] = value
    # The standard proxy variables (either case; urllib's rule: lower-case wins).
    for field, (value, _) in standard_from_env(env).items():
        outbound = data.setdefault("outbound", {})
        if isinstance(outbound, dict):
            outbound[field] = value


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and validate the settings: TOML file (``TOLLWAY_CONFIG`` or ``config_file``), then
    environment variables on top, then ``overrides`` (used by ``serve --demo``)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = config_file or env.get("TOLLWAY_CONFIG")
    if path:
        data = read_config_file(path)
        # A relative data_dir in a file (or the default .tollway) is relative to the file's
        # folder, so every command given the same file finds the same store (tollway.state).
        folder = Path(path).resolve().parent
        data_dir = data.get("data_dir", ".tollway")
        if isinstance(data_dir, str) and data_dir and not Path(data_dir).is_absolute():
            data["data_dir"] = str(folder / data_dir)
    _from_env(env, data)
    if overrides:
        _deep_merge(data, overrides)
    try:
        settings = converter.structure(data, Settings)
    except Exception as exc:  # cattrs raises ClassValidationError trees
        raise ConfigError(_render_errors(exc, env)) from None
    problems = _validate(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML config file's table; :class:`ConfigError` when missing or not TOML."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError([f"config file {path}: not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config file {path}: is a directory"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {path}: not valid TOML: {exc}"]) from None


def _deep_merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _render_errors(exc: Exception, env: Mapping[str, str] | None = None) -> list[str]:
    """cattrs' error tree as one line per problem, paths without the ``config.`` prefix and
    naming the environment variable a value came from."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return [str(exc)]
    out = []
    for line in cattrs.transform_error(exc, path="config"):
        line = line.replace(" @ config.", " @ ").replace(" @ config", " @ (top level)")
        for var, path in _ENV.items():
            if env and env.get(var) and line.endswith(" @ " + ".".join(path)):
                line += f" (from the environment variable {var})"
        out.append(line)
    return out


def structure_plugin_settings(settings: Settings, registered: Mapping[str, type[Any]]) -> Settings:
    """Structure every ``[plugin.<name>]`` section with the class its plugin registered."""
    errors: list[str] = []
    values: dict[str, Any] = {}
    for name, cls in registered.items():
        section = settings.plugin_sections.get(name, {})
        try:
            values[name] = converter.structure(section, cls)
        except Exception as exc:
            for line in _render_errors(exc):
                errors.append(f"plugin.{name}: {line}")
    for name in settings.plugin_sections:
        if name not in registered:
            known = ", ".join(sorted(registered)) or "none"
            errors.append(
                f"plugin.{name}: no installed plugin registered settings named {name!r} "
                f"(registered: {known})"
            )
    if errors:
        raise ConfigError(errors)
    return attrs.evolve(settings, _plugin_values=values)


def json_type(value: Any) -> str:
    """What a JSON value is, for "must be …, not <this>" messages in config validation
    (``"null"``, ``"a boolean"``, ``"an integer"``, ``"a number"``, ``"a string"``,
    ``"an object"``, ``"an array"``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def is_private_host(host: str) -> bool:
    """True for a ``localhost`` name or an address, in any spelling, that the SSRF guard refuses
    without an allowlist (see :func:`tollway.outbound.guarded_address`)."""
    return OutboundPolicy().host_problem(host) is not None


def _validate(settings: Settings) -> list[str]:
    problems: list[str] = []
    port = settings.server.addr.rpartition(":")[2]
    if not port.isdigit() or not 0 <= int(port) < 65536:
        problems.append(
            f"server.addr (SERVER_ADDR): {settings.server.addr!r} must look like ':5563' or "
            "'127.0.0.1:5563'"
        )
    if settings.log.format not in ("json", "pretty"):
        problems.append(f"log.format (LOG_FORMAT): {settings.log.format!r} is not json or pretty")
    if settings.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        problems.append(
            f"log.level (LOG_LEVEL): {settings.log.level!r} is not DEBUG, INFO, WARNING or ERROR"
        )
    if settings.server.max_request_body_bytes < 0:
        problems.append("server.max_request_body_bytes: must be >= 0 (0 means the 32 MiB default)")
    if settings.server.upstream_timeout_seconds <= 0:
        problems.append("server.upstream_timeout_seconds: must be > 0")
    try:
        policy = settings.outbound_policy()
    except ValueError as exc:
        problems.append(f"{exc} (from {ALLOW_CIDRS_ENV} or outbound_allow_cidrs)")
        policy = OutboundPolicy(guard=settings.environment != "local")
    if settings.server.netcheck_timeout_seconds <= 0:
        problems.append("server.netcheck_timeout_seconds: must be > 0")
    if settings.server.netcheck_retry_seconds <= 0:
        problems.append("server.netcheck_retry_seconds: must be > 0")
    if not 0 < settings.server.gil_switch_interval_seconds <= 0.1:
        problems.append(
            "server.gil_switch_interval_seconds (SERVER_GIL_SWITCH_INTERVAL_SECONDS): must be "
            "> 0 and <= 0.1 (the default 0.0005 is half a millisecond)"
        )
    for host in settings.server.netcheck_hosts or ():
        if not _hostport_ok(host):
            problems.append(
                f"server.netcheck_hosts (SERVER_NETCHECK_HOSTS): {host!r} must be host or "
                "host:port (e.g. api.openai.com:443)"
            )
    for name, var in _PROXY_VARS.items():
        problem = proxy_problem(getattr(settings.outbound, name))
        if problem:
            problems.append(f"outbound.{name} ({var}): {problem}")
    routing = settings.routing
    problem = strategy_problem(routing.strategy)
    if problem:
        problems.append(f"routing.strategy: {problem}")
    if routing.default_max_tokens < 1:
        problems.append("routing.default_max_tokens: must be a positive whole number")
    if routing.max_cooldown_wait_seconds < 0:
        problems.append("routing.max_cooldown_wait_seconds: must be >= 0 (0: never wait)")
    seen: set[str] = set()
    for i, p in enumerate(settings.providers):
        where = f"providers[{i}]"
        problem = weight_problem(p.weight)
        if problem:
            problems.append(f"{where}.weight: {problem}")
        if p.name in seen:
            problems.append(f"{where}.name: {p.name!r} is used twice; provider names are unique")
        seen.add(p.name)
        if p.base_url:
            problem = policy.url_problem(
                p.base_url, allow_private=p.allow_private_network, hint=PROVIDER_HINT
            )
            if problem is not None:
                problems.append(f"{where}.base_url: {problem}")
        problem = proxy_problem(p.config.get("proxy"))
        if problem:
            problems.append(f"{where}.config.proxy: {problem}")
        _, breaker_problems = BreakerSettings.parse(
            p.config.get("circuit_breaker"), f"{where}.config.circuit_breaker"
        )
        problems.extend(breaker_problems)
    return problems


_PROXY_VARS = {
    "proxy": "LW_GATEWAY_OUTBOUND_PROXY",
    "https_proxy": "HTTPS_PROXY",
    "http_proxy": "HTTP_PROXY",
}


def _hostport_ok(text: str) -> bool:
    try:
        parts = urlsplit(f"//{text}")
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return False
    return bool(parts.hostname) and not parts.path


#: What a config-file provider's SSRF refusal suggests.
PROVIDER_HINT = (
    "for a model server on your own network set allow_private_network = true on this provider, "
    f"or list its network in {ALLOW_CIDRS_ENV}"
)
