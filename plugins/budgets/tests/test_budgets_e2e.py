"""End to end on one gateway with its embedded control plane (no Redis: in-process counters),
through the official SDKs: the migration guide's "Hard cap on engineering spend" from the CLI,
warnings, ``warn`` budgets, a restart that must not forget, budget changes reaching the
gateway, per-end-user budgets on a static key, and streams cut by the client.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from budgets_support import (
    PRICES,
    Proc,
    Simulator,
    cli,
    cost_of,
    ledger_rows,
    setup_key,
    start_gateway,
    start_simulator,
    stop,
    wait_for,
)

from tollway.keys import mint_key

pytest.importorskip("tollway_control_plane", reason="the embedded control plane is needed")

STATIC_SECRET = mint_key("test")
STATIC_ID = f"vk_static_{uuid.uuid4().hex[:8]}"


class Env:
    """The module's processes: simulator, data dir (store + outbox), one gateway."""

    def __init__(self, tmp: Path, sim: Simulator) -> None:
        self.tmp = tmp
        self.sim = sim
        self.data = tmp / "data"
        self.gw: Proc | None = None
        self.config = f"""
[[providers]]
name = "static-openai"
type = "openai"
base_url = "{sim.url}/v1"
api_key = "sk-upstream"
config = {{ prices = {{ "gpt-4o" = {{ input_per_mtok = 20, output_per_mtok = 100 }} }} }}

[[providers]]
name = "static-anthropic"
type = "anthropic"
base_url = "{sim.url}"
api_key = "sk-ant-upstream"
config = {{ prices = {{ "claude-*" = {{ input_per_mtok = 10, output_per_mtok = 50 }} }} }}

[[plugin.static-keys.keys]]
name = "static"
id = "{STATIC_ID}"
secret = "{STATIC_SECRET}"
project_id = "proj_static"
extras = {{ budgets = [
    {{ id = "each-user", scope = "end_user:*", window = "day", limit_usd = 0.005 }},
] }}
"""

    def start(self) -> Proc:
        self.gw = start_gateway(self.tmp / "gw", self.data, config=self.config)
        return self.gw

    @property
    def url(self) -> str:
        assert self.gw is not None
        return self.gw.url

    def openai(self, secret: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=secret, max_retries=0, timeout=20)

    def anthropic(self, secret: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=secret, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    sim = start_simulator()
    tmp = tmp_path_factory.mktemp("budgets-e2e")
    e = Env(tmp, sim)
    # The CLI creates the store (and the provider, key, budget) before the gateway starts.
    e.key, e.secret = setup_key(e.data, sim.url)
    e.start()
    try:
        yield e
    finally:
        if e.gw is not None:
            stop(e.gw.proc)
        stop(sim.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def call(client: openai.OpenAI, words: int = 6) -> tuple[int, dict[str, str], Any]:
    """One chat call: (status, headers, parsed body or the error)."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": " ".join(["budget"] * words)}],
            max_tokens=20,
        )
    except openai.APIStatusError as exc:
        return exc.status_code, dict(exc.response.headers), exc
    return raw.status_code, dict(raw.headers), raw.parse()


def metric(url: str, name: str, labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_hard_cap_on_engineering_spend(env: Env) -> None:
    """The migration guide's policy, from the CLI: calls succeed until the project's monthly cap,
    then 402 naming project:month; a warning from 80 %; spend shown by the CLI from the ledger;
    a restarted gateway remembers; a change of the budget reaches the gateway."""
    budget = cli(
        env.data,
        "gateway-budgets", "create", "--scope", "project", "--window", "month", "--limit", "0.01",
    )  # fmt: skip
    limit = budget["limit_micro_usd"]
    assert limit == 10_000
    client = env.openai(env.secret)
    spent, costs, refused = 0, [], None
    for _ in range(30):
        status, headers, result = call(client)
        if status == 402:
            refused = (headers, result)
            break
        assert status == 200, result
        pct = spent * 100 // limit
        warning = headers.get("x-langwatch-budget-warning")
        # The warning reflects the spend before this call; from 80 % on it names the scope.
        assert warning == (f"project:{pct}" if pct >= 80 else None), (spent, warning)
        cost = cost_of(result.usage.prompt_tokens, result.usage.completion_tokens)
        costs.append(cost)
        spent += cost
        assert spent - cost < limit  # admitted only while under the cap
    assert refused is not None, "the budget never blocked"
    headers, error = refused
    assert spent >= limit and len(costs) >= 3
    assert error.body["type"] == "budget_exceeded"
    assert "project:month" in error.message and budget["id"] in error.message
    assert headers["x-should-retry"] == "false"
    assert headers["x-langwatch-budget-warning"] == f"project:{spent * 100 // limit}"
    # The Anthropic SDK is refused the same way (through translation to the same provider).
    with pytest.raises(anthropic.APIStatusError) as info:
        env.anthropic(env.secret).messages.create(
            model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 402 and "project:month" in info.value.message
    assert metric(env.url, "gateway_budget_blocks_total", 'scope="project"') >= 2
    # The ledger holds every call once, at its exact cost; the CLI sums it per window.
    wait_for(lambda: len(ledger_rows(env.data, env.key["id"])) == len(costs), 5, "the ledger")
    rows = ledger_rows(env.data, env.key["id"])
    assert sorted(r["cost_usd"] for r in rows) == sorted(costs)
    assert all(r["project_id"] == "proj_default" and r["status"] == 200 for r in rows)
    (listed,) = [b for b in cli(env.data, "gateway-budgets", "list") if b["id"] == budget["id"]]
    assert listed["spend_micro_usd"] == spent and listed["spend_accounting"] is True

    # A restarted gateway does not forget: the spend comes back from the ledger.
    assert env.gw is not None
    stop(env.gw.proc)
    env.start()
    client = env.openai(env.secret)
    status, _, error = call(client)
    assert status == 402 and "project:month" in error.message

    # Raising the limit reaches the gateway through the change feed within seconds.
    cli(env.data, "gateway-budgets", "update", budget["id"], "--limit", "0.05")
    wait_for(lambda: call(client)[0] == 200, 5, "the raised limit")
    # A warn budget never blocks, even far over its limit.
    cli(env.data, "gateway-budgets", "update", budget["id"], "--limit", "0.000001")
    cli(env.data, "gateway-budgets", "update", budget["id"], "--on-breach", "warn")
    wait_for(lambda: call(client)[0] == 200, 5, "the warn budget")
    for _ in range(3):
        status, headers, _ = call(client)
        assert status == 200
        assert int(headers["x-langwatch-budget-warning"].split(":")[1]) > 100
    cli(env.data, "gateway-budgets", "delete", budget["id"])


def test_per_end_user_budget_on_a_static_key(env: Env) -> None:
    """``end_user:*`` caps each end user separately (header or body ``user``); a static key
    carries its budgets in ``extras``."""
    client = env.openai(STATIC_SECRET)
    alice = {"X-LangWatch-End-User-Id": f"alice-{uuid.uuid4().hex[:6]}"}
    statuses = []
    for _ in range(6):
        try:
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hello there"}],
                max_tokens=20,
                extra_headers=alice,
            )
            statuses.append(200)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
            assert "end_user:day" in exc.message and alice["X-LangWatch-End-User-Id"] in exc.message
    assert 200 in statuses and statuses[-1] == 402
    assert statuses == sorted(statuses)  # blocked from the cap on, never before
    # Another end user (named by the body's `user`) has a budget of their own.
    bob = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=20,
        user=f"bob-{uuid.uuid4().hex[:6]}",
    )
    assert bob.status_code == 200 and "x-langwatch-budget-warning" not in bob.headers
    # A request without an end user is not counted against end-user budgets.
    assert client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    ).choices
    wait_for(
        lambda: (
            len([r for r in ledger_rows(env.data, STATIC_ID) if r["end_user_id"]])
            >= statuses.count(200) + 1
        ),
        5,
        "the static key's ledger rows",
    )
    rows = [r for r in ledger_rows(env.data, STATIC_ID) if r["end_user_id"]]
    assert {r["project_id"] for r in rows} == {"proj_static"}


def test_client_disconnect_mid_stream_is_billed(env: Env) -> None:
    """A stream the client cuts is billed for what was produced: the usage the provider had
    reported (Anthropic's message_start), or an estimate (OpenAI reports usage only at the
    end)."""
    slow = {"x-simulator-event-delay-ms": "40", "x-simulator-output-words": "60"}
    # Anthropic, native: message_start carries the input tokens.
    client = env.anthropic(STATIC_SECRET)
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "tell me a long story please"}],
        extra_headers=slow,
    ) as stream:
        rid = stream.response.headers["x-langwatch-request-id"]
        for seen, event in enumerate(stream, 1):
            if event.type == "message_start":
                input_tokens = event.message.usage.input_tokens
            if seen == 5:
                break
    # OpenAI chat: no usage before the end — the gateway estimates it.
    oai = env.openai(STATIC_SECRET)
    chunks = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "tell me a long story please"}],
        max_tokens=200,
        stream=True,
        extra_headers=slow,
    )
    rid2 = chunks.response.headers["x-langwatch-request-id"]
    for i, _ in enumerate(chunks):
        if i == 4:
            break
    chunks.close()

    def rows() -> dict[str, dict[str, Any]]:
        return {r["request_id"]: r for r in ledger_rows(env.data, STATIC_ID)}

    wait_for(lambda: rid in rows() and rid2 in rows(), 10, "the cut streams' ledger rows")
    cut = rows()[rid]
    assert cut["input_tokens"] == input_tokens and cut["output_tokens"] >= 1
    assert cut["status"] == 200 and cut["cost_usd"] == round(
        cut["input_tokens"] * 10 + cut["output_tokens"] * 50
    )
    estimated = rows()[rid2]
    assert estimated["usage_estimated"] == 1
    assert estimated["input_tokens"] > 0 and 1 <= estimated["output_tokens"] < 60
    assert estimated["cost_usd"] == cost_of(estimated["input_tokens"], estimated["output_tokens"])
    assert PRICES  # (the CLI key's prices are the static OpenAI provider's too)


def test_admission_order() -> None:
    """Where budgets sit in ``admit``: after rate limits (``tryfirst``), policy rules and the
    cache mode (plain), which refuse or rewrite first. Note pluggy's ``trylast`` bucket runs in
    *registration* order (each new ``trylast`` impl is inserted at the front of the list that is
    called back to front), so ``tollway-budgets``, registered before ``tollway-model-access``
    (entry-point names sort so), runs *before* model access: budgets resolve the key's
    ``model_aliases`` themselves to price the estimate (see docs/plugins/budgets.md)."""
    from tollway.config import PluginSelection
    from tollway.plugins import Hooks, build_plugin_manager

    pm, _ = build_plugin_manager(PluginSelection())
    hooks = Hooks(pm)
    order = [impl.plugin for impl in hooks._admit]
    budgets = order.index("tollway-budgets")
    for before in ("tollway-rate-limits", "tollway-policy-rules", "tollway-cache-passthrough"):
        if before in order:
            assert order.index(before) < budgets, order
    if "tollway-rate-limits" in order:
        assert order[0] == "tollway-rate-limits"
    account = [impl.plugin for impl in hooks._account]
    assert account[0] == "tollway-budgets", account  # spooled before any other await


def test_unreadable_budgets_fail_closed(env: Env, tmp_path: Path) -> None:
    """A key whose budgets cannot be read is refused (503), not let through uncapped."""
    secret = mint_key("test")
    gw = start_gateway(
        tmp_path / "gw",
        tmp_path / "data",
        config=env.config.replace(STATIC_SECRET, mint_key("test"))
        + f"""
[[plugin.static-keys.keys]]
name = "broken"
secret = "{secret}"
extras = {{ budgets = [ {{ scope = "project", window = "fortnight", limit_usd = 1 }} ] }}
""",
    )
    try:
        response = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "budget_config_invalid" and "window" in error["message"]
    finally:
        stop(gw.proc)
