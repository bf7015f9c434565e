"""The request explorer, embedded default (issue 20's "Done when"): a gateway serving its own
control plane keeps its request spans in its store, in-process; one streaming OpenAI SDK call,
then ``tollway requests get <X-LangWatch-Request-Id>`` (a subprocess) shows what happened.

Then one call of each kind — a fallback, a stream cut mid-way, a guardrail block, a budget
block, an organization-scoped key — each looked up the same way, and ``tollway requests tail``
showing a new request.

Real processes throughout: two simulators (one answering 503 to everything), ``tollway
serve`` with vk-auth, telemetry, guardrails, pii-redact and budgets, the openai SDK, the CLI.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from control_plane_helpers import embedded_serve, stop, tollway, tollway_json

from tollway.testing import Simulator, start_simulator

pytestmark = pytest.mark.skipif(
    not all(
        importlib.util.find_spec(m)
        for m in (
            "tollway_vk_auth",
            "tollway_telemetry",
            "tollway_simulator",
            "tollway_provider_openai",
            "tollway_guardrails",
            "tollway_pii_redact",
            "tollway_budgets",
            "openai",
        )
    ),
    reason="needs tollway-vk-auth, tollway-telemetry, tollway-provider-openai, tollway-simulator, "
    "tollway-guardrails, tollway-pii-redact, tollway-budgets",
)

PLUGINS = (
    "tollway-control-plane,tollway-vk-auth,tollway-telemetry,tollway-provider-openai,"
    "tollway-guardrails,tollway-pii-redact,tollway-budgets"
)


class Embedded:
    def __init__(
        self, url: str, data_dir: Path, env: dict[str, str], sim: Simulator, down: Simulator
    ) -> None:
        self.url = url
        self.data_dir = data_dir
        self.env = env
        self.sim = sim
        #: A simulator answering 503 to every call (the first provider of a fallback chain).
        self.down = down

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return tollway(self.data_dir, *args, env=self.env, check=check)

    def cli_json(self, *args: str) -> Any:
        return tollway_json(self.data_dir, *args, env=self.env)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    tmp = tmp_path_factory.mktemp("explorer")
    sim = start_simulator()
    down = start_simulator("--fault", "503")
    try:
        with embedded_serve(tmp, PLUGINS) as (url, env, log):
            started = [ln for ln in log.read_text().splitlines() if "telemetry_started" in ln]
            assert started and "in-process:control-plane" in started[0], log.read_text()
            yield Embedded(url, tmp / "data", env, sim, down)
    finally:
        stop(sim.proc)
        stop(down.proc)


def _wait_for(gw: Embedded, request_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        proc = gw.cli("requests", "get", request_id, "--json", check=False)
        if proc.returncode == 0:
            record: dict[str, Any] = orjson.loads(proc.stdout)
            return record
        assert "no request" in proc.stderr, proc.stderr
        assert time.monotonic() < deadline, f"{request_id} was never stored: {proc.stderr}"
        time.sleep(0.3)


def test_done_when_streaming_call_is_found_by_its_request_id(gateway: Embedded) -> None:
    import openai

    provider = gateway.cli_json(
        "model-providers",
        "create",
        "--type",
        "openai",
        "--name",
        "sim-openai",
        "--api-key",
        "sk-upstream-secret-do-not-show",
        "--base-url",
        f"{gateway.sim.url}/v1",
    )
    key = gateway.cli_json("virtual-keys", "create", "--name", "explorer")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key["secret"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello explorer"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    request_id = raw.headers["x-langwatch-request-id"]
    assert request_id.startswith("grq_")
    chunks = list(raw.parse())
    usage = next(c.usage for c in chunks if c.usage is not None)

    record = _wait_for(gateway, request_id)
    assert record["request_id"] == request_id
    assert record["trace_id"] == raw.headers["x-langwatch-trace-id"]
    assert record["status_code"] == 200 and record["outcome"] == "ok"
    assert record["error_type"] is None
    assert record["model"] == "gpt-4o-mini" and record["served_model"] == "gpt-4o-mini"
    assert record["provider_type"] == "openai"
    assert record["stream"] is True and record["stream_chunks"] >= 1
    assert record["virtual_key_id"] == key["id"]
    assert record["virtual_key_display_prefix"] == key["display_prefix"]
    assert record["tokens"]["input"] == usage.prompt_tokens
    assert record["tokens"]["output"] == usage.completion_tokens
    assert {"cache_read", "cache_write", "reasoning"} <= set(record["tokens"])
    assert record["upstream_ms"] > 0 and record["gateway_overhead_ms"] >= 0
    assert record["duration_ms"] >= record["upstream_ms"]
    [attempt] = record["attempts"]
    assert attempt["outcome"] == "ok" and attempt["status_code"] == 200
    assert attempt["credential_id"] == provider["id"]
    assert attempt["credential_name"] == "sim-openai"
    assert attempt["provider_type"] == "openai"
    assert "cost_usd" in record and "cache" in record

    # The human view says the same, and no secret appears anywhere.
    text = gateway.cli("requests", "get", request_id).stdout
    for fragment in (request_id, "sim-openai", key["id"], "gpt-4o-mini", "gateway overhead"):
        assert fragment in text, text
    for secret in (key["secret"], "sk-upstream-secret-do-not-show"):
        assert secret not in text
        assert secret not in orjson.dumps(record).decode()

    # list: filters by key, model, status; --json and the table.
    listed = gateway.cli_json("requests", "list", "--key", key["id"], "--since", "1h")
    assert [r["request_id"] for r in listed] == [request_id]
    assert gateway.cli_json("requests", "list", "--model", "gpt-4o", "--since", "1h") == []
    assert gateway.cli_json("requests", "list", "--status", "error") == []
    assert [r["request_id"] for r in gateway.cli_json("requests", "list", "--status", "200")] == [
        request_id
    ]
    assert request_id in gateway.cli("requests", "list", "--limit", "5").stdout


def test_failed_request_is_recorded_with_its_error(gateway: Embedded) -> None:
    import openai

    key = gateway.cli_json("virtual-keys", "create", "--name", "explorer-errors")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key["secret"], max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="no-such-model-anywhere", messages=[{"role": "user", "content": "x"}]
        )
    request_id = info.value.response.headers["x-langwatch-request-id"]
    record = _wait_for(gateway, request_id)
    assert record["outcome"] == "error"
    assert record["status_code"] == info.value.status_code
    assert record["error_type"] == info.value.body["type"]  # type: ignore[index]
    assert record["attempts"] == []
    errors = gateway.cli_json("requests", "list", "--status", "error", "--key", key["id"])
    assert [r["request_id"] for r in errors] == [request_id]


def test_unknown_request_id_is_a_clear_error(gateway: Embedded) -> None:
    proc = gateway.cli("requests", "get", "grq_doesnotexist", check=False)
    assert proc.returncode == 1
    assert "no request 'grq_doesnotexist' is stored" in proc.stderr
    proc = gateway.cli("requests", "list", "--since", "yesterday-ish", check=False)
    assert proc.returncode == 1 and "since:" in proc.stderr


def test_admin_api_serves_the_same_records(gateway: Embedded, tmp_path: Path) -> None:
    """Remote mode: with TOLLWAY_ADMIN_URL/TOKEN the CLI reads through /api/admin/requests."""
    listed = gateway.cli_json("requests", "list", "--limit", "1")
    if not listed:
        pytest.skip("no request stored yet")
    request_id = listed[0]["request_id"]
    # The embedded admin API needs TOLLWAY_ADMIN_TOKEN on the gateway; this one has none, so
    # it answers 401 saying how to turn it on.
    response = httpx.get(f"{gateway.url}/api/admin/requests/{request_id}")
    assert response.status_code == 401
    doc = httpx.get(f"{gateway.url}/api/admin/openapi.json").json()
    assert "/api/admin/requests/{id}" in doc["paths"]
    assert {p["name"] for p in doc["paths"]["/api/admin/requests"]["get"]["parameters"]} == {
        "key",
        "project",
        "model",
        "status",
        "since",
        "limit",
    }


# --- one call of each kind ----------------------------------------------------------------------

_SETUP: dict[str, Any] = {}


def _setup(gw: Embedded) -> dict[str, Any]:
    """The providers and routing policies the tests below share: ``ok`` (the simulator),
    ``down`` (503 to everything), ``fallback`` (down, then ok) and ``ok_only`` (pinned, so
    these keys never meet the failing provider)."""
    if _SETUP:
        return _SETUP
    providers = {p["name"]: p for p in gw.cli_json("model-providers", "list")}
    ok = providers.get("sim-openai") or gw.cli_json(
        "model-providers", "create", "--type", "openai", "--name", "sim-openai",
        "--api-key", "sk-sim", "--base-url", f"{gw.sim.url}/v1",
    )  # fmt: skip
    down = gw.cli_json(
        "model-providers", "create", "--type", "openai", "--name", "sim-down",
        "--api-key", "sk-sim", "--base-url", f"{gw.down.url}/v1", "--priority", "100",
    )  # fmt: skip
    fallback = gw.cli_json(
        "routing-policies",
        "create",
        "--name",
        "fallback",
        "--providers",
        f"{down['id']},{ok['id']}",
    )
    ok_only = gw.cli_json(
        "routing-policies", "create", "--name", "ok-only", "--providers", ok["id"]
    )
    _SETUP.update(ok=ok, down=down, fallback=fallback, ok_only=ok_only)
    return _SETUP


def _key(gw: Embedded, name: str, *extra: str, policy: str = "ok_only") -> dict[str, Any]:
    setup = _setup(gw)
    key: dict[str, Any] = gw.cli_json(
        "virtual-keys", "create", "--name", name, "--routing-policy", setup[policy]["id"], *extra
    )
    return key


def _client(gw: Embedded, secret: str) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)


def test_fallback_shows_each_attempt_and_why_it_failed(gateway: Embedded) -> None:
    setup = _setup(gateway)
    key = _key(gateway, "fallback", policy="fallback")
    raw = _client(gateway, key["secret"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "fall back"}]
    )
    assert raw.http_response.status_code == 200
    record = _wait_for(gateway, raw.headers["x-langwatch-request-id"])
    assert record["outcome"] == "ok" and record["status_code"] == 200
    failed, served = record["attempts"]
    assert failed["credential_id"] == setup["down"]["id"]
    assert failed["credential_name"] == "sim-down"
    assert failed["outcome"] != "ok" and failed["status_code"] == 503
    assert failed["fallback_reason"]
    assert served["credential_id"] == setup["ok"]["id"] and served["outcome"] == "ok"
    assert served["fallback_reason"] is None
    assert record["attributes"]["langwatch.fallback.count"] == 1
    text = gateway.cli("requests", "get", record["request_id"]).stdout
    assert "sim-down" in text and f"reason {failed['fallback_reason']}" in text


def test_stream_cut_midway_shows_where(gateway: Embedded) -> None:
    key = _key(gateway, "cut")
    raw = _client(gateway, key["secret"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "a long answer please"}],
        stream=True,
        extra_headers={"x-simulator-fault": "midstream:2"},
    )
    request_id = raw.headers["x-langwatch-request-id"]
    with pytest.raises(Exception):  # noqa: B017 (the SDK raises on the stream's error event)
        list(raw.parse())
    record = _wait_for(gateway, request_id)
    assert record["stream"] is True and record["outcome"] == "error"
    assert record["error_type"] == "provider_error"
    cut = record["stream_terminated_at_chunk"]
    assert cut is not None and cut == record["stream_chunks"] and cut >= 1
    assert record["attributes"]["langwatch.stream.terminated_at_chunk"] == cut
    assert f"cut at chunk {cut}" in gateway.cli("requests", "get", request_id).stdout


def test_guardrail_block_shows_the_verdict_not_the_prompt(gateway: Embedded) -> None:
    import openai

    config = {
        "guardrails": {"pre": [{"evaluator": "pii", "entities": ["email"], "action": "block"}]}
    }
    key = _key(gateway, "guarded", "--config-json", orjson.dumps(config).decode())
    secret_prompt = "write to jane.doe.explorer@example.com about the merger"
    with pytest.raises(openai.PermissionDeniedError) as info:
        _client(gateway, key["secret"]).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": secret_prompt}]
        )
    record = _wait_for(gateway, info.value.response.headers["x-langwatch-request-id"])
    assert record["status_code"] == 403 and record["error_type"] == "guardrail_blocked"
    assert record["attempts"] == []  # never reached a provider
    [verdict] = record["decisions"]["guardrails"]
    assert verdict["direction"] == "pre" and verdict["verdict"] == "block"
    assert verdict["evaluator"] == "pii" and "personal data" in verdict["reason"]
    assert record["decisions"]["guardrail"]["pre.decision"] == "block"
    assert "jane.doe.explorer" not in orjson.dumps(record).decode()
    text = gateway.cli("requests", "get", record["request_id"]).stdout
    assert "pre pii: block" in text


def test_budget_block_shows_which_budget(gateway: Embedded) -> None:
    import openai

    key = _key(gateway, "budgeted")
    budget = gateway.cli_json(
        "gateway-budgets", "create", "--scope", f"virtual_key:{key['id']}",
        "--window", "day", "--limit", "0.000001", "--name", "tiny",
    )  # fmt: skip
    client = _client(gateway, key["secret"])
    blocked = None
    for _ in range(5):  # the first call may get through (it is priced on settlement)
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "spend"}], max_tokens=500
            )
        except openai.APIStatusError as exc:
            assert exc.status_code == 402, exc
            blocked = exc
            break
        time.sleep(0.5)
    assert blocked is not None, "the budget never blocked"
    record = _wait_for(gateway, blocked.response.headers["x-langwatch-request-id"])
    assert record["status_code"] == 402 and record["error_type"] == "budget_exceeded"
    decision = record["decisions"]["budget"]
    assert decision["decision"] == "block"
    assert decision["scope"] == "virtual_key:day" and decision["id"] == budget["id"]
    assert record["attempts"] == []
    assert record["virtual_key_id"] == key["id"]


def test_organization_key_spans_go_to_internal_governance(gateway: Embedded) -> None:
    key = _key(gateway, "org-wide")  # no --scope: the organization
    raw = _client(gateway, key["secret"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "governed"}]
    )
    record = _wait_for(gateway, raw.headers["x-langwatch-request-id"])
    governance = gateway.cli_json("virtual-keys", "get", key["id"])["trace_project_id"]
    assert record["project_id"] == governance
    projects = {p["id"]: p["name"] for p in gateway.cli_json("scopes", "list")["projects"]}
    assert projects[governance] == "internal_governance"
    listed = gateway.cli_json("requests", "list", "--project", governance, "--key", key["id"])
    assert [r["request_id"] for r in listed] == [record["request_id"]]
    # What the in-process sink did is on the gateway's /metrics.
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    stored = [ln for ln in metrics.splitlines() if ln.startswith("control_plane_otel_spans_total{")]
    assert any('outcome="stored"' in ln and float(ln.split()[-1]) > 0 for ln in stored), stored


def test_tail_shows_a_new_request(gateway: Embedded) -> None:
    import queue
    import threading

    key = _key(gateway, "tailed")
    tail = subprocess.Popen(
        [sys.executable, "-m", "tollway", "requests", "tail", "--json", "--key", key["id"],
         "--interval", "0.2"],
        env={**gateway.env, "TOLLWAY_DATA_DIR": str(gateway.data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert tail.stdout is not None
    threading.Thread(target=lambda: lines.put(tail.stdout.readline()), daemon=True).start()
    client = _client(gateway, key["secret"])
    sent: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            # A request made before tail took its starting time is not new to it: keep making
            # them until the first one shows.
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "tail me"}]
            )
            sent.append(raw.headers["x-langwatch-request-id"])
            try:
                line = lines.get(timeout=1.5)
                break
            except queue.Empty:
                assert tail.poll() is None, tail.stderr.read() if tail.stderr else ""
                assert time.monotonic() < deadline, "tail showed nothing"
    finally:
        stop(tail)
    shown = orjson.loads(line)
    assert shown["request_id"] in sent and shown["virtual_key_id"] == key["id"]
    assert shown["status_code"] == 200
