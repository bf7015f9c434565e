"""Tollway's benchmark: the gateway against nginx direct, LiteLLM and Portkey, on one machine.

Measurements, never timed unit tests. One run starts an nginx upstream (our generated config on
a loopback port), every target, then measures them interleaved: for each repetition and each
phase, the targets in a shuffled order with an idle wait between measurements.

Phases (each target, each repetition):
  wrk       max throughput, closed loop: ``wrk -t1 -c50`` for ``--duration`` seconds
  rate<N>   latency at a fixed rate, open loop (bench/loadgen, built with ``go build`` at run time)
  sse200    a 200-event SSE body sent at once by the upstream: TTFB and relay time, one
            keep-alive connection, streams one after another
  paced     the same 200 events paced 5 ms apart: the gaps the target adds between events

Run from the repository root (see bench/README.md)::

    .venv/bin/python bench/run.py --quick --targets direct,bare,full
    .venv/bin/python bench/run.py --json bench-results.json --markdown docs/performance.md

Targets that cannot be installed or started are reported as "unavailable: <reason>"; the run
goes on without them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = Path(os.environ.get("TOLLWAY_BENCH_CACHE") or Path.home() / ".cache" / "tollway-bench")

#: The newest LiteLLM whose pinned dependencies all resolve from the registry this project uses
#: (1.106.3+ pin certifi>=2026.10.19, 1.109 also litellm-proxy-extras 0.4.113, neither there yet).
#: Never 1.107.0: that release was compromised and withdrawn.
LITELLM_SPEC = "litellm[proxy]==1.106.2"
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
ALL_TARGETS = ("direct", "bare", "full", "litellm", "portkey")
MODES = ("instant", "sse200", "paced", "delay60")
UPSTREAM_KEY = "sk-bench-upstream"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
SSE_EVENTS = 200
PACE_SECONDS = 0.005
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- payloads -------------------------------------------------------------------------------


def request_body(model: str, *, stream: bool) -> bytes:
    """The one request body every target gets (a small chat call declaring one tool)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the weather in Paris today? One sentence."},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def completion_json() -> str:
    """An OpenAI ``chat.completion`` the upstream returns at once (~670 bytes)."""
    return json.dumps(
        {
            "id": "chatcmpl-bench0000000000000000000001",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Mild and partly cloudy in Paris today, around 18 degrees.",
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 52,
                "completion_tokens": 16,
                "total_tokens": 68,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_bench0001",
        },
        separators=(",", ":"),
    )


def sse_events(count: int = SSE_EVENTS) -> list[str]:
    """``count`` OpenAI ``chat.completion.chunk`` events (role, tokens, finish, usage, [DONE])."""
    head = (
        '{"id":"chatcmpl-bench0000000000000000000002","object":"chat.completion.chunk",'
        '"created":1700000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench0001",'
    )

    def chunk(delta: str, finish: str = "null") -> str:
        return (
            f'data: {head}"choices":[{{"index":0,"delta":{delta},"logprobs":null,'
            f'"finish_reason":{finish}}}]}}\n\n'
        )

    events = [chunk('{"role":"assistant","content":"","refusal":null}')]
    tokens = count - 4
    events += [chunk(f'{{"content":" word{i}"}}') for i in range(tokens)]
    events.append(chunk("{}", '"stop"'))
    events.append(
        f'data: {head}"choices":[],"usage":{{"prompt_tokens":52,"completion_tokens":{tokens},'
        f'"total_tokens":{52 + tokens}}}}}\n\n'
    )
    events.append("data: [DONE]\n\n")
    assert len(events) == count
    return events


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process in its own session (so its whole tree can be stopped by its group id)."""

    def __init__(self, name: str, argv: list[str], logfile: Path, **kw: Any) -> None:
        self.name = name
        self.logfile = logfile
        self._fh = logfile.open("wb")
        self.popen = subprocess.Popen(
            argv, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        else:  # the leader is gone; children of its group may not be
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._fh.close()


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime ticks, rss pages) of one process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid=4, utime=14, stime=15, rss=24
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21])


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_usage(root: int) -> tuple[float, int]:
    """CPU seconds (user+system) and RSS bytes of a process tree, from /proc."""
    cpu = 0
    rss = 0
    for pid in process_tree(root):
        st = _proc_stat(pid)
        if st is not None:
            cpu += st[1]
            rss += st[2]
    return cpu / _TICK, rss * _PAGE


def http_ok(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> bool:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            resp.read()
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], proc: Proc, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{what} exited with {proc.popen.returncode}: {proc.tail()}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s: {proc.tail()}")


def run_text(argv: list[str], timeout: float = 30, **kw: Any) -> str:
    """stdout+stderr of a short command ('' if it cannot run)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (res.stdout + res.stderr).strip()


# --- the upstream ---------------------------------------------------------------------------


def echo_module() -> Path | None:
    for d in ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/local/nginx/modules"):
        p = Path(d) / "ngx_http_echo_module.so"
        if p.exists():
            return p
    return None


def _ngx_str(text: str) -> str:
    """A single-quoted nginx string (escapes the SSE event's newlines)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_conf(prefix: Path, port: int, module: Path) -> str:
    events = sse_events()
    at_once = "\n".join(f"      echo -n {_ngx_str(e)};" for e in events)
    paced_lines = []
    for i, e in enumerate(events):
        paced_lines.append(f"      echo -n {_ngx_str(e)};")
        paced_lines.append("      echo_flush;")
        if i != len(events) - 1:
            paced_lines.append(f"      echo_sleep {PACE_SECONDS};")
    paced = "\n".join(paced_lines)
    completion = _ngx_str(completion_json())
    return f"""# generated by bench/run.py
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
load_module {module};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_buffer_size 64k;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /healthz {{ default_type text/plain; return 200 'ok'; }}
    location = /instant/v1/chat/completions {{
      default_type application/json;
      return 200 {completion};
    }}
    location = /delay60/v1/chat/completions {{
      default_type application/json;
      echo_sleep 0.06;
      echo -n {completion};
    }}
    location = /sse200/v1/chat/completions {{
      default_type text/event-stream;
{at_once}
    }}
    location = /paced/v1/chat/completions {{
      default_type text/event-stream;
{paced}
    }}
  }}
}}
"""


def start_nginx(work: Path) -> tuple[Proc, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    module = echo_module()
    if not Path(nginx).exists() or module is None:
        raise RuntimeError(
            "nginx and its echo module are needed (bench/setup.sh installs nginx and "
            "libnginx-mod-http-echo)"
        )
    prefix = work / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, module))
    test = run_text([nginx, "-t", "-q", "-c", str(conf), "-p", str(prefix)])
    if "emerg" in test or "failed" in test:
        raise RuntimeError(f"nginx refused the generated config: {test}")
    proc = Proc("nginx", [nginx, "-c", str(conf), "-p", str(prefix)], prefix / "stdout.log")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), proc, 10, "nginx")
    return proc, port


# --- the load tools -------------------------------------------------------------------------


def build_loadgen(work: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is needed to build bench/loadgen (bench/setup.sh installs it)")
    out = work / "loadgen"
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
        "GOCACHE": os.environ.get("GOCACHE") or str(CACHE / "go-build"),
    }
    res = subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=BENCH / "loadgen",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        raise RuntimeError(f"go build bench/loadgen failed: {res.stderr.strip()}")
    return out


def _lua_str(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def wrk_script(path: Path, body: bytes, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_str(body.decode())}"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    for k, v in headers.items():
        lines.append(f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_wrk(out: str) -> dict[str, Any]:
    requests = duration = 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if m:
        requests = float(m.group(1))
        duration = float(m.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    non2xx = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        non2xx = int(m.group(1))
    sock = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        sock = sum(int(g) for g in m.groups())
    errors = non2xx + sock
    ok = max(0.0, requests - non2xx)
    return {
        "requests": int(requests),
        "duration_s": duration,
        "errors": errors,
        "non2xx": non2xx,
        "socket_errors": sock,
        "rps": ok / duration if duration else 0.0,
    }


# --- targets --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    label: str
    #: URL of the chat endpoint for each upstream mode.
    urls: dict[str, str] = field(default_factory=dict)
    #: Extra request headers per mode (auth, routing).
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The model name sent for each mode.
    models: dict[str, str] = field(default_factory=dict)
    proc: Proc | None = None
    version: str = ""
    notes: list[str] = field(default_factory=list)
    unavailable: str | None = None
    rss_idle: int = 0


def bench_models() -> dict[str, str]:
    return {m: f"bench-{m}" for m in MODES}


def target_direct(nginx_port: int, nginx: Proc) -> Target:
    base = f"http://127.0.0.1:{nginx_port}"
    t = Target("direct", "nginx direct")
    t.urls = {m: f"{base}/{m}/v1/chat/completions" for m in MODES}
    t.headers = {m: {"Authorization": f"Bearer {UPSTREAM_KEY}"} for m in MODES}
    t.models = bench_models()
    t.proc = nginx
    t.version = "nginx " + run_text(["nginx", "-v"]).rpartition("/")[2]
    t.notes.append("one worker process, access log off; the echo module paces and delays")
    return t


def _tollway_config(nginx_port: int, secret: str) -> str:
    providers = "".join(
        f"""
[[providers]]
name = "bench-{m}"
type = "openai"
base_url = "http://127.0.0.1:{nginx_port}/{m}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["bench-{m}"]
"""
        for m in MODES
    )
    # The key's config exercises the feature plugins (those not installed ignore it): a rate
    # limit far above the load, a policy_rules deny list, models_allowed.
    return (
        providers
        + f"""
[[plugin.static-keys.keys]]
name = "bench"
secret = "{secret}"

[plugin.static-keys.keys.config]
models_allowed = ["bench-*"]

[plugin.static-keys.keys.config.rate_limits]
rpm = 100000000
rpd = 1000000000
tpm = 100000000000

[plugin.static-keys.keys.config.policy_rules.tools]
deny = ["^Bash$", "^shell_exec$"]

[plugin.static-keys.keys.config.policy_rules.urls]
deny = ["(?i)://([^/]*\\\\.)?evil\\\\.example(/|$)"]

[plugin.static-keys.keys.config.policy_rules.models]
allow = ["^bench-"]
"""
    )


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


def target_tollway(
    name: str, work: Path, nginx_port: int, python: str, redis: str = "auto"
) -> Target:
    sys.path.insert(0, str(REPO / "core" / "src"))
    try:
        from tollway.keys import mint_key
    finally:
        sys.path.pop(0)
    label = "Tollway bare" if name == "bare" else "Tollway full"
    t = Target(name, label)
    d = work / f"tollway-{name}"
    d.mkdir()
    secret = mint_key("test")
    cfg = d / "tollway.toml"
    cfg.write_text(_tollway_config(nginx_port, secret))
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "local",  # loopback upstream allowed
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "TOLLWAY_DATA_DIR": str(d / "data"),
        "LOG_FORMAT": "json",
    }
    for var in ("TOLLWAY_PLUGINS", "TOLLWAY_DISABLE_PLUGINS", "TOLLWAY_CONFIG"):
        env.pop(var, None)
    redis = redis_url() if redis == "auto" else None if redis == "off" else redis
    if redis:
        env["GATEWAY_REDIS_URL"] = redis
    # `tollway plugins --json` with every installed plugin (what the full gateway loads); the
    # bare gateway allows only the OpenAI provider and the static keys, whatever their
    # entry points are named.
    plugins = installed_plugins(python, env)
    if name == "bare":
        by_dist = {p["distribution"]: p["name"] for p in plugins}
        wanted = [by_dist.get(d) for d in ("tollway-provider-openai", "tollway-static-keys")]
        if None in wanted:
            raise RuntimeError(f"the OpenAI provider or static keys are not installed: {by_dist}")
        env["TOLLWAY_PLUGINS"] = ",".join(n for n in wanted if n)
        plugins = [p for p in plugins if p["name"] in wanted]
    t.notes.append("plugins: " + ", ".join(f"{p['name']} {p['version']}" for p in plugins))
    t.notes.append(
        "one process (Hypercorn + uvloop), default logging (INFO, JSON)"
        + (f", GATEWAY_REDIS_URL={redis}" if redis else ", no Redis")
    )
    if name == "full":
        t.notes.append(
            "key config: models_allowed, rate_limits (rpm/rpd/tpm far above the load), "
            "policy_rules (tools/urls deny lists, models allow list)"
        )
    t.version = "tollway " + run_text(
        [python, "-c", "import importlib.metadata as m; print(m.version('tollway'))"], env=env
    )
    t.proc = Proc(
        f"tollway-{name}",
        [python, "-m", "tollway", "serve", "--config", str(cfg)],
        d / "gateway.log",
        env=env,
        cwd=d,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/startupz"), t.proc, 30, f"Tollway {name}")
    t.urls = {m: f"{base}/v1/chat/completions" for m in MODES}
    t.headers = {m: {"Authorization": f"Bearer {secret}"} for m in MODES}
    t.models = bench_models()
    return t


def install_litellm(spec: str, allow_install: bool) -> Path:
    venv = CACHE / "litellm-venv"
    exe = venv / "bin" / "litellm"
    stamp = venv / ".bench-spec"
    if exe.exists() and stamp.exists() and stamp.read_text() == spec:
        return venv
    if not allow_install:
        raise RuntimeError(f"not installed in {venv} (run once without --no-install)")
    if "1.107.0" in spec:
        raise RuntimeError("litellm 1.107.0 was a compromised release; pick another version")
    log(f"installing {spec} into {venv} (once; cached)")
    CACHE.mkdir(parents=True, exist_ok=True)
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    if not (venv / "bin" / "python").exists():
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", spec],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if "ERROR" in ln] or res.stderr.splitlines()
        raise RuntimeError(f"pip install {spec} failed: {' '.join(lines[-2:])[:400]}")
    stamp.write_text(spec)
    return venv


def target_litellm(work: Path, nginx_port: int, spec: str, allow_install: bool) -> Target:
    t = Target("litellm", "LiteLLM proxy")
    venv = install_litellm(spec, allow_install)
    py = str(venv / "bin" / "python")
    ver = run_text(
        [py, "-c", "import importlib.metadata as m; print(m.version('litellm'))"], timeout=60
    )
    t.version = f"litellm {ver}"
    d = work / "litellm"
    d.mkdir()
    cfg = d / "config.yaml"
    entries = "".join(
        f"""  - model_name: bench-{m}
    litellm_params:
      model: openai/bench-{m}
      api_base: http://127.0.0.1:{nginx_port}/{m}/v1
      api_key: {UPSTREAM_KEY}
"""
        for m in MODES
    )
    cfg.write_text(f"model_list:\n{entries}general_settings:\n  master_key: {LITELLM_MASTER_KEY}\n")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "LITELLM_"))},
        # The price map ships in the package; this machine may not reach the network at start-up.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    t.proc = Proc(
        "litellm",
        [
            str(venv / "bin" / "litellm"),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        d / "litellm.log",
        env=env,
        cwd=d,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/health/liveliness"), t.proc, 120, "LiteLLM")
    t.urls = {m: f"{base}/v1/chat/completions" for m in MODES}
    t.headers = {m: {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"} for m in MODES}
    t.models = bench_models()
    t.notes.append(
        f"{spec}, its own venv, `litellm --num_workers 1`, master key, no database, "
        "config as shipped otherwise (LITELLM_LOCAL_MODEL_COST_MAP=True: no network at start)"
    )
    return t


_LOOPBACK_CJS = """// bench/run.py: bind every listening server to 127.0.0.1 (Portkey's start
// script has --port but no host option; @hono/node-server listens on all interfaces).
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && (args[1] === undefined || typeof args[1] === "function")) {
    args.splice(1, args[1] === undefined ? 1 : 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
"""


def install_portkey(spec: str, allow_install: bool) -> Path:
    d = CACHE / "portkey"
    script = d / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    stamp = d / ".bench-spec"
    if script.exists() and stamp.exists() and stamp.read_text() == spec:
        return d
    if not allow_install:
        raise RuntimeError(f"not installed in {d} (run once without --no-install)")
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are needed for the Portkey gateway")
    log(f"installing {spec} into {d} (once; cached)")
    d.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", spec],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if res.returncode != 0 or not script.exists():
        raise RuntimeError(f"npm install {spec} failed: {res.stderr.strip()[-400:]}")
    stamp.write_text(spec)
    return d


def target_portkey(work: Path, nginx_port: int, spec: str, allow_install: bool) -> Target:
    t = Target("portkey", "Portkey gateway")
    d = install_portkey(spec, allow_install)
    pkg = d / "node_modules" / "@portkey-ai" / "gateway"
    version = json.loads((pkg / "package.json").read_text())["version"]
    node_version = run_text(["node", "--version"])
    t.version = f"@portkey-ai/gateway {version} (node {node_version})"
    shim = work / "portkey-loopback.cjs"
    shim.write_text(_LOOPBACK_CJS)
    port = free_port()
    t.proc = Proc(
        "portkey",
        [
            "node",
            "--require",
            str(shim),
            str(pkg / "build" / "start-server.js"),
            f"--port={port}",
            "--headless",
        ],
        work / "portkey.log",
        env={**os.environ, "NODE_ENV": "production"},
        cwd=d,
    )
    base = f"http://127.0.0.1:{port}"
    probe_headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {UPSTREAM_KEY}",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{nginx_port}/instant/v1",
    }
    body = request_body("bench-instant", stream=False)
    wait_until(
        lambda: http_ok(f"{base}/v1/chat/completions", probe_headers, body), t.proc, 60, "Portkey"
    )
    t.urls = {m: f"{base}/v1/chat/completions" for m in MODES}
    t.headers = {
        m: {
            "Authorization": f"Bearer {UPSTREAM_KEY}",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://127.0.0.1:{nginx_port}/{m}/v1",
        }
        for m in MODES
    }
    t.models = bench_models()
    t.notes.append(
        f"{spec}, one Node process, `start-server.js --headless`, NODE_ENV=production, bound to "
        "127.0.0.1 by a --require shim, routed by x-portkey-provider/x-portkey-custom-host"
    )
    return t


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Runner:
    work: Path
    loadgen: Path
    duration: float
    streams: int
    paced_streams: int
    max_inflight: int
    idle: float

    def body_file(self, target: Target, mode: str, stream: bool) -> Path:
        path = self.work / f"body-{target.models[mode]}-{int(stream)}.json"
        if not path.exists():
            path.write_bytes(request_body(target.models[mode], stream=stream))
        return path

    def _loadgen(
        self, args: list[str], target: Target, mode: str, timeout: float
    ) -> dict[str, Any]:
        argv = [str(self.loadgen), *args, "-url", target.urls[mode]]
        for k, v in target.headers[mode].items():
            argv += ["-H", f"{k}: {v}"]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"loadgen failed: {res.stderr.strip()[-300:]}")
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    def measure(self, target: Target, phase: str) -> dict[str, Any]:
        """Run one phase against one target; add the process tree's CPU and RSS."""
        assert target.proc is not None
        cpu0, _ = tree_usage(target.proc.pid)
        t0 = time.monotonic()
        if phase == "wrk":
            result = self._wrk(target)
            count = result["requests"]
        elif phase.startswith(("rate", "delay")):
            mode = "instant" if phase.startswith("rate") else "delay60"
            rate = float(phase.removeprefix("rate").removeprefix("delay"))
            result = self._loadgen(
                [
                    "-mode",
                    "rate",
                    "-rate",
                    str(rate),
                    "-duration",
                    f"{self.duration}s",
                    "-max-inflight",
                    str(self.max_inflight),
                    "-warmup",
                    "5",
                    "-timeout",
                    "15s",
                    "-body",
                    str(self.body_file(target, mode, False)),
                ],
                target,
                mode,
                timeout=self.duration + 60,
            )
            count = result["completed"] + 5
        elif phase in ("sse200", "paced"):
            n = self.streams if phase == "sse200" else self.paced_streams
            result = self._loadgen(
                [
                    "-mode",
                    "stream",
                    "-n",
                    str(n),
                    "-warmup",
                    "1",
                    "-timeout",
                    "30s",
                    "-body",
                    str(self.body_file(target, phase, True)),
                ],
                target,
                phase,
                timeout=120 + n * 10,
            )
            count = result["streams"] + 1
        else:
            raise ValueError(phase)
        wall = time.monotonic() - t0
        cpu1, rss = tree_usage(target.proc.pid)
        result["cpu_s"] = cpu1 - cpu0
        result["cpu_ms_per_req"] = (cpu1 - cpu0) * 1000 / count if count else None
        result["rss_bytes"] = rss
        result["wall_s"] = wall
        if not target.proc.alive():
            result["note"] = f"the target exited: {target.proc.tail(5)}"
        return result

    def _wrk(
        self, target: Target, duration: float | None = None, connections: int = 50
    ) -> dict[str, Any]:
        duration = duration or self.duration
        script = wrk_script(
            self.work / f"wrk-{target.name}.lua",
            request_body(target.models["instant"], stream=False),
            target.headers["instant"],
        )
        argv = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            target.urls["instant"],
        ]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        if res.returncode != 0:
            raise RuntimeError(f"wrk failed: {res.stderr.strip()[-300:]}")
        out = parse_wrk(res.stdout)
        out["output"] = res.stdout.strip().splitlines()[-3:]
        return out

    def warm(self, target: Target, seconds: float) -> None:
        """Unmeasured: open connections, fill caches, JIT (Node), first-request set-up."""
        self._wrk(target, seconds, connections=10)
        self._loadgen(
            [
                "-mode",
                "stream",
                "-n",
                "1",
                "-warmup",
                "1",
                "-body",
                str(self.body_file(target, "sse200", True)),
            ],
            target,
            "sse200",
            timeout=90,
        )


def last_error_line(target: Target) -> str | None:
    """The last line of a target's log that looks like an error (for the report's notes)."""
    if target.proc is None or target.name == "direct":
        return None
    try:
        lines = target.proc.logfile.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if re.search(r"error|exception|traceback", line, re.I):
            return line.strip().replace("`", "'")[:200]
    return None


# --- summarising ----------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarise(runs: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    """Median over repetitions of each figure; errors summed."""
    ok_runs = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"repetitions": len(runs), "failed_runs": len(runs) - len(ok_runs)}
    if not ok_runs:
        out["error"] = runs[-1].get("error") if runs else "not run"
        return out
    out["cpu_ms_per_req"] = _median([r.get("cpu_ms_per_req") for r in ok_runs])
    out["rss_mib"] = max(r["rss_bytes"] for r in ok_runs) / MIB
    if phase == "wrk":
        out["rps"] = _median([r["rps"] for r in ok_runs])
        out["rps_runs"] = [round(r["rps"], 1) for r in ok_runs]
        out["errors"] = sum(r["errors"] for r in ok_runs)
        out["requests"] = sum(r["requests"] for r in ok_runs)
    elif phase.startswith(("rate", "delay")):
        out["target_rate"] = ok_runs[0]["target_rate"]
        out["achieved_rate"] = _median([r["achieved_rate"] for r in ok_runs])
        out["errors"] = sum(r["errors"] + r["dropped"] for r in ok_runs)
        out["ok"] = sum(r["ok"] for r in ok_runs)
        for p in ("p50", "p90", "p99", "max"):
            out[p] = _median([r["latency_ms"][p] for r in ok_runs if r["ok"]])
        out["p50_runs"] = [round(r["latency_ms"]["p50"], 2) for r in ok_runs]
        out["p99_runs"] = [round(r["latency_ms"]["p99"], 2) for r in ok_runs]
        out["lateness_p99"] = max(r["send_lateness_ms"]["p99"] for r in ok_runs)
        firsts = [r.get("first_error") for r in ok_runs if r.get("first_error")]
        if firsts:
            out["first_error"] = firsts[0]
    else:
        out["ok"] = sum(r["ok"] for r in ok_runs)
        out["errors"] = sum(r["errors"] for r in ok_runs)
        have = [r for r in ok_runs if r["ok"]]
        out["ttfb_p50"] = _median([r["ttfb_ms"]["p50"] for r in have])
        out["ttfb_p90"] = _median([r["ttfb_ms"]["p90"] for r in have])
        out["total_p50"] = _median([r["total_ms"]["p50"] for r in have])
        out["after_first_p50"] = _median([r["after_first_ms"]["p50"] for r in have])
        out["gap_p50"] = _median([r["gap_ms"]["p50"] for r in have])
        out["gap_p99"] = _median([r["gap_ms"]["p99"] for r in have])
        out["gap_max"] = max((r["gap_ms"]["max"] for r in have), default=None)
        out["events"] = sorted({r["events_min"] for r in have} | {r["events_max"] for r in have})
        firsts = [r.get("first_error") for r in ok_runs if r.get("first_error")]
        if firsts:
            out["first_error"] = firsts[0]
    return out


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def evaluate_bars(s: dict[str, dict[str, Any]], rates: list[float]) -> list[dict[str, Any]]:
    """The product's performance bars (docs/performance.md), each met, missed or n/a."""

    def get(target: str, phase: str, key: str) -> float | None:
        value = s.get(target, {}).get(phase, {}).get(key)
        return value if isinstance(value, int | float) else None

    def added(target: str, phase: str, key: str) -> float | None:
        return _sub(get(target, phase, key), get("direct", phase, key))

    def fmt(v: float | None, unit: str = "", digits: int = 2, sign: bool = False) -> str:
        if v is None:
            return "n/a"
        return f"{v:+.{digits}f}{unit}" if sign else f"{v:.{digits}f}{unit}"

    bars: list[dict[str, Any]] = []

    def at_most(
        group: str, text: str, value: float | None, limit: float | None, shown: str
    ) -> None:
        met = None if value is None or limit is None else value <= limit
        bars.append({"group": group, "bar": text, "measured": shown, "met": met})

    def at_least(group: str, text: str, value: float | None, limit: float, shown: str) -> None:
        met = None if value is None else value >= limit
        bars.append({"group": group, "bar": text, "measured": shown, "met": met})

    full_rps, bare_rps = get("full", "wrk", "rps"), get("bare", "wrk", "rps")
    lite_rps, pk_rps = get("litellm", "wrk", "rps"), get("portkey", "wrk", "rps")
    r = _div(full_rps, lite_rps)
    at_least(
        "Throughput",
        "full ≥ 10× LiteLLM's max req/s",
        r,
        10.0,
        f"{fmt(r, '×', 1)} ({fmt(full_rps, '', 0)} vs {fmt(lite_rps, '', 0)} req/s)",
    )
    r = _div(full_rps, pk_rps)
    at_least(
        "Throughput",
        "full ≥ 1.0× Portkey's max req/s",
        r,
        1.0,
        f"{fmt(r, '×')} ({fmt(full_rps, '', 0)} vs {fmt(pk_rps, '', 0)} req/s)",
    )
    r = _div(full_rps, bare_rps)
    at_least(
        "Throughput",
        "full ≥ 0.8× bare",
        r,
        0.8,
        f"{fmt(r, '×')} ({fmt(full_rps, '', 0)} vs {fmt(bare_rps, '', 0)} req/s)",
    )
    for rate in rates:
        ph = f"rate{rate:g}"
        group = f"Latency @{rate:g}/s"
        f50, l50 = added("full", ph, "p50"), added("litellm", ph, "p50")
        lim = None if l50 is None else l50 / 5
        at_most(
            group,
            "full p50 added ≤ 1/5 of LiteLLM's",
            f50,
            lim,
            f"{fmt(f50, sign=True)} ms vs LiteLLM {fmt(l50, sign=True)} ms (limit {fmt(lim)})",
        )
        f99, p99 = added("full", ph, "p99"), added("portkey", ph, "p99")
        at_most(
            group,
            "full p99 added ≤ Portkey's",
            f99,
            p99,
            f"{fmt(f99, sign=True)} ms vs Portkey {fmt(p99, sign=True)} ms",
        )
        d = _sub(get("full", ph, "p50"), get("bare", ph, "p50"))
        at_most(group, "full − bare ≤ +0.5 ms p50", d, 0.5, f"{fmt(d, sign=True)} ms")
    ft, lt = added("full", "sse200", "ttfb_p50"), added("litellm", "sse200", "ttfb_p50")
    lim = None if lt is None else lt / 8
    at_most(
        "Streaming",
        "TTFB added ≤ 1/8 of LiteLLM's",
        ft,
        lim,
        f"{fmt(ft, sign=True)} ms vs LiteLLM {fmt(lt, sign=True)} ms (limit {fmt(lim)})",
    )
    rel = added("full", "sse200", "after_first_p50")
    per_event = None if rel is None else rel * 1000 / (SSE_EVENTS - 1)
    at_most(
        "Streaming",
        "per-event relay ≤ 10 µs (200 at once: total − TTFB within 2 ms of direct's)",
        rel,
        2.0,
        f"{fmt(rel, sign=True)} ms over direct ≈ {fmt(per_event, ' µs', 1, sign=True)}/event",
    )
    gap = added("full", "paced", "gap_max")
    at_most(
        "Streaming",
        "no added gap > 1 ms on the paced stream",
        gap,
        1.0,
        f"max gap {fmt(get('full', 'paced', 'gap_max'))} ms vs direct "
        f"{fmt(get('direct', 'paced', 'gap_max'))} ms ({fmt(gap, sign=True)})",
    )
    rss_values = [
        ph["rss_mib"] for ph in s.get("full", {}).values() if isinstance(ph.get("rss_mib"), float)
    ]
    rss = max(rss_values) if rss_values else None
    at_most("Memory", "full RSS ≤ 120 MiB (every plugin loaded)", rss, 120.0, fmt(rss, " MiB", 0))
    return bars


# --- reporting ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    for line in run_text(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def source_state() -> str:
    """Which Tollway source was measured: the commit, and a digest of the working tree's core and
    plugin sources (the tree may hold uncommitted changes)."""
    import hashlib

    head = run_text(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "?"
    dirty = run_text(["git", "-C", str(REPO), "status", "--porcelain"])
    digest = hashlib.sha256()
    for d in ("core/src", "plugins", "providers"):
        for path in sorted((REPO / d).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    changes = len(dirty.splitlines()) if dirty else 0
    return (
        f"commit {head}"
        + (f" + {changes} uncommitted change(s)" if changes else "")
        + f"; sources sha256 {digest.hexdigest()[:12]}"
    )


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def tool_versions() -> dict[str, str]:
    return {
        "nginx": run_text(["nginx", "-v"]).rpartition("/")[2],
        "wrk": run_text(["wrk", "-v"]).partition("[")[0].strip(),
        "go": run_text(["go", "version"]),
        "node": run_text(["node", "--version"]),
    }


def _f(v: Any, digits: int = 2, sign: bool = False) -> str:
    if not isinstance(v, int | float):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    targets = [t for t in report["targets"] if t["name"] in s]
    m = report["machine"]
    out: list[str] = []
    w = out.append
    w("# Performance\n")
    w(
        "Generated by `bench/run.py` from one run on "
        f"{report['started_at']} (see [bench/README.md](../bench/README.md) for the method and a "
        "profile of the hot path). Measurements, not tests: every figure is from this machine, "
        "under the load it had.\n"
    )
    w("## The machine and the run\n")
    w(
        f"- CPU: {m['nproc']} × {m['cpu_model'] or '?'}; {m['memory_gib']} GiB; Linux "
        f"{m['kernel']}; Python {m['python']}"
    )
    if report.get("source"):
        w(f"- Tollway source measured: {report['source']}")
    w(
        f"- Load average (1/5/15 min) before the run: {report['load_before']}, after: "
        f"{report['load_after']}"
    )
    if report.get("loaded"):
        w(
            "- **The machine was loaded during this run**: other work was running (see the load "
            "average before the run); absolute numbers are lower and noisier than on an idle "
            "machine, the ratios between targets measured interleaved carry over better."
        )
    w(
        f"- Tools: nginx {report['tools']['nginx']}, {report['tools']['wrk']}, "
        f"{report['tools']['go']}, node {report['tools']['node']}"
    )
    o = report["options"]
    w(
        f"- {o['repetitions']} repetition(s); in each, every phase ran against the targets in a "
        f"shuffled order with {o['idle']:g} s idle between measurements; {o['duration']:g} s per "
        f"throughput/latency measurement, {o['streams']} at-once streams and {o['paced_streams']} "
        "paced stream(s) per measurement. Each figure is the median over the repetitions "
        "(max RSS: the largest seen). Total wall time "
        f"{report['wall_s']:.0f} s."
    )
    w(f"- Reproduce: `{report['command']}`\n")
    w("### Targets\n")
    w("| target | version | what was on |")
    w("|---|---|---|")
    for t in report["targets"]:
        what = "; ".join(t["notes"]) if not t["unavailable"] else f"unavailable: {t['unavailable']}"
        w(f"| {t['label']} | {t['version'] or '–'} | {what} |")
    w("")
    met = sum(1 for b in report["bars"] if b["met"])
    missed = sum(1 for b in report["bars"] if b["met"] is False)
    w("## Bars\n")
    w(
        f"{met} met, {missed} missed, {len(report['bars']) - met - missed} not measurable in this "
        "run. Each is computed from the medians below (`evaluate_bars` in bench/run.py). The "
        "throughput bars use the measured max req/s; see the *req/s per core* column under "
        "Throughput for the figure the machine's other load moves least.\n"
    )
    w("| area | bar | measured | |")
    w("|---|---|---|---|")
    for b in report["bars"]:
        mark = {True: "met", False: "**missed**", None: "n/a"}[b["met"]]
        w(f"| {b['group']} | {b['bar']} | {b['measured']} | {mark} |")
    w("")
    w("## Throughput (closed loop, `wrk -t1 -c50`, instant upstream)\n")
    w(
        "*per run*: each repetition's figure (the spread shows how much the machine's other load "
        "moved it). *CPU ms/req* (the target's own CPU time per request) depends much less on that "
        "load, so *req/s per core* = 1000 / CPU ms/req is the steadier capacity estimate.\n"
    )
    w("| target | max req/s | per run | errors | CPU ms/req | req/s per core | RSS MiB |")
    w("|---|---|---|---|---|---|---|")
    for t in targets:
        ph = s[t["name"]].get("wrk", {})
        if "rps" not in ph:
            w(f"| {t['label']} | – | | {ph.get('error', '–')} | | | |")
            continue
        per_core = _div(1000.0, ph.get("cpu_ms_per_req"))
        w(
            f"| {t['label']} | {ph['rps']:.0f} | {', '.join(f'{x:.0f}' for x in ph['rps_runs'])} | "
            f"{ph['errors']} | {_f(ph['cpu_ms_per_req'])} | {_f(per_core, 0)} | "
            f"{ph['rss_mib']:.0f} |"
        )
    ratios = report["ratios"]
    w("")
    w("Ratios of max req/s: " + "; ".join(f"{k} {_f(v)}×" for k, v in ratios.items()) + ".")
    cpu = {n: s.get(n, {}).get("wrk", {}).get("cpu_ms_per_req") for n in s}
    cpu_ratios = {
        "LiteLLM/full": _div(cpu.get("litellm"), cpu.get("full")),
        "Portkey/full": _div(cpu.get("portkey"), cpu.get("full")),
        "full/bare": _div(cpu.get("full"), cpu.get("bare")),
    }
    w(
        "Ratios of CPU ms per request under `wrk`: "
        + "; ".join(f"{k} {_f(v)}×" for k, v in cpu_ratios.items())
        + ".\n"
    )
    latency_phases = [(f"rate{r:g}", r, "instant upstream") for r in report["options"]["rates"]]
    latency_phases += [
        (f"delay{r:g}", r, "upstream answering after 60 ms")
        for r in report["options"].get("delay_rates", [])
    ]
    for phase, rate, upstream in latency_phases:
        w(f"## Latency at {rate:g} req/s (open loop, {upstream})\n")
        w(
            "Latency in ms from the moment the request is sent; *added* = target − nginx direct at "
            "the same rate.\n"
        )
        w(
            "| target | achieved req/s | errors | p50 | p90 | p99 | max | added p50 | added p99 | "
            "CPU ms/req |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|")
        d = s.get("direct", {}).get(phase, {})
        for t in targets:
            ph = s[t["name"]].get(phase, {})
            if "p50" not in ph:
                w(f"| {t['label']} | – | {ph.get('error', '–')} | | | | | | | |")
                continue
            a50 = _sub(ph.get("p50"), d.get("p50")) if t["name"] != "direct" else None
            a99 = _sub(ph.get("p99"), d.get("p99")) if t["name"] != "direct" else None
            w(
                f"| {t['label']} | {_f(ph['achieved_rate'], 1)} | {ph['errors']} | "
                f"{_f(ph['p50'])} | {_f(ph['p90'])} | {_f(ph['p99'])} | {_f(ph['max'])} | "
                f"{_f(a50, sign=True)} | {_f(a99, sign=True)} | {_f(ph['cpu_ms_per_req'])} |"
            )
        w("")
    w("## Streaming (one keep-alive connection, streams one after another)\n")
    w(
        f"**At once**: the upstream sends all {SSE_EVENTS} events in one go. TTFB = time to the "
        "first body byte; *relay* = total − TTFB, the bar's per-event measure (a gateway that "
        "passes the burst on in one write has ~0 relay and shows its cost in TTFB, so look at "
        "*total added* too). *added* = target − nginx direct.\n"
    )
    w(
        "| target | TTFB p50 ms | TTFB added | total p50 ms | total added | relay p50 ms | "
        "relay added | per event µs | events seen | errors |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    d = s.get("direct", {})
    da, dp = d.get("sse200", {}), d.get("paced", {})

    def errors(ph: dict[str, Any]) -> str:
        text = str(ph.get("errors", ph.get("error", "–")))
        if ph.get("first_error"):
            text += f" ({ph['first_error'][:60]})"
        return text

    for t in targets:
        a = s[t["name"]].get("sse200", {})
        is_d = t["name"] == "direct"
        ta = None if is_d else _sub(a.get("ttfb_p50"), da.get("ttfb_p50"))
        tt = None if is_d else _sub(a.get("total_p50"), da.get("total_p50"))
        ra = None if is_d else _sub(a.get("after_first_p50"), da.get("after_first_p50"))
        pe = None if ra is None else ra * 1000 / (SSE_EVENTS - 1)
        ev = ",".join(str(x) for x in (a.get("events") or []))
        w(
            f"| {t['label']} | {_f(a.get('ttfb_p50'))} | {_f(ta, sign=True)} | "
            f"{_f(a.get('total_p50'))} | {_f(tt, sign=True)} | {_f(a.get('after_first_p50'))} | "
            f"{_f(ra, sign=True)} | {_f(pe, 1, sign=True)} | {ev or '–'} | {errors(a)} |"
        )
    w("")
    w(
        f"**Paced**: one event every {PACE_SECONDS * 1000:g} ms from the upstream (nginx's timers "
        "make it ~5.5 ms). Gaps are between consecutive reads that completed an event, over "
        "all measured streams; *max added* = target's largest gap − direct's largest gap. On a "
        "loaded machine the largest gap measures the scheduler as much as the gateway: compare "
        "with direct's own.\n"
    )
    w(
        "| target | TTFB p50 ms | gap p50 ms | gap p99 ms | max gap ms | max added | "
        "p99 added | total p50 ms | errors |"
    )
    w("|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        p = s[t["name"]].get("paced", {})
        is_d = t["name"] == "direct"
        ga = None if is_d else _sub(p.get("gap_max"), dp.get("gap_max"))
        g99 = None if is_d else _sub(p.get("gap_p99"), dp.get("gap_p99"))
        w(
            f"| {t['label']} | {_f(p.get('ttfb_p50'))} | {_f(p.get('gap_p50'))} | "
            f"{_f(p.get('gap_p99'))} | {_f(p.get('gap_max'))} | {_f(ga, sign=True)} | "
            f"{_f(g99, sign=True)} | {_f(p.get('total_p50'), 0)} | {errors(p)} |"
        )
    w("")
    w("## Memory\n")
    w(
        "RSS of each target's whole process tree, largest seen after a measurement (idle: right "
        "after start-up and warm-up).\n"
    )
    w("| target | idle MiB | max MiB |")
    w("|---|---|---|")
    for t in targets:
        mx = max((ph.get("rss_mib") or 0 for ph in s[t["name"]].values()), default=0)
        w(f"| {t['label']} | {t['rss_idle_mib']:.0f} | {mx:.0f} |")
    w("")
    w("## How it is measured\n")
    w(
        "- Upstream: nginx (one worker, our generated config, loopback) with the echo module: an "
        "instant OpenAI `chat.completion` (~670 bytes), a 200-event `chat.completion.chunk` SSE "
        "body at once, the same paced 5 ms apart, a 60 ms delayed answer. Each mode has its own "
        "base URL (`/instant/v1`, `/sse200/v1`, `/paced/v1`, `/delay60/v1`), so a gateway's "
        "provider `base_url` picks it.\n"
        "- Max throughput: `wrk -t1 -c50` (closed loop). Latency: `bench/loadgen` (Go, stdlib "
        "only, built at run time) sends request *i* at start + *i*/rate whatever the earlier ones "
        "do (in-flight cap: a request over it counts as an error, never queued), timed from the "
        "actual send.\n"
        "- CPU ms/req: user+system time of the target's process tree from /proc before and after "
        "a measurement, over the requests it completed (warm-up requests included). The load "
        "generator's CPU is not counted.\n"
        "- All targets run at once (idle ones cost nothing measurable) and get the same request "
        "body: a chat call with a system and a user message and one tool declaration.\n"
    )
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: ~1 s per measurement, 1 rep")
    p.add_argument("--duration", type=float, default=None, help="seconds per wrk / rate run (8)")
    p.add_argument("--rates", default="20,200", help="open-loop rates, req/s (20,200)")
    p.add_argument(
        "--delay-rates",
        default="",
        help="open-loop rates against the 60 ms upstream, req/s (none by default)",
    )
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated targets")
    p.add_argument("--repetitions", type=int, default=None, help="rounds (2; --quick: 1)")
    p.add_argument("--streams", type=int, default=None, help="at-once streams per run (10)")
    p.add_argument("--paced-streams", type=int, default=None, help="paced streams per run (2)")
    p.add_argument("--idle", type=float, default=None, help="idle seconds between runs (0.5)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per target (3)")
    p.add_argument("--max-inflight", type=int, default=64, help="open-loop in-flight cap (64)")
    p.add_argument("--seed", type=int, default=None, help="shuffle seed (random)")
    p.add_argument("--json", dest="json_out", type=Path, help="write the full report as JSON")
    p.add_argument("--markdown", type=Path, help="write Markdown (docs/performance.md)")
    p.add_argument("--litellm-spec", default=LITELLM_SPEC, help=f"pip spec ({LITELLM_SPEC})")
    p.add_argument("--portkey-spec", default=PORTKEY_SPEC, help=f"npm spec ({PORTKEY_SPEC})")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="never pip/npm install LiteLLM or Portkey (report them unavailable instead)",
    )
    p.add_argument("--python", default=sys.executable, help="the venv Python that runs Tollway")
    p.add_argument(
        "--redis",
        default="auto",
        help="GATEWAY_REDIS_URL for Tollway: auto (db 13 of a Redis on 127.0.0.1:6379 if one "
        "answers), off, or a URL",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: re-render a report saved with --json (with --markdown)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (1.0 if quick else 8.0)
    args.repetitions = args.repetitions or (1 if quick else 2)
    args.warmup = args.warmup or (1.0 if quick else 3.0)
    args.streams = args.streams or (3 if quick else 10)
    args.paced_streams = args.paced_streams or (1 if quick else 2)
    args.idle = args.idle if args.idle is not None else (0.2 if quick else 0.5)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.delay_rates = [float(r) for r in args.delay_rates.split(",") if r.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown target(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_TARGETS)}")
    if "direct" not in args.targets:
        args.targets.insert(0, "direct")  # every "added" figure needs it
    return args


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    try:
        yield d
    finally:
        if keep:
            log(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        # Re-render a saved report (no measuring).
        report = json.loads(args.from_json.read_text())
        report["bars"] = evaluate_bars(report["summary"], report["options"]["rates"])
        print_console(report)
        if args.markdown:
            args.markdown.write_text(render_markdown(report))
            log(f"wrote {args.markdown}")
        return 0
    started = time.monotonic()
    rng = random.Random(args.seed)
    command = ".venv/bin/python bench/run.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    report: dict[str, Any] = {
        "started_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command.strip(),
        "machine": machine_info(),
        "source": source_state(),
        "load_before": loadavg(),
        "options": {
            "duration": args.duration,
            "rates": args.rates,
            "delay_rates": args.delay_rates,
            "repetitions": args.repetitions,
            "streams": args.streams,
            "paced_streams": args.paced_streams,
            "idle": args.idle,
            "max_inflight": args.max_inflight,
            "quick": args.quick,
        },
    }
    log(f"load average before: {report['load_before']}")
    if shutil.which("wrk") is None:
        log("wrk is missing: run bench/setup.sh")
        return 2
    targets: list[Target] = []
    procs: list[Proc] = []
    with workdir(args.keep) as work:
        try:
            loadgen = build_loadgen(work)
            nginx, nginx_port = start_nginx(work)
            procs.append(nginx)
            log(f"nginx upstream on 127.0.0.1:{nginx_port}")
            report["tools"] = tool_versions()
            starters: dict[str, Callable[[], Target]] = {
                "direct": lambda: target_direct(nginx_port, nginx),
                "bare": lambda: target_tollway("bare", work, nginx_port, args.python, args.redis),
                "full": lambda: target_tollway("full", work, nginx_port, args.python, args.redis),
                "litellm": lambda: target_litellm(
                    work, nginx_port, args.litellm_spec, not args.no_install
                ),
                "portkey": lambda: target_portkey(
                    work, nginx_port, args.portkey_spec, not args.no_install
                ),
            }
            labels = {
                "direct": "nginx direct",
                "bare": "Tollway bare",
                "full": "Tollway full",
                "litellm": "LiteLLM proxy",
                "portkey": "Portkey gateway",
            }
            runner = Runner(
                work,
                loadgen,
                args.duration,
                args.streams,
                args.paced_streams,
                args.max_inflight,
                args.idle,
            )
            for name in args.targets:
                log(f"starting {name}")
                try:
                    t = starters[name]()
                    if t.proc is not None and t.proc is not nginx:
                        procs.append(t.proc)
                    log(f"{name} up ({t.version}); warming up")
                    runner.warm(t, args.warmup)
                    assert t.proc is not None
                    t.rss_idle = tree_usage(t.proc.pid)[1]
                except Exception as exc:  # reported, never fatal
                    reason = str(exc).strip().replace("\n", " ")[:500]
                    log(f"{name} unavailable: {reason}")
                    t = Target(name, labels[name], unavailable=reason)
                targets.append(t)
            live = [t for t in targets if t.unavailable is None]
            phases = [
                "wrk",
                *(f"rate{r:g}" for r in args.rates),
                *(f"delay{r:g}" for r in args.delay_rates),
                "sse200",
                "paced",
            ]
            results: dict[str, dict[str, list[dict[str, Any]]]] = {
                t.name: {ph: [] for ph in phases} for t in live
            }
            for rep in range(args.repetitions):
                for phase in phases:
                    order = live[:]
                    rng.shuffle(order)
                    for t in order:
                        log(f"rep {rep + 1}/{args.repetitions} {phase:<8} {t.name}")
                        try:
                            res = runner.measure(t, phase)
                        except Exception as exc:
                            res = {"error": str(exc)[:300]}
                            log(f"  failed: {res['error']}")
                        results[t.name][phase].append(res)
                        time.sleep(args.idle)
            summary = {
                name: {ph: summarise(runs, ph) for ph, runs in per.items()}
                for name, per in results.items()
            }
            for t in live:
                if any(ph.get("errors") or ph.get("error") for ph in summary[t.name].values()):
                    line = last_error_line(t)
                    if line:
                        t.notes.append(f"its log at the end of the run: `{line}`")
        finally:
            for proc in reversed(procs):
                proc.stop()
    report["load_after"] = loadavg()
    report["wall_s"] = time.monotonic() - started
    try:
        load1 = max(float(report["load_before"].split()[0]), float(report["load_after"].split()[0]))
    except ValueError:
        load1 = 0.0
    # The benchmark itself keeps about 1.5 cores busy; load before it means other work.
    report["loaded"] = float(report["load_before"].split()[0] or 0) > 0.7 or load1 > 3.0
    report["targets"] = [
        {
            "name": t.name,
            "label": t.label,
            "version": t.version,
            "notes": t.notes,
            "unavailable": t.unavailable,
            "rss_idle_mib": t.rss_idle / MIB,
        }
        for t in targets
    ]
    report["summary"] = summary
    report["raw"] = results
    get = lambda n: summary.get(n, {}).get("wrk", {}).get("rps")  # noqa: E731
    report["ratios"] = {
        "full/bare": _div(get("full"), get("bare")),
        "full/LiteLLM": _div(get("full"), get("litellm")),
        "bare/LiteLLM": _div(get("bare"), get("litellm")),
        "full/Portkey": _div(get("full"), get("portkey")),
        "direct/full": _div(get("direct"), get("full")),
    }
    report["bars"] = evaluate_bars(summary, args.rates)
    print_console(report)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        log(f"wrote {args.json_out}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(report))
        log(f"wrote {args.markdown}")
    return 0


def print_console(report: dict[str, Any]) -> None:
    s = report["summary"]
    print(f"{'target':<10} {'wrk req/s':>10} {'CPU ms':>7}", end="")
    for rate in report["options"]["rates"]:
        print(f" {'p50@' + format(rate, 'g'):>9} {'p99@' + format(rate, 'g'):>9}", end="")
    print(f" {'TTFB':>7} {'relay':>7} {'gap':>6} {'RSS':>5}")
    for name, per in s.items():
        w = per.get("wrk", {})
        print(f"{name:<10} {_f(w.get('rps'), 0):>10} {_f(w.get('cpu_ms_per_req')):>7}", end="")
        for rate in report["options"]["rates"]:
            r = per.get(f"rate{rate:g}", {})
            print(f" {_f(r.get('p50')):>9} {_f(r.get('p99')):>9}", end="")
        a, p = per.get("sse200", {}), per.get("paced", {})
        rss = max((ph.get("rss_mib") or 0 for ph in per.values()), default=0)
        print(
            f" {_f(a.get('ttfb_p50')):>7} {_f(a.get('after_first_p50')):>7} "
            f"{_f(p.get('gap_max')):>6} {rss:>5.0f}"
        )
    for t in report["targets"]:
        if t["unavailable"]:
            print(f"{t['name']}: unavailable: {t['unavailable']}")
    for b in report["bars"]:
        mark = {True: "met", False: "MISSED", None: "n/a"}[b["met"]]
        print(f"[{mark:>6}] {b['group']}: {b['bar']} — {b['measured']}")


if __name__ == "__main__":
    sys.exit(main())
