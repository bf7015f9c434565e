"""The standalone control plane receives its gateways' spans (OTLP/HTTP at
``/api/otel/v1/traces``), each project's under its own ingest token, with no exporter
configuration on the gateway; bad batches are refused with a 4xx and store nothing.

Real processes: ``tollway control-plane``, a gateway with ``LW_GATEWAY_BASE_URL`` (vk-auth,
telemetry, the OpenAI adapter), the simulator, the openai SDK, the CLI.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from control_plane_helpers import (
    SECRETS_ENV,
    ControlPlaneProcess,
    free_port,
    start_control_plane,
    stop,
    tollway,
    tollway_json,
)
from test_control_plane_traces import body, span

from tollway.testing import Simulator, start_simulator

pytestmark = pytest.mark.skipif(
    not all(
        importlib.util.find_spec(m)
        for m in ("tollway_vk_auth", "tollway_telemetry", "tollway_provider_openai", "openai")
    ),
    reason="needs tollway-vk-auth, tollway-telemetry, tollway-provider-openai, openai",
)


class Cluster:
    def __init__(self, cp: ControlPlaneProcess, gateway_url: str, sim: Simulator) -> None:
        self.cp = cp
        self.gateway_url = gateway_url
        self.sim = sim

    def cli(self, *args: str) -> Any:
        return tollway_json(self.cp.data_dir, *args)

    def text(self, *args: str) -> str:
        return tollway(self.cp.data_dir, *args).stdout.strip()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("receiver")
    sim = start_simulator()
    cp = start_control_plane(tmp / "cp")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LW_", "TOLLWAY_", "OTEL_", "GATEWAY_"))
    }
    env.update(SECRETS_ENV)
    env.update(
        {
            "LW_GATEWAY_BASE_URL": cp.url,
            "TOLLWAY_DATA_DIR": str(tmp / "gw"),
            "TOLLWAY_PLUGINS": "tollway-vk-auth,tollway-telemetry,tollway-provider-openai",
            "ENVIRONMENT": "local",
            "SERVER_ADDR": f"127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            # Give up on a batch after ~1 s when the control plane is down (the last test).
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1",
        }
    )
    log = tmp / "gateway.log"
    with log.open("wb") as fh:
        gw = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert gw.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/startupz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert f"endpoint={cp.url}/api/otel/v1/traces" in log.read_text()
        yield Cluster(cp, url, sim)
    finally:
        stop(gw)
        stop(cp.proc)
        stop(sim.proc)


def _call(cluster: Cluster, secret: str) -> str:
    import openai

    client = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    return raw.headers["x-langwatch-request-id"]


def _stored(cluster: Cluster, request_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        proc = tollway(cluster.cp.data_dir, "requests", "get", request_id, "--json", check=False)
        if proc.returncode == 0:
            import orjson

            record: dict[str, Any] = orjson.loads(proc.stdout)
            return record
        assert time.monotonic() < deadline, f"{request_id} never arrived: {cluster.cp.logs()}"
        time.sleep(0.3)


def test_each_project_files_its_own_spans(cluster: Cluster) -> None:
    cluster.cli(
        "model-providers",
        "create",
        "--type",
        "openai",
        "--name",
        "sim",
        "--api-key",
        "sk-sim",
        "--base-url",
        f"{cluster.sim.url}/v1",
    )
    a = cluster.cli("scopes", "create", "--type", "project", "--name", "alpha")
    b = cluster.cli("scopes", "create", "--type", "project", "--name", "beta")
    key_a = cluster.cli("virtual-keys", "create", "--name", "a", "--scope", f"project:{a['id']}")
    key_b = cluster.cli("virtual-keys", "create", "--name", "b", "--scope", f"project:{b['id']}")
    key_org = cluster.cli("virtual-keys", "create", "--name", "org")

    # The bundles carry each project's token (what the gateway sends as X-Auth-Token).
    token_a = cluster.text("scopes", "ingest-token", f"project:{a['id']}")
    assert token_a.startswith("lw_it_")
    assert token_a != cluster.text("scopes", "ingest-token", f"project:{b['id']}")

    rid_a, rid_b, rid_org = (_call(cluster, k["secret"]) for k in (key_a, key_b, key_org))
    assert _stored(cluster, rid_a)["project_id"] == a["id"]
    assert _stored(cluster, rid_b)["project_id"] == b["id"]
    governance = cluster.cli("virtual-keys", "get", key_org["id"])["trace_project_id"]
    assert _stored(cluster, rid_org)["project_id"] == governance
    projects = {p["id"]: p["name"] for p in cluster.cli("scopes", "list")["projects"]}
    assert projects[governance] == "internal_governance"
    assert cluster.cli("virtual-keys", "get", key_a["id"])["trace_project_id"] == a["id"]
    listed = cluster.cli("requests", "list", "--project", a["id"])
    assert [r["request_id"] for r in listed] == [rid_a]


def test_bad_batches_are_refused_and_store_nothing(cluster: Cluster) -> None:
    a = cluster.cli("scopes", "create", "--type", "project", "--name", "gamma")
    c = cluster.cli("scopes", "create", "--type", "project", "--name", "delta")
    token_c = cluster.text("scopes", "ingest-token", f"project:{c['id']}")
    url = f"{cluster.cp.url}/api/otel/v1/traces"
    proto = {"content-type": "application/x-protobuf"}

    def post(payload: bytes, **headers: str) -> httpx.Response:
        return httpx.post(url, content=payload, headers={**proto, **headers}, timeout=10)

    # Project C's token cannot write spans claiming project A.
    intruder = body(span(9001, **{"langwatch.project_id": a["id"]}))
    response = post(intruder, **{"x-auth-token": token_c})
    assert response.status_code == 403 and a["id"] in response.text
    assert post(intruder).status_code == 401
    assert post(intruder, **{"x-auth-token": "lw_it_forged"}).status_code == 401
    assert post(b"\x0a\xff\xff", **{"x-auth-token": token_c}).status_code == 400
    no_id = body(span(9002, **{"langwatch.gateway_request_id": ""}))
    assert post(no_id, **{"x-auth-token": token_c}).status_code == 400
    big = b"\0" * (4 * 1024 * 1024 + 1)
    assert post(big, **{"x-auth-token": token_c}).status_code == 413
    assert httpx.post(url, content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    for n in (9001, 9002):
        proc = tollway(cluster.cp.data_dir, "requests", "get", f"grq_{n}", check=False)
        assert proc.returncode == 1

    # Its own spans are accepted (filed under C), and a rotated token is refused at once.
    assert post(body(span(9003)), **{"x-auth-token": token_c}).status_code == 200
    assert _stored(cluster, "grq_9003")["project_id"] == c["id"]
    new_c = cluster.text("scopes", "rotate-ingest-token", f"project:{c['id']}")
    assert new_c != token_c
    assert post(body(span(9004)), **{"x-auth-token": token_c}).status_code == 401
    assert post(body(span(9004)), **{"x-auth-token": new_c}).status_code == 200
    assert "otel_ingest_refused reason=wrong_project" in cluster.cp.logs()


def _metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    want = tuple(sorted(labels.items()))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and tuple(sorted(sample.labels.items())) == want:
                return float(sample.value)
    return 0.0


def test_receiver_counts_what_it_refuses_and_stores(cluster: Cluster) -> None:
    """Each refusal counted by reason, each span by what became of it, on the control plane's
    /metrics."""
    p = cluster.cli("scopes", "create", "--type", "project", "--name", "counted")
    token = cluster.text("scopes", "ingest-token", f"project:{p['id']}")
    url = f"{cluster.cp.url}/api/otel/v1/traces"

    def counts() -> dict[tuple[str, str], float]:
        text = httpx.get(f"{cluster.cp.url}/metrics", timeout=5).text
        return {
            (name, outcome): _metric(text, f"control_plane_otel_{name}_total", outcome=outcome)
            for name, outcome in (
                ("batches", "accepted"),
                ("batches", "invalid_token"),
                ("batches", "unsupported_media_type"),
                ("batches", "wrong_project"),
                ("spans", "stored"),
                ("spans", "duplicate"),
                ("spans", "refused"),
            )
        }

    before = counts()
    proto = {"content-type": "application/x-protobuf"}
    assert httpx.post(url, content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.post(url, content=body(span(9101)), headers=proto).status_code == 401
    claims = body(span(9102), span(9103, **{"langwatch.project_id": "proj_elsewhere"}))
    assert (
        httpx.post(url, content=claims, headers={**proto, "x-auth-token": token}).status_code == 403
    )
    ok = body(span(9104), span(9105))
    for _ in range(2):  # the second time: an exporter retry, both spans already stored
        assert (
            httpx.post(url, content=ok, headers={**proto, "x-auth-token": token}).status_code == 200
        )
    after = counts()
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        ("batches", "accepted"): 2,
        ("batches", "invalid_token"): 1,
        ("batches", "unsupported_media_type"): 1,
        ("batches", "wrong_project"): 1,
        ("spans", "stored"): 2,
        ("spans", "duplicate"): 2,
        ("spans", "refused"): 2,
    }


def test_control_plane_down_drops_spans_not_requests(cluster: Cluster) -> None:
    """Last in the module: it stops the control plane. Clients keep getting 200s (the gateway
    serves the key from its warm cache) and the spans it cannot deliver are counted."""
    key = cluster.cli("virtual-keys", "create", "--name", "outage")
    _stored(cluster, _call(cluster, key["secret"]))  # exporter connected
    # The key's creation reaches the gateway's change feed after that first call and evicts the
    # entry it cached; warm it again once the feed has delivered the event.
    time.sleep(3)
    _stored(cluster, _call(cluster, key["secret"]))  # warm: key cached

    def dropped() -> float:
        text = httpx.get(f"{cluster.gateway_url}/metrics", timeout=5).text
        return _metric(text, "gateway_otel_spans_dropped_total", reason="export_failed")

    before = dropped()
    stop(cluster.cp.proc)
    for _ in range(4):
        assert _call(cluster, key["secret"]).startswith("grq_")  # a 200, or openai raises
    deadline = time.monotonic() + 40  # the exporter retries with back-off first
    while dropped() <= before:
        assert time.monotonic() < deadline, "no dropped span was counted"
        time.sleep(0.2)
