"""Process-level behaviour: demo mode, plugins, configuration, drain, disconnects."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from conftest import Gateway, Simulator, free_port, provider_config, stop

HELLO = [{"role": "user", "content": "hi"}]


def tollway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tollway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_demo_mode_answers_the_sdk(tmp_path: Path) -> None:
    """README command 1: `tollway serve --demo`, then the SDK with the printed exports."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway", "serve", "--demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TOLLWAY_DATA_DIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        exports: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(exports) < 4:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.match(r"\s*export (\w+)=(\S+)", line)
            if m:
                exports[m.group(1)] = m.group(2)
        assert set(exports) == {
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_API_KEY",
        }, "".join(lines)
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        client = openai.OpenAI(
            base_url=exports["OPENAI_BASE_URL"], api_key=exports["OPENAI_API_KEY"], max_retries=0
        )
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert reply.choices[0].message.content
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="gpt-4o-mini", messages=HELLO, stream=True
            )
            if c.choices
        )
        assert streamed == reply.choices[0].message.content
        import anthropic

        msg = anthropic.Anthropic(
            base_url=exports["ANTHROPIC_BASE_URL"],
            api_key=exports["ANTHROPIC_API_KEY"],
            max_retries=0,
        )
        assert (
            msg.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=HELLO)
            .content[0]
            .text
        )
        # The demo key survives a restart (kept in the data dir).
        assert (tmp_path / "demo-key").read_text().strip() == exports["OPENAI_API_KEY"]
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_plugins_command_lists_installed(tmp_path: Path) -> None:
    out = tollway("plugins", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in orjson.loads(out.stdout)}
    assert {
        "tollway-provider-openai",
        "tollway-provider-anthropic",
        "tollway-static-keys",
        "tollway-simulator",
    } <= set(plugins)
    assert "register_providers" in plugins["tollway-provider-openai"]["hooks"]
    assert "authenticate" in plugins["tollway-static-keys"]["hooks"]
    human = tollway("plugins")
    assert "tollway-provider-anthropic" in human.stdout and "VERSION" in human.stdout


def test_disabled_and_allow_listed_plugins(tmp_path: Path) -> None:
    out = tollway("plugins", "--json", env={"TOLLWAY_DISABLE_PLUGINS": "tollway-simulator"})
    assert "tollway-simulator" not in {p["name"] for p in orjson.loads(out.stdout)}
    out = tollway("plugins", env={"TOLLWAY_PLUGINS": "tollway-static-keys,not-installed"})
    assert out.returncode != 0 and "not-installed" in out.stderr


def test_plugin_that_fails_to_import_stops_start_up(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tollway]\nbroken-plugin = broken_plugin_mod\n")
    (site / "broken_plugin_mod.py").write_text("raise ImportError('needs libfoo')\n")
    env = {"PYTHONPATH": str(site), "TOLLWAY_DATA_DIR": str(tmp_path / "d")}
    out = tollway("serve", "--port", str(free_port()), env=env)
    assert out.returncode != 0
    assert "broken-plugin" in out.stderr and "needs libfoo" in out.stderr
    assert "Traceback" not in out.stderr
    ok = tollway("plugins", env={**env, "TOLLWAY_OPTIONAL_PLUGINS": "broken-plugin"})
    assert ok.returncode == 0 and "broken-plugin" not in ok.stdout


def test_unknown_config_key_is_refused_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[server]\naddr = ":1"\nmax_body = 5\n[[providers]]\nname="a"\ntype="openai"\napikey="x"\n'
    )
    out = tollway("config", "show", "--config", str(cfg))
    assert out.returncode != 0
    assert "server" in out.stderr and "max_body" in out.stderr
    assert "providers[0]" in out.stderr or "providers.0" in out.stderr


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[providers]]\nname="a"\ntype="openai"\napi_key="sk-verysecretvalue"\n')
    out = tollway("config", "show", "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    assert "sk-verysecretvalue" not in out.stdout
    data = orjson.loads(out.stdout)
    assert data["providers"][0]["name"] == "a"


def test_private_base_url_refused_outside_local(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[providers]]\nname="a"\ntype="custom"\nbase_url="http://10.0.0.5/v1"\n')
    out = tollway("config", "show", "--config", str(cfg), env={"ENVIRONMENT": "production"})
    assert out.returncode != 0 and "SSRF" in out.stderr


def test_workers_without_redis_refused(tmp_path: Path) -> None:
    out = tollway(
        "serve", "--workers", "2", env={"GATEWAY_REDIS_URL": "", "TOLLWAY_DATA_DIR": str(tmp_path)}
    )
    assert out.returncode != 0 and "GATEWAY_REDIS_URL" in out.stderr


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["plugins", "--help"],
        ["config", "show", "--help"],
        ["simulate", "--help"],
    ):
        out = tollway(*args)
        assert out.returncode == 0 and "Usage" in out.stdout, args


def test_sigterm_lets_in_flight_stream_finish(sim: Simulator, gateway_factory) -> None:
    gw: Gateway = gateway_factory(provider_config(sim.url))
    got: list[bytes] = []
    done = threading.Event()

    def consume() -> None:
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO, "stream": True},
            headers={"authorization": f"Bearer {gw.key}", "x-simulator-event-delay-ms": "150"},
            timeout=20,
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
    t.join(20)
    assert done.is_set()
    assert b"data: [DONE]" in b"".join(got)
    assert gw.proc.wait(timeout=20) == 0
    print("\nDRILL sigterm_mid_stream: the in-flight stream finished ([DONE]), exit 0")
    assert "draining" in gw.logs()


def test_client_disconnect_closes_upstream(gateway: Gateway, sim: Simulator) -> None:
    before = sim.stats()
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
        headers={"authorization": f"Bearer {gateway.key}", "x-simulator-event-delay-ms": "200"},
        timeout=20,
    ) as r:
        next(r.iter_bytes())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = sim.stats()
        if stats["streams_client_disconnected"] > before["streams_client_disconnected"]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"upstream stream still open after the client left: {sim.stats()}")
    assert stats["active_streams"] == 0
    # The gateway keeps serving.
    assert gateway.openai().chat.completions.create(model="gpt-4o", messages=HELLO).choices


def test_readyz_is_503_while_draining(sim: Simulator, gateway_factory) -> None:
    gw: Gateway = gateway_factory(provider_config(sim.url), {"SERVER_DRAIN_DELAY_SECONDS": "2"})
    with httpx.Client(base_url=gw.url) as client:
        assert client.get("/readyz").status_code == 200
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "draining"
        r = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO},
            headers={"authorization": f"Bearer {gw.key}"},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
        assert r.headers["retry-after"] == "1"
    assert gw.proc.wait(timeout=20) == 0


def test_failing_plugin_start_names_it(tmp_path: Path) -> None:
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
        "--port",
        str(free_port()),
        env={"PYTHONPATH": str(site), "TOLLWAY_DATA_DIR": str(tmp_path / "d")},
    )
    assert out.returncode != 0
    assert "crashy" in out.stderr and "licence server" in out.stderr
    assert "Traceback" not in out.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = tollway(
            "serve",
            "--port",
            str(port),
            env={"SERVER_ADDR": "127.0.0.1:1", "TOLLWAY_DATA_DIR": str(tmp_path)},
        )
    assert out.returncode != 0
    assert "cannot listen" in out.stderr and "Traceback" not in out.stderr
    # The port is bound before the plugins start: nothing announced a gateway that never served.
    assert "listening on" not in out.stderr and "gateway_started" not in out.stderr


def test_port_0_announces_the_port_it_got_and_it_answers_at_once(tmp_path: Path) -> None:
    """``--port 0``: the kernel picks the port; the banner names that port, and it answers as
    soon as the banner is printed (the port listens before anything is announced)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SERVER_ADDR": "127.0.0.1:1", "TOLLWAY_DATA_DIR": str(tmp_path)},
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        found = None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert found is not None, "".join(seen)
        port = int(found.group(1))
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        stop(proc)
