"""Test helpers shipped with the core: real processes on loopback.

Plugin authors and our own suites use these to run the provider simulator
(``python -m tollway_simulator``) and a gateway (``python -m tollway serve``) as subprocesses,
then talk to them with the official SDKs::

    from tollway.testing import start_simulator, start_gateway, StaticKey, stop

    sim = start_simulator()
    gw = start_gateway(tmp_path, providers=default_providers(sim.url),
                       keys=[StaticKey(config={"models_allowed": ["gpt-4o*"]})],
                       plugins=["tollway_static_keys", "tollway_provider_openai", "my_plugin"])
    client = gw.openai()          # openai.OpenAI pointed at the gateway with the first key
    ...
    stop(gw.proc); stop(sim.proc)

A provider's end-to-end suite usually wants the gateway and its simulators as one object, with
what the upstream received at hand::

    stack = start_simulated_gateway(tmp_path, sim, providers=default_providers(sim.url))
    ...
    assert stack.upstream()["json"]["max_tokens"] == 200   # the simulator's last request
    stack.stop_all()

To fuzz a running service from its OpenAPI document with schemathesis (a test-only
dependency, run as its own CLI)::

    result = run_schemathesis(f"{cp.url}/api/admin/openapi.json", headers={...},
                              max_examples=20, report_dir=tmp_path)
    assert result.ok, result.failures()

Nothing here is imported by the gateway itself; the SDKs are imported lazily so the core does
not depend on them.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import attrs

from tollway.keys import mint_key

__all__ = [
    "FuzzResult",
    "GatewayProcess",
    "SimulatedGateway",
    "Simulator",
    "StaticKey",
    "cli_json",
    "default_providers",
    "free_port",
    "plugin_allow_list",
    "run_schemathesis",
    "start_gateway",
    "start_simulated_gateway",
    "start_simulator",
    "stop",
    "toml_value",
    "wait_ready",
]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], timeout: float = 10, sig: int = signal.SIGTERM) -> None:
    """``sig`` (SIGTERM: a graceful drain), wait ``timeout`` s, then SIGKILL; close the pipes."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def cli_json(env: Mapping[str, str], *args: str, timeout: float = 60) -> Any:
    """Run ``tollway <args> --json`` with ``env`` and return its parsed output (asserting
    success, with stderr in the message)."""
    out = subprocess.run(
        [sys.executable, "-m", "tollway", *args, "--json"],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
    )
    assert out.returncode == 0, f"tollway {' '.join(args)} failed: {out.stderr}"
    return json.loads(out.stdout)


def _http_json(method: str, url: str) -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


class Simulator:
    """A running provider simulator and its introspection endpoints."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def requests(self) -> list[dict[str, Any]]:
        """Every request it recorded (method, path, query_string, headers, base64 body)."""
        return list(_http_json("GET", f"{self.url}/_sim/requests"))

    def last_request(self) -> dict[str, Any]:
        reqs = self.requests()
        assert reqs, "the simulator received no request"
        return reqs[-1]

    def last_body(self) -> bytes:
        """The exact bytes of the last request body it received."""
        return base64.b64decode(self.last_request()["body"])

    def recorded_request(
        self, index: int = -1, *, skip_paths: Collection[str] = ()
    ) -> dict[str, Any]:
        """A recorded request (default: the last) with its JSON body parsed as ``json`` and
        ``headers`` as a dict with lower-cased names.

        Requests to ``skip_paths`` (a token endpoint, say) are passed over.
        """
        reqs = [r for r in self.requests() if r["path"] not in skip_paths]
        assert reqs, "the simulator received no request"
        req = reqs[index]
        req["json"] = json.loads(base64.b64decode(req["body"]))
        req["headers"] = {k.lower(): v for k, v in req["headers"]}
        return req

    def clear(self) -> None:
        _http_json("DELETE", f"{self.url}/_sim/requests")

    def reset(self) -> None:
        """Reset its counters and prompt-cache memory (recorded requests are kept)."""
        _http_json("POST", f"{self.url}/_sim/reset")

    def stats(self) -> dict[str, int]:
        return dict(_http_json("GET", f"{self.url}/_sim/stats"))


def start_simulator(*args: str) -> Simulator:
    """Start ``python -m tollway_simulator`` on a free port (extra CLI ``args`` passed on)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        stop(proc)
        raise AssertionError(f"the simulator did not start: {line!r}")
    return Simulator(proc, match.group(1))


@attrs.define
class StaticKey:
    """A key for the ``tollway-static-keys`` plugin (a fresh test key unless ``secret``)."""

    config: dict[str, Any] = attrs.field(factory=dict)
    extras: dict[str, Any] = attrs.field(factory=dict)
    secret: str = attrs.field(factory=lambda: mint_key("test"))
    name: str = "test"
    #: Fixed key id (the plugin derives one from the secret when unset).
    id: str | None = None
    project_id: str = "default"
    team_id: str = "default"
    organization_id: str = "default"


def toml_value(value: Any) -> str:
    """A Python value as a TOML inline value (mappings become inline tables, other iterables
    arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if value is None:
        raise ValueError("TOML has no null; leave the key out instead")
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def default_providers(sim_url: str) -> list[dict[str, Any]]:
    """One OpenAI and one Anthropic provider, both pointing at the simulator."""
    return [
        {
            "name": "sim-openai",
            "type": "openai",
            "base_url": f"{sim_url}/v1",
            "api_key": "sk-upstream-openai",
        },
        {
            "name": "sim-anthropic",
            "type": "anthropic",
            "base_url": sim_url,
            "api_key": "sk-ant-upstream",
        },
    ]


def plugin_allow_list(modules: Iterable[str]) -> str:
    """``TOLLWAY_PLUGINS`` loading exactly the installed entry points of these modules (import
    names like ``tollway_static_keys``) or entry-point names."""
    wanted = set(modules)
    eps = importlib.metadata.entry_points(group="tollway")
    names = sorted(ep.name for ep in eps if ep.name in wanted or ep.module in wanted)
    found = {ep.name for ep in eps if ep.name in wanted} | {
        ep.module for ep in eps if ep.module in wanted
    }
    missing = wanted - found
    if missing:
        raise AssertionError(f"plugins not installed: {sorted(missing)}")
    return ",".join(names)


class GatewayProcess:
    """A running ``tollway serve`` subprocess."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        url: str,
        keys: list[StaticKey],
        log: Path,
        config: Path,
        data_dir: Path,
    ) -> None:
        self.proc = proc
        self.url = url
        self.keys = keys
        self.log = log
        self.config = config
        self.data_dir = data_dir

    @property
    def key(self) -> str:
        """The first key's secret."""
        return self.keys[0].secret

    def secret(self, key: str | None = None) -> str:
        """A key's secret by its name (or a secret, returned as is); default: the first key."""
        if key is None:
            return self.key
        for k in self.keys:
            if k.name == key:
                return k.secret
        return key

    def openai(self, key: str | None = None, **kw: Any) -> Any:
        """An ``openai.OpenAI`` client for this gateway (no retries, 20 s timeout); ``key`` is a
        key name or a secret."""
        import openai

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.secret(key), **kw)

    def anthropic(self, key: str | None = None, **kw: Any) -> Any:
        """An ``anthropic.Anthropic`` client for this gateway (no retries, 20 s timeout)."""
        import anthropic

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return anthropic.Anthropic(base_url=self.url, api_key=self.secret(key), **kw)

    def post(
        self,
        key: str | None,
        path: str,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """A raw ``POST`` (an ``httpx.Response``) as ``key`` (a key name or a secret; ``None``:
        the first key), for bodies and headers an SDK would not send as they are."""
        import httpx

        h = {"authorization": f"Bearer {self.secret(key)}", "content-type": "application/json"}
        h.update(headers or {})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers=h, timeout=20)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The gateway's JSON log lines, parsed."""
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


class SimulatedGateway(GatewayProcess):
    """A gateway in front of one or more simulators (see :func:`start_simulated_gateway`)."""

    #: The simulators, in the order given; the first is :attr:`sim`.
    sims: tuple[Simulator, ...] = ()

    @property
    def sim(self) -> Simulator:
        """The first (main) simulator."""
        return self.sims[0]

    def upstream(self, sim: Simulator | None = None, index: int = -1) -> dict[str, Any]:
        """What ``sim`` (default: :attr:`sim`) received, as :meth:`Simulator.recorded_request`
        gives it (default: the last request)."""
        return (sim or self.sim).recorded_request(index)

    def stop_all(self) -> None:
        """Stop the gateway, then every simulator."""
        stop(self.proc)
        for sim in self.sims:
            stop(sim.proc)


G = TypeVar("G", bound=GatewayProcess)
S = TypeVar("S", bound=SimulatedGateway)


def start_gateway(
    tmp: Path,
    config: str = "",
    env: Mapping[str, str] | None = None,
    *,
    providers: Iterable[Mapping[str, Any]] = (),
    keys: Iterable[StaticKey] | None = None,
    plugins: Iterable[str] | None = None,
    wait: bool = True,
    timeout: float = 30,
    cls: type[G] = GatewayProcess,  # type: ignore[assignment]
    command: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    exec_prefix: Sequence[str] = (),
) -> G:
    """Start ``python -m tollway serve`` with a TOML config in ``tmp``.

    ``config`` is raw TOML; ``providers`` are ``[[providers]]`` tables; ``keys`` become
    ``[[plugin.static-keys.keys]]`` entries (default: one fresh key without config);
    ``plugins`` limits the loaded plugins (module or entry-point names; default: every
    installed plugin). The gateway listens on a free loopback port with ``ENVIRONMENT=local``;
    an outer ``TOLLWAY_CONFIG`` is not passed on (the gateway reads this config). ``env`` is
    applied last. ``cls`` lets a test suite get its own :class:`GatewayProcess` subclass back.
    ``command`` replaces ``python -m tollway serve`` with another program that serves a
    gateway the same way (the conformance kit's, which adds its probe); ``--config <file>`` is
    appended to it. ``host`` is the address it listens on (and :attr:`GatewayProcess.url`'s);
    ``exec_prefix`` runs the command through another, e.g. ``ip netns exec NAME`` (a
    :class:`tollway.testing_hosts.Hosts` namespace).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    key_list = list(keys) if keys is not None else [StaticKey()]
    parts = [config]
    for p in providers:
        parts.append("[[providers]]")
        parts.extend(f"{k} = {toml_value(v)}" for k, v in p.items() if v is not None)
    for k in key_list:
        parts.append("[[plugin.static-keys.keys]]")
        for field in ("name", "secret", "project_id", "team_id", "organization_id"):
            parts.append(f"{field} = {toml_value(getattr(k, field))}")
        if k.id:
            parts.append(f"id = {toml_value(k.id)}")
        if k.config:
            parts.append(f"config = {toml_value(k.config)}")
        if k.extras:
            parts.append(f"extras = {toml_value(k.extras)}")
    cfg = tmp / "tollway.toml"
    cfg.write_text("\n".join(parts) + "\n")
    port = free_port()
    log = tmp / "gateway.log"
    data_dir = tmp / "data"
    full_env = {
        **os.environ,
        "ENVIRONMENT": "local",
        "TOLLWAY_DATA_DIR": str(data_dir),
        "SERVER_ADDR": f"{host}:{port}",
        "LOG_FORMAT": "json",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
    }
    full_env.pop("TOLLWAY_CONFIG", None)
    if plugins is not None:
        full_env["TOLLWAY_PLUGINS"] = plugin_allow_list(plugins)
    full_env.update(env or {})
    argv = [
        *exec_prefix,
        *(command or (sys.executable, "-m", "tollway", "serve")),
        "--config",
        str(cfg),
    ]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    gw = cls(proc, f"http://{host}:{port}", key_list, log, cfg, data_dir)
    if wait:
        try:
            wait_ready(gw, timeout)
        except BaseException:
            stop(proc)
            raise
    return gw


def wait_ready(gw: GatewayProcess, timeout: float = 30, *, netcheck: bool = False) -> None:
    """Wait until the gateway finished starting (raise with its log if it exits).

    That is ``/startupz`` 200 — or, unless ``netcheck``, a 503 whose only complaint is a failed
    start-up netcheck (``"status": "netcheck_failed"``): the gateway serves then, and tests
    routinely point providers at dead ports or at hosts this machine cannot resolve on purpose.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {gw.proc.returncode}:\n{gw.logs()}")
        try:
            with urllib.request.urlopen(f"{gw.url}/startupz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if not netcheck and exc.code == 503:
                try:
                    status = json.loads(exc.read()).get("status")
                except ValueError:
                    status = None
                if status == "netcheck_failed":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"gateway not ready after {timeout}s:\n{gw.logs()}")


@overload
def start_simulated_gateway(tmp: Path, *sims: Simulator, cls: type[S], **kwargs: Any) -> S: ...


@overload
def start_simulated_gateway(tmp: Path, *sims: Simulator, **kwargs: Any) -> SimulatedGateway: ...


def start_simulated_gateway(
    tmp: Path,
    *sims: Simulator,
    cls: type[SimulatedGateway] = SimulatedGateway,
    **kwargs: Any,
) -> SimulatedGateway:
    """:func:`start_gateway` (``kwargs`` passed on) in front of the running ``sims``; the first
    is the main one. When the gateway does not start, the simulators are stopped too."""
    if not sims:
        raise ValueError("start_simulated_gateway needs at least one simulator")
    try:
        gw = start_gateway(tmp, cls=cls, **kwargs)
    except BaseException:
        for sim in sims:
            stop(sim.proc)
        raise
    gw.sims = sims
    return gw


@attrs.frozen
class FuzzResult:
    """What :func:`run_schemathesis` saw: the exit code, how many test cases it generated and
    sent, and its output (the failures with a ``curl`` line each to reproduce them)."""

    returncode: int
    cases: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failures(self) -> str:
        """The output from the first failure on (or the last lines when there is none)."""
        start = self.output.find("FAILURES")
        return self.output[start:] if start >= 0 else self.output[-4000:]


def run_schemathesis(
    schema: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_examples: int = 10,
    seed: int = 18,
    checks: Iterable[str] = ("not_a_server_error",),
    phases: Iterable[str] = ("examples", "coverage", "fuzzing", "stateful"),
    workers: int = 1,
    include_paths: Iterable[str] = (),
    max_time: int | None = None,
    timeout: float = 3600,
    extra: Iterable[str] = (),
) -> FuzzResult:
    """Run ``schemathesis run`` (``python -m schemathesis.cli``) against ``schema`` (a URL or a
    file; a file needs ``base_url``) and report what it found.

    ``max_examples`` test cases per operation and phase, ``seed`` fixed: the same cases every
    run (a failure found in CI is found again locally). ``checks`` are schemathesis check
    names; any 5xx fails ``not_a_server_error``. ``include_paths`` limits the operations (exact
    paths). It runs in a scratch directory with its database of examples off, so nothing is
    written to the work tree.
    """
    location = str(schema)
    if not location.startswith(("http://", "https://")):
        location = str(Path(location).resolve())
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        location,
        "--checks",
        ",".join(checks),
        "--phases",
        ",".join(phases),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--no-color",
        "--output-truncate",
        "false",
    ]
    if base_url:
        args += ["--url", base_url]
    for name, value in (headers or {}).items():
        args += ["--header", f"{name}: {value}"]
    for path in include_paths:
        args += ["--include-path", path]
    if max_time is not None:
        args += ["--max-time", str(int(max_time))]
    args += list(extra)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1", "COLUMNS": "120"}
    started = time.monotonic()
    # In a scratch directory: schemathesis keeps a cache of crashes in ./.schemathesis.
    with tempfile.TemporaryDirectory(prefix="tollway-fuzz-") as scratch:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=env, cwd=scratch
        )
    output = proc.stdout + proc.stderr
    counted = re.search(r"(\d+) generated", output)
    return FuzzResult(
        proc.returncode,
        int(counted.group(1)) if counted else 0,
        output,
        time.monotonic() - started,
    )
