"""Export never slows a request: a collector that is down or slow changes nothing for clients,
and the gateway's log stays quiet during the start-up grace."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from telemetry_harness import (
    GatewayProc,
    OTLPReceiver,
    start_gateway,
    stop_together,
    value,
    wait_for,
)

from tollway.testing import free_port, start_simulator, stop, wait_ready

MESSAGES = [{"role": "user", "content": "hello"}]
REQUESTS = 20


class Gateways:
    def __init__(self, down: GatewayProc, slow: GatewayProc, receiver: OTLPReceiver) -> None:
        self.down = down
        self.slow = slow
        self.slow_receiver = receiver


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    """Two gateways started side by side: one exporting to a closed port, one to a collector
    that takes 2 s per request."""
    sim = start_simulator()
    receiver = OTLPReceiver(delay=2.0)
    port = free_port()  # nothing listens there: connection refused
    down = start_gateway(
        tmp_path_factory.mktemp("otel-down"),
        sim.url,
        {
            "GATEWAY_OTEL_DEFAULT_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1",  # give up on a batch after ~1 s
        },
        wait=False,
    )
    slow = start_gateway(
        tmp_path_factory.mktemp("otel-slow"),
        sim.url,
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": receiver.url},
        wait=False,
    )
    try:
        wait_ready(down)
        wait_ready(slow)
        yield Gateways(down, slow, receiver)
    finally:
        t0 = time.monotonic()
        stop_together(down.proc, slow.proc)
        stopped_in = time.monotonic() - t0
        stop(sim.proc)
        receiver.close()
    # shutdown_timeout_seconds = 1 (+ the core's drain): exit does not hang on export retries.
    assert stopped_in < 8


def run_requests(gw: GatewayProc, n: int = REQUESTS) -> float:
    """``n`` sequential calls (alternating plain and streaming); total seconds."""
    client = gw.openai()
    t0 = time.perf_counter()
    for i in range(n):
        if i % 2:
            for _ in client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            ):
                pass
        else:
            result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert result.choices[0].message.content
    return time.perf_counter() - t0


def test_collector_down_changes_nothing_for_clients(gateways: Gateways) -> None:
    gw = gateways.down
    run_requests(gw, 4)  # warm-up: connections, first-call imports
    assert run_requests(gw) < 3.0

    def failed_exports() -> float:
        return value(gw.metrics_text(), "gateway_otel_spans_dropped_total", reason="export_failed")

    assert wait_for(failed_exports, 5, "a failed export to be counted") > 0
    log = gw.logs()
    # Connection errors in the first 30 s are expected (a collector still starting): silent.
    assert "otel_export_failed" not in log
    assert "Failed to export" not in log
    assert "Traceback" not in log


def test_slow_collector_changes_nothing_for_clients(gateways: Gateways) -> None:
    gw = gateways.slow
    run_requests(gw, 4)
    assert run_requests(gw) < 3.0
    assert wait_for(gateways.slow_receiver.all_spans, 5, "the slow collector to receive spans")
    log = gw.logs()
    assert "otel_export_failed" not in log
    assert "Traceback" not in log
