"""The soak (``bench/run.py --soak SECONDS``): a steady open-loop load against one Tollway target
for SECONDS while the resident memory and open file descriptors of its process tree are sampled,
then the figures the Memory bars judge: RSS after the warm-up, at the end, its largest, and its
growth after the warm-up as a least-squares slope in MiB per 10 minutes.

The load is bench/loadgen's rate mode with the target's own request body and headers: for
``working`` every body differs (``-vary``), so every request is a response-cache miss that is
stored, and the cache grows to its bound (its TTL, 60 s, in the target's Redis; its LRU bound
in the process without Redis) during the warm-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from typing import Any

from common import MIB
from measure import Runner
from procs import process_tree, tree_usage
from targets import Target

#: The warm-up is 10 % of the soak, at most this long (the first minute of a 10-minute soak):
#: caches, pools and the response cache's entries reach their steady size in it.
WARMUP_MAX_S = 60.0
#: Seconds between two samples: ``seconds / 120`` within these bounds.
INTERVAL_MIN_S, INTERVAL_MAX_S = 0.5, 5.0
#: Loadgen's unmeasured first requests (one connection opened, first-request set-up).
LOADGEN_WARMUP = 5


def warmup_seconds(seconds: float) -> float:
    """How long the soak runs before its RSS counts as warm: 10 % of it, at most a minute."""
    return min(WARMUP_MAX_S, 0.1 * seconds)


def sample_interval(seconds: float) -> float:
    """Seconds between samples: ~120 samples per soak, every 0.5 to 5 s."""
    return min(INTERVAL_MAX_S, max(INTERVAL_MIN_S, seconds / 120))


def tree_fds(root: int) -> int:
    """Open file descriptors of a process tree (``/proc/<pid>/fd`` of each process)."""
    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):  # a process that just exited
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


def slope_per_10min(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, MiB) points, in MiB per 10 minutes; None with fewer
    than two distinct times."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 600.0


def run_soak(runner: Runner, target: Target, seconds: float, rate: float) -> dict[str, Any]:
    """``seconds`` of open-loop load at ``rate`` req/s against ``target``'s instant upstream,
    its process tree's RSS and open fds sampled every :func:`sample_interval`; the raw result
    (loadgen's JSON, the samples, CPU over the soak)."""
    assert target.proc is not None
    pid = target.proc.pid
    interval = sample_interval(seconds)
    body = runner.body_file(target, "instant", False)
    args = ["-mode", "rate", "-rate", str(rate), "-duration", f"{seconds}s"]
    args += ["-max-inflight", str(runner.max_inflight), "-warmup", str(LOADGEN_WARMUP)]
    args += ["-timeout", "15s", "-body", str(body)]
    argv = runner.loadgen_argv(args, target, "instant")
    out_path = runner.work / f"soak-{target.name}.json"
    err_path = runner.work / f"soak-{target.name}.err"
    samples: list[dict[str, float]] = []

    def sample(t0: float) -> None:
        _, rss = tree_usage(pid)
        point: dict[str, float] = {
            "t": round(time.monotonic() - t0, 2),
            "rss_mib": rss / MIB,
            "fds": tree_fds(pid),
        }
        if target.extra_procs:  # the target's own Redis (where the response cache lives)
            extra = sum(tree_usage(p.pid)[1] for p in target.extra_procs if p.alive())
            point["extra_rss_mib"] = extra / MIB
        samples.append(point)

    cpu0, _ = tree_usage(pid)
    t0 = time.monotonic()
    deadline = t0 + seconds + 120
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        try:
            while True:
                sample(t0)
                try:
                    proc.wait(timeout=interval)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"loadgen still running {seconds + 120:.0f} s in"
                        ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    sample(t0)  # the end of the load
    wall = time.monotonic() - t0
    cpu1, _ = tree_usage(pid)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {err_path.read_text(errors='replace')[-300:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    count = result["completed"] + LOADGEN_WARMUP
    result.update(
        {
            "soak_s": seconds,
            "rate": rate,
            "warmup_s": warmup_seconds(seconds),
            "interval_s": interval,
            "wall_s": wall,
            "cpu_s": cpu1 - cpu0,
            "cpu_ms_per_req": (cpu1 - cpu0) * 1000 / count if count else None,
            "samples": samples,
        }
    )
    if not target.proc.alive():
        result["note"] = f"the target exited: {target.proc.tail(5)}"
    return result


def summarise_soak(raw: dict[str, Any], points: int = 11) -> dict[str, Any]:
    """The soak's figures from its raw result: RSS (MiB) after the warm-up, at the end, its
    largest (``rss_mib``, which the RSS bar and the Memory table take) and its slope after the
    warm-up, open fds likewise, requests, errors and requests dropped over the in-flight cap,
    and RSS at ``points`` evenly spaced samples (for the Markdown)."""
    if "error" in raw:
        return {"error": raw["error"]}
    samples: list[dict[str, float]] = raw["samples"]
    warm = [s for s in samples if s["t"] >= raw["warmup_s"]] or samples[-1:]
    first, last = warm[0], samples[-1]
    step = max(1, (len(samples) - 1) / max(1, points - 1))
    along = sorted({min(len(samples) - 1, round(i * step)) for i in range(points)})
    out: dict[str, Any] = {
        "soak_s": raw["soak_s"],
        "rate": raw["rate"],
        "warmup_s": raw["warmup_s"],
        "interval_s": raw["interval_s"],
        "samples": len(samples),
        "requests": raw["completed"],
        "ok": raw["ok"],
        # Failed requests; and those never sent because the in-flight cap was reached (the
        # target could not keep up with the rate).
        "errors": raw["errors"],
        "dropped": raw["dropped"],
        "achieved_rate": raw["achieved_rate"],
        "p50": raw["latency_ms"]["p50"],
        "p99": raw["latency_ms"]["p99"],
        "cpu_ms_per_req": raw.get("cpu_ms_per_req"),
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_warm_mib": first["rss_mib"],
        "rss_warm_at_s": first["t"],
        "rss_end_mib": last["rss_mib"],
        "rss_mib": max(s["rss_mib"] for s in samples),
        "slope_mib_per_10min": slope_per_10min([(s["t"], s["rss_mib"]) for s in warm]),
        "fds_warm": first["fds"],
        "fds_end": last["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "fds_slope_per_10min": slope_per_10min([(s["t"], s["fds"]) for s in warm]),
        "extra_rss_end_mib": last.get("extra_rss_mib"),
        "rss_along": [[samples[i]["t"], round(samples[i]["rss_mib"], 1)] for i in along],
    }
    if raw.get("first_error"):
        out["first_error"] = raw["first_error"]
    if raw.get("note"):
        out["note"] = raw["note"]
    return out
