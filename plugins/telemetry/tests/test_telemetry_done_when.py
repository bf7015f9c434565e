"""Issue 12's "done when", with the budgets plugin pricing the call: one streaming call with a
``traceparent`` through the openai SDK → its span (usage and cost) at a loopback OTLP receiver
under the caller's trace id, the request counted on ``/metrics``, and the JSON log lines of the
request carrying the same ``grq_`` id."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from telemetry_harness import OTLPReceiver, wait_for

from tollway.testing import StaticKey, default_providers, start_gateway, start_simulator, stop

pytest.importorskip("tollway_budgets")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_streaming_call_is_traced_priced_counted_and_logged(tmp_path: Path) -> None:
    sim = start_simulator()
    receiver = OTLPReceiver()
    gw = start_gateway(
        tmp_path,
        "[plugin.telemetry]\nshutdown_timeout_seconds = 1\n",
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"},
        providers=default_providers(sim.url),
        keys=[StaticKey(project_id="proj-telemetry")],
        plugins=[
            "tollway_static_keys",
            "tollway_provider_openai",
            "tollway_provider_anthropic",
            "tollway_telemetry",
            "tollway_budgets",
        ],
    )
    try:
        client = gw.openai()
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
        ) as response:
            rid = response.headers["x-langwatch-request-id"]
            assert response.headers["x-langwatch-trace-id"] == TRACE_ID
            chunks = list(response.parse())
        usage = next(c.usage for c in chunks if c.usage is not None)

        span = receiver.span_for(rid)
        attrs = span["attributes"]
        assert span["trace_id"] == TRACE_ID and span["parent_span_id"] == PARENT
        assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
        assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
        assert attrs["langwatch.cost_usd"] > 0
        assert attrs["langwatch.stream.chunk_count"] >= len(chunks)

        metrics = httpx.get(f"{gw.url}/metrics", timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        total = sum(
            s.value
            for s in families["gateway_http_requests"].samples
            if s.name.endswith("_total") and s.labels.get("status") == "200"
        )
        assert total >= 1

        def lines() -> list[dict]:
            return [r for r in gw.log_records() if r.get("request_id") == rid]

        records = wait_for(lambda: [r for r in lines() if "request_completed" in r["msg"]], 5)
        assert records and all(r["request_id"] == rid for r in lines())
    finally:
        stop(gw.proc)
        stop(sim.proc)
        receiver.close()
