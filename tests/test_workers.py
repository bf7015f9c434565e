"""``tollway serve --workers N`` (SPEC §8 "Workers"): N worker processes on one port, state
shared through Redis, the embedded control plane in one process of its own, one ``/metrics``
for all. Real processes throughout: the supervisor, its workers and control plane, Redis, the
simulator and the official SDKs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Simulator

from tollway._workers import parse_workers
from tollway.testing import (
    GatewayProcess,
    cli_json,
    default_providers,
    free_port,
    start_gateway,
    stop,
)

HELLO = [{"role": "user", "content": "hi"}]
REDIS = "redis://127.0.0.1:6379/0"
SERVE_2 = (sys.executable, "-m", "tollway", "serve", "--workers", "2")


def tollway(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tollway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Two workers with every installed plugin on, the embedded control plane, real Redis."""
    g = start_gateway(
        tmp_path_factory.mktemp("workers"),
        providers=default_providers(sim.url),
        # Spans reach the explorer within a fraction of a second.
        env={
            "GATEWAY_REDIS_URL": REDIS,
            "TOLLWAY_ADMIN_TOKEN": "workers-admin-token",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            # A drain delay, so /readyz can be seen turning 503 on every worker.
            "SERVER_DRAIN_DELAY_SECONDS": "3",
        },
        command=SERVE_2,
        timeout=90,
    )
    yield g
    stop(g.proc, timeout=30)


def cli_env(gw: GatewayProcess) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "local",
        "TOLLWAY_DATA_DIR": str(gw.data_dir),
        "TOLLWAY_CONFIG": str(gw.config),
    }


ADMIN = {"authorization": "Bearer workers-admin-token"}


def store_key(gw: GatewayProcess, config: dict[str, Any]) -> str:
    """A virtual key created in the embedded control plane's store (not a static key) through
    the admin API on the gateway's port (relayed to the control plane process); the workers
    resolve it through that process."""
    r = httpx.post(
        f"{gw.url}/api/admin/virtual-keys",
        json={"name": f"w-{uuid.uuid4().hex[:6]}", "config": config},
        headers=ADMIN,
        timeout=20,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def served_by(gw: GatewayProcess) -> dict[str, int]:
    """Request id → the worker that logged its ``request_completed`` line."""
    out: dict[str, int] = {}
    for rec in gw.log_records():
        if rec.get("msg", "").startswith("request_completed") and "worker" in rec:
            out[rec["request_id"]] = rec["worker"]
    return out


def fresh_post(gw: GatewayProcess, key: str, body: dict[str, Any], path: str) -> httpx.Response:
    """One request on a new connection (the kernel picks a worker per connection)."""
    with httpx.Client(timeout=20) as client:
        return client.post(gw.url + path, json=body, headers={"authorization": f"Bearer {key}"})


def scrape_requests(gw: GatewayProcess) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_http_requests_total{") and 'route="other"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_both_sdks_on_both_workers_and_one_scrape_counts_them_all(gw: GatewayProcess) -> None:
    import anthropic
    import openai

    key = store_key(gw, {"rate_limits": {"rpm": 1000}, "guardrails": {"pre": ["pii"]}})
    before = scrape_requests(gw)
    ids: list[str] = []
    for i in range(10):
        # A new client (and so a new connection) each time: both workers get some.
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=20)
        raw = oa.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {i}"}]
        )
        assert raw.parse().choices[0].message.content
        ids.append(raw.headers["x-langwatch-request-id"])
        an = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=20)
        araw = an.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=20, messages=HELLO
        )
        assert araw.parse().content[0].text
        ids.append(araw.headers["x-langwatch-request-id"])
    # One scrape of the shared port counts every worker's requests.
    assert scrape_requests(gw) - before == len(ids)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not set(ids) <= served_by(gw).keys():
        time.sleep(0.1)
    workers = Counter(served_by(gw)[i] for i in ids)
    assert set(workers) == {0, 1}, workers
    # The request explorer (the control plane's store) has the requests of both workers: through
    # the admin API on the shared port, and through the CLI working on the store itself.
    deadline = time.monotonic() + 15
    listed: set[str] = set()
    while time.monotonic() < deadline and not set(ids) <= listed:
        time.sleep(0.3)
        r = httpx.get(f"{gw.url}/api/admin/requests", params={"limit": 200}, headers=ADMIN)
        assert r.status_code == 200, r.text
        listed = {row["request_id"] for row in r.json()["data"]}
    assert set(ids) <= listed
    rows = cli_json(cli_env(gw), "requests", "list", "--limit", "200")
    assert set(ids) <= {row["request_id"] for row in rows}


def test_the_control_plane_api_answers_on_the_shared_port(gw: GatewayProcess) -> None:
    assert httpx.get(f"{gw.url}/api/health", timeout=10).status_code == 200
    r = httpx.get(f"{gw.url}/api/admin/virtual-keys", headers=ADMIN, timeout=10)
    assert r.status_code == 200
    r = httpx.get(f"{gw.url}/api/admin/virtual-keys", timeout=10)
    assert r.status_code == 401 and "TOLLWAY_ADMIN_TOKEN" in r.json()["error"]["message"]
    # The control plane's own /metrics and trace receiver stay on its loopback port.
    assert httpx.post(f"{gw.url}/api/otel/v1/traces", content=b"{}").status_code == 404


def test_the_console_signs_in_through_any_worker(gw: GatewayProcess) -> None:
    """The console's sessions live in the control plane process: a session made through one
    worker is good on the other (every request below is a new connection)."""
    assert f"console: {gw.url}/console/" in gw.logs()
    login = f"{gw.url}/console/login"
    r = httpx.post(
        login,
        data={"token": "workers-admin-token", "next": ""},
        headers={"origin": gw.url},
        timeout=10,
    )
    assert r.status_code == 303, r.text
    cookies = r.cookies
    assert cookies, "no session cookie"
    for _ in range(6):
        page = httpx.get(f"{gw.url}/console/", cookies=cookies, timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
    # A form from elsewhere is refused: the console sees the gateway's own Host.
    r = httpx.post(login, data={"token": "x"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403


def test_rate_limit_and_response_cache_are_shared_by_the_workers(gw: GatewayProcess) -> None:
    key = store_key(gw, {"rate_limits": {"rpm": 4}})
    codes = [
        fresh_post(
            gw, key, {"model": "gpt-4o-mini", "messages": HELLO}, "/v1/chat/completions"
        ).status_code
        for _ in range(8)
    ]
    assert sorted(codes) == [200] * 4 + [429] * 4, codes

    cached = store_key(gw, {"response_cache": {"ttl_s": 300}})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
    answers = [fresh_post(gw, cached, body, "/v1/chat/completions") for _ in range(12)]
    assert [r.status_code for r in answers] == [200] * 12
    assert [r.headers["x-langwatch-cache"] for r in answers] == ["miss"] + ["hit"] * 11
    deadline = time.monotonic() + 10
    rids = [r.headers["x-langwatch-request-id"] for r in answers]
    while time.monotonic() < deadline and not set(rids) <= served_by(gw).keys():
        time.sleep(0.1)
    # Hits on both workers: the worker that did not fetch the answer found it too.
    assert {served_by(gw)[r] for r in rids[1:]} == {0, 1}


def worker_pids(gw: GatewayProcess) -> dict[int, int]:
    """Worker index → pid of its latest process, from the supervisor's log."""
    pids: dict[int, int] = {}
    for rec in gw.log_records():
        m = re.match(r"worker_started worker=(\d+) pid=(\d+)", rec.get("msg", ""))
        if m:
            pids[int(m.group(1))] = int(m.group(2))
    return pids


def test_a_killed_worker_is_replaced(gw: GatewayProcess) -> None:
    first = worker_pids(gw)
    assert set(first) == {0, 1}
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker_pids(gw)[0] == first[0]:
        time.sleep(0.1)
    replaced = worker_pids(gw)
    assert replaced[0] != first[0] and replaced[1] == first[1]
    assert "worker_exited worker=0" in gw.logs()
    # The new worker starts serving: it logs requests of its own.
    key = store_key(gw, {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = fresh_post(gw, key, {"model": "gpt-4o-mini", "messages": HELLO}, "/v1/chat/completions")
        assert r.status_code == 200
        if served_by(gw).get(r.headers["x-langwatch-request-id"]) == 0:
            break
    else:
        pytest.fail("the replacement worker never served a request")
    os.kill(replaced[0], 0)  # still alive


def test_sigterm_drains_an_in_flight_stream(gw: GatewayProcess) -> None:
    """Last in this module: it stops the shared gateway."""
    key = store_key(gw, {})
    got: list[bytes] = []
    done = threading.Event()

    def consume() -> None:
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO, "stream": True},
            headers={"authorization": f"Bearer {key}", "x-simulator-event-delay-ms": "150"},
            timeout=30,
        ) as r:
            for chunk in r.iter_bytes():
                got.append(chunk)
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got, "stream did not start"
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # Every worker drains: /readyz is 503 whichever worker a new connection reaches.
    probes = [httpx.get(f"{gw.url}/readyz", timeout=5) for _ in range(5)]
    assert [p.status_code for p in probes] == [503] * 5
    assert {p.json()["status"] for p in probes} == {"draining"}
    t.join(30)
    assert done.is_set()
    assert b"data: [DONE]" in b"".join(got)
    assert gw.proc.wait(timeout=60) == 0
    logs = gw.logs()
    assert "workers_draining" in logs and "worker_stopped worker=1" in logs
    # Nothing is left behind: the workers and the control plane are gone.
    for pid in worker_pids(gw).values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# `--workers 2` without GATEWAY_REDIS_URL is refused:
# tests/test_lifecycle.py::test_workers_without_redis_refused.


def test_workers_auto_is_the_number_of_cores(tmp_path: Path) -> None:
    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: auto means one worker, which needs no Redis")
    out = tollway(
        "serve",
        "--workers",
        "auto",
        env={"GATEWAY_REDIS_URL": "", "TOLLWAY_DATA_DIR": str(tmp_path)},
    )
    # auto was accepted and resolved to the core count (then refused for the missing Redis).
    assert out.returncode == 1
    assert f"--workers {cores} without GATEWAY_REDIS_URL" in out.stderr


def test_bad_workers_value_is_a_usage_error(tmp_path: Path) -> None:
    out = tollway("serve", "--workers", "two", env={"TOLLWAY_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "--workers" in out.stderr and "auto" in out.stderr


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "1.5", " "])
def test_parse_workers_refuses_what_is_not_a_count(value: str) -> None:
    with pytest.raises(ValueError, match="positive whole number or 'auto'"):
        parse_workers(value)


def test_parse_workers() -> None:
    assert parse_workers("1") == 1
    assert parse_workers("3") == 3
    assert parse_workers(" AUTO ") == (os.cpu_count() or 1)


def test_no_child_outlives_a_killed_supervisor(sim: Simulator, tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance to clean up: the kernel's parent-death signal
    (and each worker's watch on its parent) stops the workers and the control plane."""
    g = start_gateway(
        tmp_path,
        providers=default_providers(sim.url)[:1],
        env={"GATEWAY_REDIS_URL": REDIS},
        plugins=["tollway_static_keys", "tollway_provider_openai", "tollway_control_plane"],
        command=SERVE_2,
        timeout=90,
    )
    try:
        assert g.openai().chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices
        children = list(worker_pids(g).values())
        m = re.search(r"workers_control_plane_started url=\S+ pid=(\d+)", g.logs())
        assert m is not None and len(children) == 2
        children.append(int(m.group(1)))
        g.proc.kill()
        g.proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        alive = children
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in children if _alive(pid)]
        assert not alive, f"still running after the supervisor died: {alive}"
    finally:
        stop(g.proc)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_cannot_start_stops_the_command(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "crashy-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crashy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tollway]\ncrashy = crashy_mod\n")
    (site / "crashy_mod.py").write_text(
        "from tollway import hookimpl\n"
        "@hookimpl\n"
        "def gateway_started(gateway):\n"
        "    raise RuntimeError('cannot reach the licence server')\n"
    )
    out = tollway(
        "serve",
        "--workers",
        "2",
        "--port",
        str(free_port()),
        env={
            "PYTHONPATH": str(site),
            "TOLLWAY_DATA_DIR": str(tmp_path / "d"),
            "GATEWAY_REDIS_URL": REDIS,
            "TOLLWAY_PLUGINS": "crashy,tollway-static-keys",
        },
        timeout=120,
    )
    assert out.returncode == 1
    assert "crashy" in out.stderr and "licence server" in out.stderr
    assert "worker_failed_to_start" in out.stderr
    assert "Traceback" not in out.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = tollway(
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
            env={
                "SERVER_ADDR": "127.0.0.1:1",
                "TOLLWAY_DATA_DIR": str(tmp_path),
                "GATEWAY_REDIS_URL": REDIS,
            },
        )
    assert out.returncode == 1
    assert "cannot listen" in out.stderr and "Traceback" not in out.stderr
