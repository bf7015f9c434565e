"""The "What each request costs" section of docs/performance.md: Redis commands and store rows
per request, the spans the bench's OTLP receiver got, and the per-plugin CPU of a profile run
(``bench/profile_hotpath.py --json bench/results/profile-working.json``)."""

from __future__ import annotations

import json
from typing import Any

from common import BENCH

PROFILE = BENCH / "results" / "profile-working.json"
INSTRUCTIONS = BENCH / "results" / "instructions.json"


def _f(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) else "–"


def _top(delta: dict[str, int], requests: int, n: int = 6) -> str:
    if not delta or not requests:
        return "–"
    items = sorted(delta.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v / requests:.2f}" for k, v in items)


def render_costs(report: dict[str, Any]) -> list[str]:
    s = report["summary"]
    labels = {t["name"]: t["label"] for t in report["targets"]}
    rows = [
        (name, ph)
        for name, per in s.items()
        for phname, ph in per.items()
        if phname == "wrk" and ("redis_per_req" in ph or "store_per_req" in ph)
    ]
    spans = report.get("spans") or {}
    profile = json.loads(PROFILE.read_text()) if PROFILE.exists() else None
    counted = json.loads(INSTRUCTIONS.read_text()) if INSTRUCTIONS.exists() else None
    if not rows and not spans and not profile and not counted:
        return []
    out = ["## What each request costs (besides time)\n"]
    w = out.append
    if rows:
        w(
            "Under `wrk` (the throughput phase), summed over the repetitions and divided by the "
            "requests wrk completed. *Round trips*: the gateway's own "
            "`gateway_redis_round_trips_total` (each command or pipeline sent is one), split into "
            "those made while serving a request and those made in the background (settlement "
            "flushes for many requests together, lease renewals, live-stats sharing). "
            "*Redis commands*: `INFO commandstats` of a `redis-server` "
            "the bench started for that target alone, before and after (commands a Lua script "
            "runs are counted too, so this bounds the round trips from above). *Store rows*: "
            "rows added to the control-plane store's tables (SQLite), before and after; "
            "writes batched off the request path that land after the phase ends are counted in "
            "the next one.\n"
        )
        w(
            "| target | round trips/req: request path | background | Redis commands/req | "
            "by command (per req) | store rows/req | by table |"
        )
        w("|---|---|---|---|---|---|---|")
        for name, ph in rows:
            req = ph.get("requests") or 0
            w(
                f"| {labels.get(name, name)} | {_f(ph.get('trips_request_per_req'))} | "
                f"{_f(ph.get('trips_background_per_req'))} | {_f(ph.get('redis_per_req'))} | "
                f"{_top(ph.get('redis_delta') or {}, req)} | {_f(ph.get('store_per_req'))} | "
                f"{_top(ph.get('store_delta') or {}, req)} |"
            )
        w("")
    for name, got in spans.items():
        ok = got["roots"] == got["requests"] and not got["errors"]
        w(
            f"**Spans exported by {labels.get(name, name)}**: the bench's loopback OTLP/HTTP "
            f"receiver got {got['spans']} spans ({got['roots']} request spans, in "
            f"{got['batches']} batches, {got['errors']} undecodable) for {got['requests']} chat "
            "requests the gateway served (its `gateway_http_requests_total`, warm-ups "
            f"included): {'one span per request' if ok else '**not one span per request**'}.\n"
        )
    if profile:
        w(
            "**Where the CPU goes** (`bench/profile_hotpath.py --target working`, py-spy "
            + ("sampling the thread that holds the GIL, " if profile.get("gil") else "")
            + f"at {profile.get('rate', 250)} Hz for {profile.get('seconds', '?')} s under "
            f"`wrk -c50`, {profile['samples']} samples, {_f(profile['wrk'].get('rps'), 0)} "
            "req/s during the recording; "
            f"load average {profile.get('load', '?')}). Share of all samples with a frame of "
            "each plugin package on the stack (inclusive, so nested plugins overlap):\n"
        )
        w("| plugin package | share of CPU samples |")
        w("|---|---|")
        for name, share in profile["by_plugin"][:12]:
            w(f"| `{name}` | {share:.1f} % |")
        w("")
        w("By layer of the innermost frame:\n")
        w("| layer | share |")
        w("|---|---|")
        for name, share in profile["by_layer"][:10]:
            w(f"| {name} | {share:.1f} % |")
        w("")
        w("Our code, inclusive (top 10):\n")
        w("| function | share |")
        w("|---|---|")
        for name, share in profile["ours_inclusive"][:10]:
            w(f"| `{name}` | {share:.1f} % |")
        w("")
    if counted:
        out.extend(render_instructions(counted))
    return out


def render_instructions(counted: dict[str, Any]) -> list[str]:
    """``bench/instructions.py --json bench/results/instructions.json``: instructions per
    request of each target and, per plugin, what the working target counts less without it."""
    out: list[str] = []
    w = out.append
    summary = counted.get("summary") or {}
    w(
        "**Instructions per request** (`bench/instructions.py`: the gateway under callgrind, "
        f"{counted.get('requests', '?')} sequential requests counted after "
        f"{counted.get('warmup', '?')} unmeasured, every thread; the median of "
        f"{counted.get('rounds', '?')} rounds, each shown: the same code usually repeats "
        "within about 2 %, whatever else the machine does, but a round in which background "
        "work of the gateway landed among the counted requests can be off by more). "
        "Sequential requests share no Redis pipeline, so this is one request on its own:\n"
    )
    w("| target | million instructions per request | each round |")
    w("|---|---|---|")
    for kind, by_variant in summary.items():
        value = by_variant.get("this tree")
        if isinstance(value, int | float):
            each = ", ".join(
                f"{r['instructions_per_request'] / 1e6:.2f}"
                for r in ((counted.get("runs") or {}).get(kind) or {}).get("this tree", [])
            )
            w(f"| Tollway {kind} | {value / 1e6:.2f} | {each or '–'} |")
    w("")
    costs = counted.get("plugin_costs") or {}
    for kind, by_plugin in costs.items():
        full = (summary.get(kind) or {}).get("this tree")
        if not by_plugin or not isinstance(full, int | float) or not full:
            continue
        w(
            f"What each plugin costs the {kind} target: its count minus the count with that "
            "plugin disabled (`TOLLWAY_DISABLE_PLUGINS`), so its hooks, its Redis calls' "
            "encoding and parsing, and the response headers it adds:\n"
        )
        w(
            "| plugin | million instructions per request | share of the target "
            "| without it, each round |"
        )
        w("|---|---|---|---|")
        runs = (counted.get("runs") or {}).get(kind) or {}
        for name, cost in sorted(by_plugin.items(), key=lambda kv: -kv[1]):
            each = ", ".join(
                f"{r['instructions_per_request'] / 1e6:.2f}"
                for r in runs.get(f"without {name}", [])
            )
            w(f"| `{name}` | {cost / 1e6:+.2f} | {100 * cost / full:+.1f} % | {each or '–'} |")
        w("")
    return out
