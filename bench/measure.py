"""Measuring: the load tools (wrk, bench/loadgen), the phases run against a target, and the
summary of the repetitions (medians, the bars)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BENCH, CACHE, MIB, SSE_EVENTS, VARY_MARKER, request_body
from counts import diff_counts, redis_commands, redis_round_trips, store_rows
from procs import tree_usage
from targets import Target


def build_loadgen(work: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is needed to build bench/loadgen (bench/setup.sh installs it)")
    out = work / "loadgen"
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
        "GOCACHE": os.environ.get("GOCACHE") or str(CACHE / "go-build"),
    }
    res = subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=BENCH / "loadgen",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        raise RuntimeError(f"go build bench/loadgen failed: {res.stderr.strip()}")
    return out


def _lua_str(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def wrk_script(path: Path, body: bytes, headers: dict[str, str]) -> Path:
    """wrk's Lua script; a body holding VARY_MARKER gets a counter there (a fresh run prefix
    each script, then 1, 2, 3...): every request differs."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_str(body.decode())}"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    for k, v in headers.items():
        lines.append(f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}")
    text = body.decode()
    if VARY_MARKER in text:
        pre, _, post = text.partition(VARY_MARKER)
        lines += [
            f"local pre, post, run, n = {_lua_str(pre)}, {_lua_str(post)}, "
            f"{_lua_str(f'{random.getrandbits(40):010x}')}, 0",
            "request = function()",
            "  n = n + 1",
            '  return wrk.format(nil, nil, nil, pre .. run .. "-" .. n .. post)',
            "end",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_wrk(out: str) -> dict[str, Any]:
    requests = duration = 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if m:
        requests = float(m.group(1))
        duration = float(m.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    non2xx = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        non2xx = int(m.group(1))
    sock = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        sock = sum(int(g) for g in m.groups())
    errors = non2xx + sock
    ok = max(0.0, requests - non2xx)
    return {
        "requests": int(requests),
        "duration_s": duration,
        "errors": errors,
        "non2xx": non2xx,
        "socket_errors": sock,
        "rps": ok / duration if duration else 0.0,
    }


@dataclass
class Runner:
    work: Path
    loadgen: Path
    duration: float
    streams: int
    paced_streams: int
    max_inflight: int
    idle: float

    def body_file(self, target: Target, mode: str, stream: bool) -> Path:
        path = self.work / f"body-{target.models[mode]}-{int(stream)}-{int(target.vary)}.json"
        if not path.exists():
            path.write_bytes(request_body(target.models[mode], stream=stream, vary=target.vary))
        return path

    def loadgen_argv(self, args: list[str], target: Target, mode: str) -> list[str]:
        """bench/loadgen's command line against ``target``'s ``mode`` URL: its headers, and a
        per-request counter in the body when the target varies its bodies."""
        argv = [str(self.loadgen), *args, "-url", target.urls[mode]]
        if target.vary:
            argv += ["-vary", VARY_MARKER, "-vary-prefix", f"{random.getrandbits(40):010x}"]
        for k, v in target.headers[mode].items():
            argv += ["-H", f"{k}: {v}"]
        return argv

    def _loadgen(
        self, args: list[str], target: Target, mode: str, timeout: float
    ) -> dict[str, Any]:
        argv = self.loadgen_argv(args, target, mode)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"loadgen failed: {res.stderr.strip()[-300:]}")
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    def measure(self, target: Target, phase: str) -> dict[str, Any]:
        """Run one phase against one target; add the process tree's CPU and RSS."""
        assert target.proc is not None
        counts0 = request_costs(target)
        cpu0, _ = tree_usage(target.proc.pid)
        t0 = time.monotonic()
        if phase == "wrk":
            result = self._wrk(target)
            count = result["requests"]
        elif phase.startswith(("rate", "delay")):
            mode = "instant" if phase.startswith("rate") else "delay60"
            rate = float(phase.removeprefix("rate").removeprefix("delay"))
            result = self._loadgen(
                [
                    "-mode",
                    "rate",
                    "-rate",
                    str(rate),
                    "-duration",
                    f"{self.duration}s",
                    "-max-inflight",
                    str(self.max_inflight),
                    "-warmup",
                    "5",
                    "-timeout",
                    "15s",
                    "-body",
                    str(self.body_file(target, mode, False)),
                ],
                target,
                mode,
                timeout=self.duration + 60,
            )
            count = result["completed"] + 5
        elif phase in ("sse200", "paced"):
            n = self.streams if phase == "sse200" else self.paced_streams
            result = self._loadgen(
                [
                    "-mode",
                    "stream",
                    "-n",
                    str(n),
                    "-warmup",
                    "1",
                    "-timeout",
                    "30s",
                    "-body",
                    str(self.body_file(target, phase, True)),
                ],
                target,
                phase,
                timeout=120 + n * 10,
            )
            count = result["streams"] + 1
        else:
            raise ValueError(phase)
        wall = time.monotonic() - t0
        cpu1, rss = tree_usage(target.proc.pid)
        result["cpu_s"] = cpu1 - cpu0
        result["cpu_ms_per_req"] = (cpu1 - cpu0) * 1000 / count if count else None
        result["rss_bytes"] = rss
        result["wall_s"] = wall
        if "trips" in counts0:
            time.sleep(0.3)  # requests in flight when the load stopped finish (and are counted)
        result.update(costs_per_request(counts0, request_costs(target), count))
        if not target.proc.alive():
            result["note"] = f"the target exited: {target.proc.tail(5)}"
        return result

    def _wrk(
        self, target: Target, duration: float | None = None, connections: int = 50
    ) -> dict[str, Any]:
        duration = duration or self.duration
        script = wrk_script(
            self.work / f"wrk-{target.name}.lua",
            request_body(target.models["instant"], stream=False, vary=target.vary),
            target.headers["instant"],
        )
        argv = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            target.urls["instant"],
        ]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        if res.returncode != 0:
            raise RuntimeError(f"wrk failed: {res.stderr.strip()[-300:]}")
        out = parse_wrk(res.stdout)
        out["output"] = res.stdout.strip().splitlines()[-3:]
        return out

    def warm(self, target: Target, seconds: float) -> None:
        """Unmeasured: open connections, fill caches, JIT (Node), first-request set-up."""
        self._wrk(target, seconds, connections=10)
        self._loadgen(
            [
                "-mode",
                "stream",
                "-n",
                "1",
                "-warmup",
                "1",
                "-body",
                str(self.body_file(target, "sse200", True)),
            ],
            target,
            "sse200",
            timeout=90,
        )


def request_costs(target: Target) -> dict[str, dict[str, int]]:
    """The target's Redis command calls, its own count of Redis round trips, and store rows
    right now ({} for what it lacks)."""
    out: dict[str, dict[str, int]] = {}
    if target.redis_port is not None:
        out["redis"] = redis_commands(target.redis_port)
        if target.urls:
            base = next(iter(target.urls.values())).split("/v1/", 1)[0]
            trips = redis_round_trips(base)
            if trips:
                out["trips"] = trips
    if target.store is not None:
        out["store"] = store_rows(target.store)
    return out


def costs_per_request(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], requests: int
) -> dict[str, Any]:
    """Redis commands, round trips and store rows added over ``requests`` requests: totals, by
    command, path or table, and per request."""
    out: dict[str, Any] = {}
    if "trips" in before and "trips" in after and requests:
        d = {k: after["trips"].get(k, 0) - before["trips"].get(k, 0) for k in after["trips"]}
        out["trips_delta"] = d
        served = d.get("served") or requests  # requests the gateway answered, in-flight ones too
        for path in ("request", "background"):
            out[f"trips_{path}_per_req"] = d.get(path, 0) / served
    for what in ("redis", "store"):
        if what in before and what in after and requests:
            d = diff_counts(after[what], before[what])
            out[f"{what}_delta"] = d
            out[f"{what}_per_req"] = sum(d.values()) / requests
    return out


def last_error_line(target: Target) -> str | None:
    """The last line of a target's log that looks like an error (for the report's notes)."""
    if target.proc is None or target.name == "direct":
        return None
    try:
        lines = target.proc.logfile.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if re.search(r"error|exception|traceback", line, re.I):
            return line.strip().replace("`", "'")[:200]
    return None


# --- summarising ----------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarise(runs: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    """Median over repetitions of each figure; errors summed."""
    ok_runs = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"repetitions": len(runs), "failed_runs": len(runs) - len(ok_runs)}
    if not ok_runs:
        out["error"] = runs[-1].get("error") if runs else "not run"
        return out
    out["cpu_ms_per_req"] = _median([r.get("cpu_ms_per_req") for r in ok_runs])
    out["rss_mib"] = max(r["rss_bytes"] for r in ok_runs) / MIB
    for path in ("request", "background"):
        if any(f"trips_{path}_per_req" in r for r in ok_runs):
            figures = [r.get(f"trips_{path}_per_req") for r in ok_runs]
            out[f"trips_{path}_per_req"] = _median(figures)
    for what in ("redis", "store"):
        if any(f"{what}_per_req" in r for r in ok_runs):
            out[f"{what}_per_req"] = _median([r.get(f"{what}_per_req") for r in ok_runs])
            total: dict[str, int] = {}
            for r in ok_runs:
                for k, v in r.get(f"{what}_delta", {}).items():
                    total[k] = total.get(k, 0) + v
            out[f"{what}_delta"] = total
    if phase == "wrk":
        out["rps"] = _median([r["rps"] for r in ok_runs])
        out["rps_runs"] = [round(r["rps"], 1) for r in ok_runs]
        out["errors"] = sum(r["errors"] for r in ok_runs)
        out["requests"] = sum(r["requests"] for r in ok_runs)
    elif phase.startswith(("rate", "delay")):
        out["target_rate"] = ok_runs[0]["target_rate"]
        out["achieved_rate"] = _median([r["achieved_rate"] for r in ok_runs])
        out["errors"] = sum(r["errors"] + r["dropped"] for r in ok_runs)
        out["ok"] = sum(r["ok"] for r in ok_runs)
        for p in ("p50", "p90", "p99", "max"):
            out[p] = _median([r["latency_ms"][p] for r in ok_runs if r["ok"]])
        out["p50_runs"] = [round(r["latency_ms"]["p50"], 2) for r in ok_runs]
        out["p99_runs"] = [round(r["latency_ms"]["p99"], 2) for r in ok_runs]
        out["lateness_p99"] = max(r["send_lateness_ms"]["p99"] for r in ok_runs)
        firsts = [r.get("first_error") for r in ok_runs if r.get("first_error")]
        if firsts:
            out["first_error"] = firsts[0]
    else:
        out["ok"] = sum(r["ok"] for r in ok_runs)
        out["errors"] = sum(r["errors"] for r in ok_runs)
        have = [r for r in ok_runs if r["ok"]]
        out["ttfb_p50"] = _median([r["ttfb_ms"]["p50"] for r in have])
        out["ttfb_p90"] = _median([r["ttfb_ms"]["p90"] for r in have])
        out["total_p50"] = _median([r["total_ms"]["p50"] for r in have])
        out["after_first_p50"] = _median([r["after_first_ms"]["p50"] for r in have])
        out["gap_p50"] = _median([r["gap_ms"]["p50"] for r in have])
        out["gap_p99"] = _median([r["gap_ms"]["p99"] for r in have])
        out["gap_max"] = max((r["gap_ms"]["max"] for r in have), default=None)
        out["events"] = sorted({r["events_min"] for r in have} | {r["events_max"] for r in have})
        firsts = [r.get("first_error") for r in ok_runs if r.get("first_error")]
        if firsts:
            out["first_error"] = firsts[0]
    return out


def sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def evaluate_bars(s: dict[str, dict[str, Any]], rates: list[float]) -> list[dict[str, Any]]:
    """The product's performance bars (docs/performance.md), each met, missed or n/a."""

    def get(target: str, phase: str, key: str) -> float | None:
        value = s.get(target, {}).get(phase, {}).get(key)
        return value if isinstance(value, int | float) else None

    def added(target: str, phase: str, key: str) -> float | None:
        return sub(get(target, phase, key), get("direct", phase, key))

    def fmt(v: float | None, unit: str = "", digits: int = 2, sign: bool = False) -> str:
        if v is None:
            return "n/a"
        return f"{v:+.{digits}f}{unit}" if sign else f"{v:.{digits}f}{unit}"

    bars: list[dict[str, Any]] = []
    # The bars are about every feature working; a run without that target falls back to
    # "loaded" (every plugin loaded, a static key), and says so in each bar's text.
    full = "working" if "working" in s or "loaded" not in s else "loaded"

    def at_most(
        group: str, text: str, value: float | None, limit: float | None, shown: str
    ) -> None:
        met = None if value is None or limit is None else value <= limit
        bars.append({"group": group, "bar": text, "measured": shown, "met": met})

    def at_least(group: str, text: str, value: float | None, limit: float, shown: str) -> None:
        met = None if value is None else value >= limit
        bars.append({"group": group, "bar": text, "measured": shown, "met": met})

    full_rps, bare_rps = get(full, "wrk", "rps"), get("bare", "wrk", "rps")
    lite_rps, pk_rps = get("litellm", "wrk", "rps"), get("portkey", "wrk", "rps")
    r = div(full_rps, lite_rps)
    at_least(
        "Throughput",
        f"{full} ≥ 10× LiteLLM's max req/s",
        r,
        10.0,
        f"{fmt(r, '×', 1)} ({fmt(full_rps, '', 0)} vs {fmt(lite_rps, '', 0)} req/s)",
    )
    r = div(full_rps, pk_rps)
    at_least(
        "Throughput",
        f"{full} ≥ 1.0× Portkey's max req/s",
        r,
        1.0,
        f"{fmt(r, '×')} ({fmt(full_rps, '', 0)} vs {fmt(pk_rps, '', 0)} req/s)",
    )
    r = div(full_rps, bare_rps)
    at_least(
        "Throughput",
        f"{full} ≥ 0.6× bare",
        r,
        0.6,
        f"{fmt(r, '×')} ({fmt(full_rps, '', 0)} vs {fmt(bare_rps, '', 0)} req/s)",
    )
    for rate in rates:
        ph = f"rate{rate:g}"
        group = f"Latency @{rate:g}/s"
        f50, l50 = added(full, ph, "p50"), added("litellm", ph, "p50")
        lim = None if l50 is None else l50 / 5
        at_most(
            group,
            f"{full} p50 added ≤ 1/5 of LiteLLM's",
            f50,
            lim,
            f"{fmt(f50, sign=True)} ms vs LiteLLM {fmt(l50, sign=True)} ms (limit {fmt(lim)})",
        )
        f99, p99 = added(full, ph, "p99"), added("portkey", ph, "p99")
        at_most(
            group,
            f"{full} p99 added ≤ Portkey's",
            f99,
            p99,
            f"{fmt(f99, sign=True)} ms vs Portkey {fmt(p99, sign=True)} ms",
        )
        d = sub(get(full, ph, "p50"), get("bare", ph, "p50"))
        at_most(group, f"{full} − bare ≤ +0.5 ms p50", d, 0.5, f"{fmt(d, sign=True)} ms")
    ft, lt = added(full, "sse200", "ttfb_p50"), added("litellm", "sse200", "ttfb_p50")
    lim = None if lt is None else lt / 8
    at_most(
        "Streaming",
        "TTFB added ≤ 1/8 of LiteLLM's",
        ft,
        lim,
        f"{fmt(ft, sign=True)} ms vs LiteLLM {fmt(lt, sign=True)} ms (limit {fmt(lim)})",
    )
    rel = added(full, "sse200", "after_first_p50")
    per_event = None if rel is None else rel * 1000 / (SSE_EVENTS - 1)
    at_most(
        "Streaming",
        "per-event relay ≤ 10 µs (200 at once: total − TTFB within 2 ms of direct's)",
        rel,
        2.0,
        f"{fmt(rel, sign=True)} ms over direct ≈ {fmt(per_event, ' µs', 1, sign=True)}/event",
    )
    g99 = added(full, "paced", "gap_p99")
    at_most(
        "Streaming",
        "paced stream: p99 gap added ≤ 0.5 ms",
        g99,
        0.5,
        f"p99 gap {fmt(get(full, 'paced', 'gap_p99'))} ms vs direct "
        f"{fmt(get('direct', 'paced', 'gap_p99'))} ms ({fmt(g99, sign=True)}); max gap "
        f"{fmt(get(full, 'paced', 'gap_max'))} vs {fmt(get('direct', 'paced', 'gap_max'))} ms",
    )
    trips = get(full, "wrk", "trips_request_per_req")
    background = get(full, "wrk", "trips_background_per_req")
    at_most(
        "Cost per request",
        "Redis round trips per request on the request path ≤ 1 under wrk (settlements batched "
        "in the background)",
        trips,
        1.0,
        f"{fmt(trips)} on the request path, {fmt(background)} in the background; "
        f"{fmt(get(full, 'wrk', 'redis_per_req'))} Redis commands/req (Lua's included)",
    )
    rss_values = [
        ph["rss_mib"] for ph in s.get(full, {}).values() if isinstance(ph.get("rss_mib"), float)
    ]
    rss = max(rss_values) if rss_values else None
    soak = s.get(full, {}).get("soak", {})
    soak_max = soak.get("rss_mib")
    shown = fmt(rss, " MiB", 0)
    if isinstance(soak_max, float):  # taken into rss above
        shown += f" (the soak's max: {soak_max:.0f})"
    at_most("Memory", f"{full} RSS ≤ 120 MiB", rss, 120.0, shown)
    slope = soak.get("slope_mib_per_10min")
    if "soak_s" in soak:
        shown = (
            f"{fmt(slope, ' MiB/10 min', 1, sign=True)} after a {soak['warmup_s']:g} s warm-up "
            f"({soak['soak_s']:g} s at {soak['rate']:g} req/s, {soak['requests']} requests, "
            f"{soak['errors']} errors, {soak['dropped']} not sent over the in-flight cap; RSS "
            f"{fmt(soak['rss_warm_mib'], '', 1)} → "
            f"{fmt(soak['rss_end_mib'], '', 1)} MiB, max {fmt(soak_max, '', 1)})"
        )
        if soak["soak_s"] < 600:
            shown += f"; a {soak['soak_s']:g} s soak, extrapolated (the bar is for 10 minutes)"
    else:
        shown = soak.get("error") or "no soak in this run (`--soak 600`)"
    at_most(
        "Memory",
        f"{full} RSS flat over the soak: growth after warm-up ≤ 5 MiB per 10 minutes",
        slope,
        5.0,
        shown,
    )
    return bars
