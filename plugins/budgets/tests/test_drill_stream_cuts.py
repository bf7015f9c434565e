"""Drill: streams across a fallback chain whose first provider cuts streams mid-way, fails before
the first byte, answers 500 or never answers.

One gateway (embedded control plane: its ledger is the store in the data dir), two providers
created with the CLI — a flaky simulator first (``--fault-mix``), a healthy one second. A stream
the first provider cut after bytes reached the client ends with the terminal error frame (no
silent fallback mid-stream: the client already has part of an answer); a failure before the
first byte falls back and the stream completes. Every stream — completed or cut — is billed
exactly once.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from budgets_support import (
    PRICES,
    Proc,
    cli,
    ledger_rows,
    start_gateway,
    stop,
    wait_for,
)

from tollway.testing import Simulator, start_simulator

# Timing-sensitive (real processes racing, drills): `./run test` runs it after the parallel run,
# alone on the machine.
pytestmark = pytest.mark.serial

pytest.importorskip("tollway_control_plane", reason="the control plane is needed")

STREAMS = 30
#: The first provider's faults: cut after 3 events, cut before the first event, 500, no answer.
FAULT_MIX = "midstream:3=0.25,midstream:0=0.1,500=0.3,timeout=0.05"


def add_provider(data_dir: Path, name: str, url: str, priority: int) -> None:
    config = {"prices": PRICES, "circuit_breaker": {"failure_threshold": 1_000_000}}
    cli(
        data_dir,
        "model-providers", "create", "--type", "openai", "--name", name,
        "--base-url", f"{url}/v1", "--api-key", f"sk-{name}", "--priority", str(priority),
        "--config-json", orjson.dumps(config).decode(),
    )  # fmt: skip


def chunk_ids(body: bytes) -> set[str]:
    """The ``id`` of every chunk of an SSE body: one id, one upstream answer (a stream spliced
    from two providers would show two)."""
    ids = set()
    for line in body.splitlines():
        if line.startswith(b"data: {"):
            chunk = orjson.loads(line[6:])
            if "id" in chunk:
                ids.add(chunk["id"])
    return ids


@pytest.mark.slow
def test_streams_cut_mid_way_end_in_an_error_frame_and_are_billed_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flaky: Simulator | None = None
    healthy: Simulator | None = None
    gw: Proc | None = None
    try:
        flaky = start_simulator("--fault-mix", FAULT_MIX)
        healthy = start_simulator()
        add_provider(data, "flaky", flaky.url, 0)
        add_provider(data, "healthy", healthy.url, 1)
        key = cli(
            data, "virtual-keys", "create", "--name", "drill", "--scope", "project", "--env", "test"
        )
        gw = start_gateway(tmp_path / "gw", data, env={"SERVER_UPSTREAM_TIMEOUT_SECONDS": "1"})
        url = gw.url

        def stream(i: int) -> tuple[str, str, bytes]:
            """(request id, outcome, body): completed, cut (error frame after content) or
            other."""
            with httpx.stream(
                "POST",
                f"{url}/v1/chat/completions",
                headers={"authorization": f"Bearer {key['secret']}"},
                json={
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": f"drill {i} {uuid.uuid4().hex}"}],
                    "max_tokens": 40,
                    "stream": True,
                },
                timeout=30,
            ) as r:
                body = r.read()
                rid = r.headers.get("x-langwatch-request-id", "")
                if r.status_code != 200:
                    return rid, f"status {r.status_code}", body
            done = b"data: [DONE]" in body
            error = b"event: error" in body or b'"error"' in body
            content = b'"content"' in body
            if done and not error:
                return rid, "completed", body
            if error and content and not done:
                return rid, "cut", body
            return rid, "other", body

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(stream, range(STREAMS)))
        outcomes = [o for _, o, _ in results]
        completed, cut = outcomes.count("completed"), outcomes.count("cut")
        ids = {rid for rid, _, _ in results}

        def all_billed() -> bool:
            return len(ledger_rows(data, key["id"])) >= STREAMS

        wait_for(all_billed, 20, "a ledger row for every stream")
        rows = ledger_rows(data, key["id"])
        cut_ids = {rid for rid, o, _ in results if o == "cut"}
        cut_rows = [r for r in rows if r["request_id"] in cut_ids]
        print(
            f"\nDRILL stream_cuts_fallback_chain: first provider {FAULT_MIX}: "
            f"{completed}/{STREAMS} streams completed "
            f"({completed / STREAMS:.0%}; every pre-first-byte failure fell back), {cut} cut "
            f"mid-stream ended in the error frame; ledger rows {len(rows)} == streams "
            f"{STREAMS}, each of the {cut} cut streams billed once"
        )
        assert completed + cut == STREAMS, [(o, b[-300:]) for _, o, b in results]
        assert cut > 0, "the fault mix cut no stream mid-way (run again)"
        # No silent fallback mid-stream: each stream is one upstream answer, never spliced.
        assert all(len(chunk_ids(b)) == 1 for _, o, b in results if o == "completed")
        aborted = httpx.get(f"{flaky.url}/_sim/stats", timeout=5).json()["streams_aborted"]
        assert aborted >= cut  # the cut ones, plus those cut before their first event
        assert len(ids) == STREAMS and "" not in ids
        assert len(rows) == STREAMS
        assert {r["request_id"] for r in rows} == ids
        assert len(cut_rows) == cut
        assert all(r["cost_usd"] > 0 for r in cut_rows), cut_rows
        # The healthy provider answered every completed stream the flaky one failed before its
        # first byte; the flaky one saw every stream first.
        assert len(flaky.requests()) == STREAMS
    finally:
        for proc in (gw, flaky, healthy):
            if proc is not None:
                stop(proc.proc)
