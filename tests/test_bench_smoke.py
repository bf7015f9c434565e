"""Smoke test of the benchmark: ``bench/run.py --quick --soak 5`` runs and every target produces
numbers.

It never asserts a timing (speed is measured by the full run and written to
docs/performance.md, not tested). It needs nginx with the echo module, wrk and go:
``bench/setup.sh`` installs whichever is missing (apt-get, root, network to the Debian mirrors)
and the test is skipped, saying why, when that is not possible.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("direct", "bare", "loaded", "working")


@pytest.fixture(scope="module")
def bench_tools() -> None:
    setup = REPO / "bench" / "setup.sh"
    try:
        res = subprocess.run(["bash", str(setup)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("bench/setup.sh timed out installing nginx, wrk and go")
    if res.returncode != 0:
        pytest.skip(
            "bench/setup.sh could not provide nginx + echo module, wrk and go: "
            + (res.stderr.strip().splitlines() or ["no output"])[-1]
        )


@pytest.fixture(scope="module")
def report(bench_tools: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench")
    out, md = tmp / "bench.json", tmp / "performance.md"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--quick",
            "--targets",
            ",".join(TARGETS),
            # A short soak at a low rate: the soak's path, not its bar (that takes 10 minutes).
            "--soak",
            "5",
            "--soak-rate",
            "20",
            "--json",
            str(out),
            "--markdown",
            str(md),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert res.returncode == 0, f"bench/run.py failed:\n{res.stdout}\n{res.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(out.read_text())
    data["_markdown"] = md.read_text()
    data["_stderr"] = res.stderr
    return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first run on a fresh machine may apt-get install the tools
@pytest.mark.parametrize("target", TARGETS)
def test_bench_quick_run_measures_every_target(report: dict[str, Any], target: str) -> None:
    info = {t["name"]: t for t in report["targets"]}
    assert info[target]["unavailable"] is None, (
        f"{target} unavailable: {info[target]['unavailable']}\n{report['_stderr'][-3000:]}"
    )
    s = report["summary"][target]
    assert _number(s["wrk"]["rps"]) and s["wrk"]["rps"] > 0, s["wrk"]
    assert s["wrk"]["errors"] == 0, s["wrk"]
    for phase in ("rate20", "rate200"):
        ph = s[phase]
        assert ph["ok"] > 0 and _number(ph["achieved_rate"]), ph
        for key in ("p50", "p90", "p99", "max", "cpu_ms_per_req"):
            assert _number(ph[key]), (phase, key, ph)
    for phase in ("sse200", "paced"):
        ph = s[phase]
        assert ph["ok"] > 0 and ph["errors"] == 0, ph
        assert _number(ph["ttfb_p50"]) and _number(ph["total_p50"]), ph
        # Tollway drops the usage event it asked for on the client's behalf; never more.
        assert ph["events"] and min(ph["events"]) >= 199, ph
    assert _number(s["paced"]["gap_max"]), s["paced"]
    assert max(ph["rss_mib"] for ph in s.values()) > 1


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_quick_run_writes_the_report(report: dict[str, Any]) -> None:
    md = report["_markdown"]
    for heading in ("## Bars", "## Throughput", "## Latency at 20 req/s", "## Streaming"):
        assert heading in md
    for name in ("loaded", "working"):
        info = next(t for t in report["targets"] if t["name"] == name)
        assert any(n.startswith("plugins: ") for n in info["notes"]), info["notes"]
    assert {b["group"] for b in report["bars"]} >= {"Throughput", "Streaming", "Memory"}
    # The bars are the working target's.
    assert all("working" in b["bar"] for b in report["bars"] if b["group"] == "Throughput")
    assert "## What each request costs" in md


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_working_target_has_every_feature_working(report: dict[str, Any]) -> None:
    """The working target's key is a control-plane key with a budget, a pii guardrail, the
    response cache on its miss path, and every span reaches the bench's OTLP receiver."""
    info = next(t for t in report["targets"] if t["name"] == "working")
    notes = " ".join(info["notes"])
    for feature in ("virtual-keys create", "gateway-budgets create", '"pii"', "response_cache"):
        assert feature in notes, (feature, notes)
    spans = report["spans"]["working"]
    assert spans["requests"] > 0 and spans["errors"] == 0, spans
    assert spans["roots"] == spans["requests"], spans
    wrk = report["summary"]["working"]["wrk"]
    # Counted, not judged: Redis commands (admission, limits, cache) and store rows (the ledger).
    assert _number(wrk["redis_per_req"]) and wrk["redis_per_req"] > 0, wrk
    # The gateway's own round-trip count, split into the request path and the background.
    assert _number(wrk["trips_request_per_req"]) and wrk["trips_request_per_req"] > 0, wrk
    assert _number(wrk["trips_background_per_req"]), wrk
    assert _number(wrk["store_per_req"]), wrk
    assert "redis_per_req" not in report["summary"]["direct"]["wrk"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_quick_run_soaks_every_tollway_target(report: dict[str, Any]) -> None:
    """``--soak 5``: each Tollway target served the soak's requests without an error, its RSS
    and open fds were sampled, and the Memory bars and the Markdown show the soak."""
    assert "soak" not in report["summary"]["direct"]
    for target in ("bare", "loaded", "working"):
        soak = report["summary"][target]["soak"]
        assert soak["soak_s"] == 5 and soak["rate"] == 20, soak
        assert soak["requests"] > 0 and soak["errors"] == 0, soak
        assert soak["samples"] >= 3, soak
        for key in ("rss_warm_mib", "rss_end_mib", "rss_mib"):
            assert _number(soak[key]) and soak[key] > 1, (key, soak)
        assert _number(soak["slope_mib_per_10min"]), soak
        assert soak["fds_warm"] > 0 and soak["fds_max"] >= soak["fds_end"] > 0, soak
        raw = report["raw"][target]["soak"][0]
        assert len(raw["samples"]) == soak["samples"]
    bar = next(b for b in report["bars"] if "flat over the soak" in b["bar"])
    assert bar["met"] is not None and "a 5 s soak, extrapolated" in bar["measured"], bar
    md = report["_markdown"]
    assert "## Soak (5 s of steady load per Tollway target)" in md
    assert "| Tollway working |" in md.split("## Soak", 1)[1]
