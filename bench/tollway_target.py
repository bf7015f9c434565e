"""The Tollway targets, each a ``tollway serve`` on a loopback port:

* ``bare``: the OpenAI provider and the static keys only;
* ``loaded``: every installed plugin loaded, a static config-file key whose config names
  models_allowed, rate limits and policy rules (what "full" meant before issue 25);
* ``working``: every feature working as an operator would set it up: a control-plane key
  (vk-auth, created with ``tollway virtual-keys create``) in a project with a block budget
  (``tollway gateway-budgets create``), rate limits, policy rules, models_allowed, an inline
  ``pii`` pre guardrail, the response cache on its miss path (every body differs;
  ``X-LangWatch-Cache: force`` because the bench body has a temperature), cache passthrough,
  and telemetry exporting every span to a loopback OTLP receiver the bench runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from common import MODES, REPO, UPSTREAM_KEY, VARY_MARKER, request_body
from counts import OtlpReceiver, start_redis
from procs import Proc, free_port, http_ok, run_text, wait_until
from targets import Target, bench_models

KINDS = ("bare", "loaded", "working")
LABELS = {"bare": "Tollway bare", "loaded": "Tollway loaded", "working": "Tollway working"}

#: Far above any load the bench makes: the limits are checked, never hit.
RATE_LIMITS = {"rpm": 100_000_000, "rpd": 1_000_000_000, "tpm": 100_000_000_000}
POLICY_RULES = {
    "tools": {"deny": ["^Bash$", "^shell_exec$"]},
    "urls": {"deny": ["(?i)://([^/]*\\.)?evil\\.example(/|$)"]},
    "models": {"allow": ["^bench-"]},
}
#: The working key's config, written with ``tollway virtual-keys create --config-json``.
WORKING_KEY_CONFIG: dict[str, Any] = {
    "models_allowed": ["bench-*"],
    "rate_limits": RATE_LIMITS,
    "policy_rules": POLICY_RULES,
    "guardrails": {"pre": ["pii"]},
    "response_cache": {"ttl_s": 60},
    "cache": {"mode": "disable"},
}
#: USD per project per month: a block budget the bench never reaches.
WORKING_BUDGET_USD = 1_000_000


def _providers(nginx_port: int, priced: bool) -> str:
    prices = (
        "config = { prices = { "
        + ", ".join(
            f'"bench-{m}" = {{ input_per_mtok = 0.15, output_per_mtok = 0.6 }}' for m in MODES
        )
        + " } }\n"
    )
    return "".join(
        f"""
[[providers]]
name = "bench-{m}"
type = "openai"
base_url = "http://127.0.0.1:{nginx_port}/{m}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["bench-{m}"]
{prices if priced else ""}"""
        for m in MODES
    )


def _static_key_config(secret: str) -> str:
    # The loaded key's config exercises the feature plugins (those not installed ignore it).
    return f"""
[[plugin.static-keys.keys]]
name = "bench"
secret = "{secret}"

[plugin.static-keys.keys.config]
models_allowed = ["bench-*"]

[plugin.static-keys.keys.config.rate_limits]
rpm = {RATE_LIMITS["rpm"]}
rpd = {RATE_LIMITS["rpd"]}
tpm = {RATE_LIMITS["tpm"]}

[plugin.static-keys.keys.config.policy_rules.tools]
deny = ["^Bash$", "^shell_exec$"]

[plugin.static-keys.keys.config.policy_rules.urls]
deny = ["(?i)://([^/]*\\\\.)?evil\\\\.example(/|$)"]

[plugin.static-keys.keys.config.policy_rules.models]
allow = ["^bench-"]
"""


def redis_url() -> str | None:
    """``redis://127.0.0.1:6379/13`` when a Redis answers there (used by the feature plugins)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/13"
    except OSError:
        pass
    return None


_PLUGINS_CACHE: dict[str, str] = {}


def installed_plugins(python: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """``tollway plugins --json`` (every installed plugin; asked once per run)."""
    if python not in _PLUGINS_CACHE:
        _PLUGINS_CACHE[python] = run_text(
            [python, "-m", "tollway", "plugins", "--json"], env=env, timeout=60
        )
    out = _PLUGINS_CACHE[python]
    try:
        plugins: list[dict[str, Any]] = json.loads(out[out.index("[") :])
    except ValueError:
        raise RuntimeError(f"`tollway plugins --json` printed: {out[:300]}") from None
    return plugins


def _cli(python: str, cfg: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """``tollway <args> --config CFG --json``, as an operator would type it; its JSON answer."""
    argv = [python, "-m", "tollway", *args, "--config", str(cfg), "--json"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"`tollway {' '.join(args[:2])}` failed: {res.stderr.strip()[-400:]}")
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def _setup_working(python: str, cfg: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    """The control-plane key and the project's budget, through the CLI on the gateway's store.
    Returns the key's secret and notes."""
    key = _cli(
        python,
        cfg,
        env,
        "virtual-keys",
        "create",
        "--name",
        "bench-working",
        "--scope",
        "project",
        "--config-json",
        json.dumps(WORKING_KEY_CONFIG),
    )
    _cli(
        python,
        cfg,
        env,
        "gateway-budgets",
        "create",
        "--scope",
        "project",
        "--window",
        "month",
        "--limit",
        str(WORKING_BUDGET_USD),
        "--on-breach",
        "block",
    )
    notes = [
        "control-plane key (`tollway virtual-keys create --scope project`, vk-auth) with config "
        f"`{json.dumps(WORKING_KEY_CONFIG, separators=(',', ':'))}`",
        f"project budget `gateway-budgets create --window month --limit {WORKING_BUDGET_USD} "
        "--on-breach block` (providers priced in the config file)",
        "every request body differs (a counter in the user message) and carries "
        "`X-LangWatch-Cache: force` (the body has a temperature): each is a response-cache "
        "miss that is stored",
        "telemetry: GATEWAY_OTEL_DEFAULT_ENDPOINT = a loopback OTLP/HTTP receiver run by the "
        "bench (every span exported, counted)",
    ]
    return str(key["secret"]), notes


def target_tollway(
    name: str,
    work: Path,
    nginx_port: int,
    python: str,
    redis: str = "auto",
    workers: int = 1,
    *,
    wrap: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Target:
    """``bare``, ``loaded`` or ``working``; with ``workers`` > 1 the target is
    ``<name>-w<workers>``, the same gateway under ``tollway serve --workers N`` (which needs
    Redis). ``wrap``: a command the gateway process runs under (``valgrind ...``; its start-up
    may then take minutes); ``extra_env``: set for every command of the target (the CLI calls
    that set it up, and the gateway)."""
    sys.path.insert(0, str(REPO / "core" / "src"))
    try:
        from tollway.keys import mint_key
    finally:
        sys.path.pop(0)
    kind = name
    label = LABELS[kind]
    if workers > 1:
        name = f"{kind}-w{workers}"
        label += f", {workers} workers"
    t = Target(name, label)
    d = work / f"tollway-{name}"
    d.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "local",  # loopback upstream allowed
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "TOLLWAY_DATA_DIR": str(d / "data"),
        "LOG_FORMAT": "json",
    }
    for var in (
        "TOLLWAY_PLUGINS",
        "TOLLWAY_DISABLE_PLUGINS",
        "TOLLWAY_CONFIG",
        "TOLLWAY_DATABASE_URL",
        "TOLLWAY_ADMIN_URL",
        "TOLLWAY_ADMIN_TOKEN",
        "LW_GATEWAY_BASE_URL",
        "GATEWAY_OTEL_DEFAULT_ENDPOINT",
    ):
        env.pop(var, None)
    env.update(extra_env or {})
    redis_note = ""
    if redis == "auto":
        # A Redis of the target's own: its command counts are the target's alone.
        private = start_redis(work, name)
        if private is not None:
            t.extra_procs.append(private[0])
            t.redis_port = private[1]
            redis_url_ = f"redis://127.0.0.1:{private[1]}/0"
            redis_note = f", GATEWAY_REDIS_URL=a redis-server of its own ({redis_url_})"
        else:
            redis_url_ = redis_url() or ""
            redis_note = f", GATEWAY_REDIS_URL={redis_url_}" if redis_url_ else ", no Redis"
    else:
        redis_url_ = "" if redis == "off" else redis
        redis_note = f", GATEWAY_REDIS_URL={redis_url_}" if redis_url_ else ", no Redis"
    if redis_url_:
        env["GATEWAY_REDIS_URL"] = redis_url_
    elif workers > 1:
        raise RuntimeError(f"--workers {workers} needs Redis (see --redis)")
    cfg = d / "tollway.toml"
    secret = ""
    key_notes: list[str] = []
    if kind == "working":
        cfg.write_text(_providers(nginx_port, priced=True))
        secret, key_notes = _setup_working(python, cfg, env)
        t.otlp = OtlpReceiver()
        env["GATEWAY_OTEL_DEFAULT_ENDPOINT"] = t.otlp.endpoint
        t.store = d / "data" / "tollway.db"
        t.vary = True
    else:
        secret = mint_key("test")
        cfg.write_text(_providers(nginx_port, priced=False) + _static_key_config(secret))
    # `tollway plugins --json` with every installed plugin (what loaded and working load); the
    # bare gateway allows only the OpenAI provider and the static keys, whatever their entry
    # points are named.
    plugins = installed_plugins(python, env)
    if kind == "bare":
        by_dist = {p["distribution"]: p["name"] for p in plugins}
        wanted = [by_dist.get(d) for d in ("tollway-provider-openai", "tollway-static-keys")]
        if None in wanted:
            raise RuntimeError(f"the OpenAI provider or static keys are not installed: {by_dist}")
        env["TOLLWAY_PLUGINS"] = ",".join(n for n in wanted if n)
        plugins = [p for p in plugins if p["name"] in wanted]
    t.notes.append("plugins: " + ", ".join(f"{p['name']} {p['version']}" for p in plugins))
    t.notes.append(
        (
            f"`serve --workers {workers}`: {workers} worker processes on one port, the embedded "
            "control plane in a process of its own; CPU and RSS are the whole process tree"
            if workers > 1
            else "one process"
        )
        + " (Hypercorn + uvloop), default logging (INFO, JSON)"
        + redis_note
    )
    if kind == "loaded":
        t.notes.append(
            "static config-file key: models_allowed, rate_limits (rpm/rpd/tpm far above the "
            "load), policy_rules (tools/urls deny lists, models allow list); no budget, no "
            "exported trace, no guardrail"
        )
    t.notes.extend(key_notes)
    t.version = "tollway " + run_text(
        [python, "-c", "import importlib.metadata as m; print(m.version('tollway'))"], env=env
    )
    t.proc = Proc(
        f"tollway-{name}",
        [*wrap, python, "-m", "tollway", "serve", "--config", str(cfg), "--workers", str(workers)],
        d / "gateway.log",
        env=env,
        cwd=d,
    )
    base = f"http://127.0.0.1:{port}"
    start_s = 30 * workers * (10 if wrap else 1)
    wait_until(lambda: http_ok(f"{base}/startupz"), t.proc, start_s, f"Tollway {name}")
    t.urls = {m: f"{base}/v1/chat/completions" for m in MODES}
    headers = {"Authorization": f"Bearer {secret}"}
    if kind == "working":
        headers["X-LangWatch-Cache"] = "force"
    t.headers = {m: dict(headers) for m in MODES}
    t.models = bench_models()
    if kind == "working":
        t.notes.append(_check_working(t))
    return t


def _check_working(t: Target) -> str:
    """Before measuring: the control-plane key answers, and the response cache stores a miss
    and replays it (so the measured requests, each with a body of its own, are stored misses)."""
    body = request_body(t.models["instant"], stream=False, vary=True)
    body = body.replace(VARY_MARKER.encode(), f"check-{os.getpid()}".encode())
    seen = [_post(t.urls["instant"], body, t.headers["instant"]) for _ in range(2)]
    outcomes = [h.get("x-langwatch-cache") for status, h in seen]
    if [status for status, _ in seen] != [200, 200] or outcomes != ["force", "hit"]:
        raise RuntimeError(
            f"working target: two identical requests gave {seen}; expected 200 with "
            "X-LangWatch-Cache force (a stored miss) then hit"
        )
    return "checked before measuring: two identical requests → X-LangWatch-Cache force, then hit"


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(
        url, data=body, headers={**headers, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}
