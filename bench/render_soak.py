"""The "Soak" section of docs/performance.md and its console lines (a run with ``--soak``)."""

from __future__ import annotations

from typing import Any


def _f(v: Any, digits: int = 1, sign: bool = False) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _soaked(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, soak summary) of every target the run soaked, in the report's target order."""
    s = report["summary"]
    return [
        (t["label"], s[t["name"]]["soak"])
        for t in report["targets"]
        if "soak" in s.get(t["name"], {})
    ]


def render_soak(report: dict[str, Any]) -> list[str]:
    """The Markdown section; empty when the run had no soak."""
    soaked = _soaked(report)
    if not soaked:
        return []
    o = report["options"]
    some = next((ph for _, ph in soaked if "soak_s" in ph), None)
    out = [f"## Soak ({o['soak']:g} s of steady load per Tollway target)\n"]
    w = out.append
    w(
        f"After the other phases, each Tollway target in turn under `bench/loadgen` at "
        f"{o['soak_rate']:g} req/s (open loop, instant upstream, its own request body: the "
        "working target's bodies all differ, so every request is a response-cache miss that is "
        "stored and the cache grows to its bound). RSS and open file descriptors are the whole "
        "process tree's, sampled every "
        + (f"{some['interval_s']:g} s" if some else "few seconds")
        + "; *after warm-up* is the first sample once "
        + (f"{some['warmup_s']:g} s" if some else "10 % of the soak")
        + " had passed (10 % of the soak, at most a minute). *Growth* is the least-squares "
        "slope of RSS over the samples after the warm-up, in MiB per 10 minutes (the bar: ≤ 5 "
        "for working). *Not sent*: requests over the in-flight cap "
        f"({o.get('max_inflight', '–')}), i.e. the target did not keep up with the rate (a "
        "saturated soak measures a queue as much as the steady state). *Redis RSS*: the "
        "target's own `redis-server`, where the response cache and the counters live, at the "
        "end.\n"
    )
    if o["soak"] < 600:
        w(
            f"A {o['soak']:g} s soak is shorter than the bar's 10 minutes: the growth figure is "
            "extrapolated from it, and noisy.\n"
        )
    w(
        "| target | requests | errors | not sent | achieved req/s | p50 / p99 ms | CPU ms/req | "
        "RSS after warm-up | end | max | growth MiB/10 min | open fds after warm-up → end (max) "
        "| Redis RSS MiB |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, ph in soaked:
        if "soak_s" not in ph:
            w(f"| {label} | – | {ph.get('error', '–')} | | | | | | | | | | |")
            continue
        errors = str(ph["errors"])
        if ph.get("first_error"):
            errors += f" ({ph['first_error'][:60]})"
        w(
            f"| {label} | {ph['requests']} | {errors} | {ph['dropped']} | "
            f"{_f(ph['achieved_rate'])} | "
            f"{_f(ph['p50'], 2)} / {_f(ph['p99'], 2)} | {_f(ph['cpu_ms_per_req'], 2)} | "
            f"{_f(ph['rss_warm_mib'])} | {_f(ph['rss_end_mib'])} | {_f(ph['rss_mib'])} | "
            f"{_f(ph['slope_mib_per_10min'], 2, sign=True)} | {ph['fds_warm']} → "
            f"{ph['fds_end']} ({ph['fds_max']}) | {_f(ph.get('extra_rss_end_mib'))} |"
        )
    w("")
    w("RSS along the soak (seconds into it: MiB):\n")
    for label, ph in soaked:
        if "rss_along" in ph:
            w(f"- {label}: " + ", ".join(f"{t:g} s: {v:g}" for t, v in ph["rss_along"]))
    w("")
    return out


def soak_console_lines(report: dict[str, Any]) -> list[str]:
    """One line per soaked target for the console."""
    lines = []
    for label, ph in _soaked(report):
        if "soak_s" not in ph:
            lines.append(f"soak {label}: failed: {ph.get('error')}")
            continue
        lines.append(
            f"soak {label}: {ph['soak_s']:g} s at {ph['rate']:g} req/s, {ph['requests']} "
            f"requests, {ph['errors']} errors, {ph['dropped']} not sent (in-flight cap); RSS "
            f"{_f(ph['rss_warm_mib'])} → "
            f"{_f(ph['rss_end_mib'])} MiB (max {_f(ph['rss_mib'])}), "
            f"{_f(ph['slope_mib_per_10min'], 2, sign=True)} MiB/10 min after "
            f"{ph['warmup_s']:g} s; fds {ph['fds_warm']} → {ph['fds_end']} (max {ph['fds_max']})"
        )
    return lines
