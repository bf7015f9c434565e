"""The soak's arithmetic (bench/soak.py): the RSS slope, the summary of its samples, the Memory
bars it feeds (bench/measure.py) and its Markdown section, on made-up samples. The soak itself
runs in the bench smoke run (tests/test_bench_smoke.py, ``--soak 5``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    """The bench's modules (they import each other by bare name from bench/)."""
    sys.path.insert(0, str(BENCH))
    try:
        import measure
        import render_soak
        import soak
    finally:
        sys.path.remove(str(BENCH))
    return {"soak": soak, "measure": measure, "render_soak": render_soak}


def made_up_raw(rss: list[float], seconds: float = 100.0, **extra: Any) -> dict[str, Any]:
    """A raw soak result as run_soak returns it: one sample a second, RSS as given."""
    samples = [
        {"t": float(i), "rss_mib": v, "fds": 40 + (i >= 5), "extra_rss_mib": 9.0}
        for i, v in enumerate(rss)
    ]
    raw = {
        "completed": 2000,
        "ok": 1996,
        "errors": 3,
        "dropped": 1,
        "achieved_rate": 19.96,
        "latency_ms": {"p50": 4.0, "p90": 6.0, "p99": 9.5, "max": 20.0},
        "soak_s": seconds,
        "rate": 20.0,
        "warmup_s": 0.1 * seconds,
        "interval_s": 1.0,
        "cpu_ms_per_req": 3.1,
        "samples": samples,
    }
    return {**raw, **extra}


def test_slope_is_mib_per_ten_minutes(bench: dict[str, ModuleType]) -> None:
    slope = bench["soak"].slope_per_10min
    # 1 MiB a minute is 10 MiB per 10 minutes, whatever the offset.
    assert slope([(t, 100 + t / 60) for t in range(0, 300, 5)]) == pytest.approx(10.0)
    assert slope([(t, 100.0) for t in range(10)]) == pytest.approx(0.0)
    assert slope([(t, 100 - t / 600) for t in range(10)]) == pytest.approx(-1.0)
    # Noise around a flat line fits to ~0.
    noisy = [(float(t), 100 + (0.3 if t % 2 else -0.3)) for t in range(200)]
    assert abs(slope(noisy)) < 0.1
    assert slope([(1.0, 100.0)]) is None
    assert slope([(1.0, 100.0), (1.0, 101.0)]) is None


def test_warmup_and_interval_follow_the_soak_length(bench: dict[str, ModuleType]) -> None:
    soak = bench["soak"]
    assert soak.warmup_seconds(600) == 60  # the first minute of the bar's 10-minute soak
    assert soak.warmup_seconds(3600) == 60
    assert soak.warmup_seconds(30) == pytest.approx(3.0)
    assert soak.sample_interval(600) == 5.0
    assert soak.sample_interval(30) == 0.5
    assert soak.sample_interval(5) == 0.5


def test_summary_leaves_the_warm_up_out_of_the_slope(bench: dict[str, ModuleType]) -> None:
    # Grows 80 → 98 MiB in the first 10 s (the warm-up of a 100 s soak), then flat at 100
    # with one spike: the slope after the warm-up is ~0, the max is the spike.
    rss = [80 + 2 * i for i in range(10)] + [100.0] * 91
    rss[50] = 104.0
    s = bench["soak"].summarise_soak(made_up_raw(rss))
    assert s["rss_start_mib"] == 80
    assert s["rss_warm_mib"] == 100 and s["rss_warm_at_s"] == 10
    assert s["rss_end_mib"] == 100
    assert s["rss_mib"] == 104.0 and isinstance(s["rss_mib"], float)
    assert abs(s["slope_mib_per_10min"]) < 1.0
    assert (s["requests"], s["ok"], s["errors"], s["dropped"]) == (2000, 1996, 3, 1)
    assert (s["fds_warm"], s["fds_end"], s["fds_max"]) == (41, 41, 41)
    assert s["extra_rss_end_mib"] == 9.0
    assert s["samples"] == 101
    along = s["rss_along"]
    assert along[0] == [0.0, 80.0] and along[-1] == [100.0, 100.0] and len(along) == 11


def test_summary_of_a_leak(bench: dict[str, ModuleType]) -> None:
    # 0.05 MiB/s after the warm-up is 30 MiB per 10 minutes.
    rss = [100 + 0.05 * i for i in range(101)]
    s = bench["soak"].summarise_soak(made_up_raw(rss))
    assert s["slope_mib_per_10min"] == pytest.approx(30.0)
    assert s["rss_end_mib"] == pytest.approx(105.0)


def test_a_failed_soak_summarises_to_its_error(bench: dict[str, ModuleType]) -> None:
    assert bench["soak"].summarise_soak({"error": "loadgen failed: x"}) == {
        "error": "loadgen failed: x"
    }


def _summary(soak: dict[str, Any] | None, phase_rss: float = 100.0) -> dict[str, Any]:
    working: dict[str, Any] = {"wrk": {"rps": 300.0, "rss_mib": phase_rss}}
    if soak is not None:
        working["soak"] = soak
    return {"direct": {"wrk": {"rps": 5000.0}}, "bare": {"wrk": {"rps": 900.0}}, "working": working}


def _memory_bars(bench: dict[str, ModuleType], summary: dict[str, Any]) -> dict[str, Any]:
    bars = bench["measure"].evaluate_bars(summary, [20.0])
    memory = {b["bar"]: b for b in bars if b["group"] == "Memory"}
    assert set(memory) == {
        "working RSS ≤ 120 MiB",
        "working RSS flat over the soak: growth after warm-up ≤ 5 MiB per 10 minutes",
    }
    return {("flat" if "flat" in k else "max"): v for k, v in memory.items()}


def test_bars_judge_the_soak(bench: dict[str, ModuleType]) -> None:
    summarise = bench["soak"].summarise_soak
    flat = summarise(made_up_raw([100.0] * 601, seconds=600))
    bars = _memory_bars(bench, _summary(flat))
    assert bars["flat"]["met"] is True and bars["max"]["met"] is True
    assert "+0.0 MiB/10 min after a 60 s warm-up" in bars["flat"]["measured"]
    assert "extrapolated" not in bars["flat"]["measured"]
    # 1 MiB a minute after the warm-up: missed; a short soak says it was extrapolated.
    leak = summarise(made_up_raw([100 + i / 60 for i in range(31)], seconds=30))
    bars = _memory_bars(bench, _summary(leak))
    assert bars["flat"]["met"] is False
    assert "+10.0 MiB/10 min" in bars["flat"]["measured"]
    assert "a 30 s soak, extrapolated" in bars["flat"]["measured"]
    # The soak's max counts against 120 MiB though every phase stayed under it.
    high = summarise(made_up_raw([110.0] * 50 + [125.0] + [110.0] * 50))
    bars = _memory_bars(bench, _summary(high, phase_rss=100.0))
    assert bars["max"]["met"] is False
    assert bars["max"]["measured"].startswith("125 MiB")


def test_bars_without_a_soak(bench: dict[str, ModuleType]) -> None:
    bars = _memory_bars(bench, _summary(None))
    assert bars["flat"]["met"] is None
    assert "no soak" in bars["flat"]["measured"]
    assert bars["max"]["met"] is True
    failed = _memory_bars(bench, _summary({"error": "loadgen failed: boom"}))
    assert failed["flat"]["met"] is None and "boom" in failed["flat"]["measured"]


def test_markdown_section(bench: dict[str, ModuleType]) -> None:
    soak = bench["soak"].summarise_soak(made_up_raw([100.0] * 101))
    report = {
        "options": {"soak": 100.0, "soak_rate": 20.0, "max_inflight": 64},
        "targets": [
            {"name": "direct", "label": "nginx direct"},
            {"name": "working", "label": "Tollway working"},
        ],
        "summary": {"direct": {"wrk": {}}, "working": {"wrk": {}, "soak": soak}},
    }
    md = "\n".join(bench["render_soak"].render_soak(report))
    assert md.startswith("## Soak (100 s of steady load per Tollway target)")
    assert "shorter than the bar's 10 minutes" in md
    row = next(line for line in md.splitlines() if line.startswith("| Tollway working |"))
    assert "| 2000 | 3 | 1 |" in row and "+0.00" in row and "41 → 41 (41)" in row
    assert "- Tollway working: 0 s: 100" in md
    assert "nginx direct" not in md
    report["summary"]["working"].pop("soak")
    assert bench["render_soak"].render_soak(report) == []


def test_open_fds_of_a_real_process(bench: dict[str, ModuleType]) -> None:
    tree_fds = bench["soak"].tree_fds
    before = tree_fds(os.getpid())
    with tempfile.TemporaryFile() as _f:
        assert tree_fds(os.getpid()) == before + 1
    assert tree_fds(os.getpid()) == before
    assert before > 0
