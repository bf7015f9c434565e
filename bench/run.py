"""Tollway's benchmark: the gateway against nginx direct, LiteLLM and Portkey, on one machine.

Measurements, never timed unit tests. One run starts an nginx upstream (our generated config on
a loopback port), every target, then measures them interleaved: for each repetition and each
phase, the targets in a shuffled order with an idle wait between measurements.

Phases (each target, each repetition):
  wrk       max throughput, closed loop: ``wrk -t1 -c50`` for ``--duration`` seconds
  rate<N>   latency at a fixed rate, open loop (bench/loadgen, built with ``go build`` at run time)
  sse200    a 200-event SSE body sent at once by the upstream: TTFB and relay time, one
            keep-alive connection, streams one after another
  paced     the same 200 events paced 5 ms apart: the gaps the target adds between events

With ``--soak SECONDS``, after every phase: each Tollway target in turn under a steady open-loop
load (``--soak-rate``, 200 req/s) for SECONDS, its process tree's RSS and open fds sampled
(bench/soak.py): the "RSS flat over the soak" bar.

Run from the repository root (see bench/README.md)::

    .venv/bin/python bench/run.py --quick --targets direct,bare,loaded,working
    .venv/bin/python bench/run.py --json bench-results.json --markdown docs/performance.md

Targets that cannot be installed or started are reported as "unavailable: <reason>"; the run
goes on without them.

This file is the command line; the work is in common.py (paths, versions, bodies), procs.py
(processes), targets.py (the upstream and the targets), measure.py (load tools, phases,
summary and bars), soak.py (the soak) and render.py (console and Markdown).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import ALL_TARGETS, LITELLM_SPEC, MIB, PORTKEY_SPEC, log
from counts import served_requests
from measure import Runner, build_loadgen, div, evaluate_bars, last_error_line, summarise
from procs import Proc, tree_usage
from render import (
    loadavg,
    machine_info,
    print_console,
    render_markdown,
    source_state,
    tool_versions,
)
from soak import run_soak, summarise_soak
from targets import (
    Target,
    start_nginx,
    target_direct,
    target_litellm,
    target_portkey,
)
from tollway_target import KINDS, LABELS, target_tollway


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: ~1 s per measurement, 1 rep")
    p.add_argument("--duration", type=float, default=None, help="seconds per wrk / rate run (8)")
    p.add_argument("--rates", default="20,200", help="open-loop rates, req/s (20,200)")
    p.add_argument(
        "--delay-rates",
        default="",
        help="open-loop rates against the 60 ms upstream, req/s (none by default)",
    )
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated targets")
    p.add_argument(
        "--workers",
        default="1",
        help="worker counts for the Tollway targets (1); each count above 1 adds <target>-w<N>, "
        "e.g. --workers 1,2 measures working and working-w2 (needs Redis)",
    )
    p.add_argument("--repetitions", type=int, default=None, help="rounds (2; --quick: 1)")
    p.add_argument(
        "--streams", type=int, default=None, help="at-once streams per run (10; 0: none)"
    )
    p.add_argument(
        "--paced-streams", type=int, default=None, help="paced streams per run (2; 0: none)"
    )
    p.add_argument("--idle", type=float, default=None, help="idle seconds between runs (0.5)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per target (3)")
    p.add_argument("--max-inflight", type=int, default=64, help="open-loop in-flight cap (64)")
    p.add_argument("--seed", type=int, default=None, help="shuffle seed (random)")
    p.add_argument("--json", dest="json_out", type=Path, help="write the full report as JSON")
    p.add_argument("--markdown", type=Path, help="write Markdown (docs/performance.md)")
    p.add_argument("--litellm-spec", default=LITELLM_SPEC, help=f"pip spec ({LITELLM_SPEC})")
    p.add_argument("--portkey-spec", default=PORTKEY_SPEC, help=f"npm spec ({PORTKEY_SPEC})")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="never pip/npm install LiteLLM or Portkey (report them unavailable instead)",
    )
    p.add_argument("--python", default=sys.executable, help="the venv Python that runs Tollway")
    p.add_argument(
        "--redis",
        default="auto",
        help="GATEWAY_REDIS_URL for Tollway: auto (a redis-server of each target's own, whose "
        "commands are counted; else db 13 of a Redis on 127.0.0.1:6379 if one answers), off, "
        "or a URL",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: re-render a report saved with --json (with --markdown)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--soak",
        type=float,
        default=0.0,
        help="after the other phases, SECONDS of steady open-loop load against each Tollway "
        "target, its RSS and open fds sampled (0: no soak; the bar is for 600)",
    )
    p.add_argument(
        "--soak-rate", type=float, default=200.0, help="the soak's open-loop rate, req/s (200)"
    )
    p.add_argument(
        "--soak-targets",
        default="",
        help="comma-separated Tollway targets to soak (default: every Tollway target in the run;"
        " the bar judges working)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (1.0 if quick else 8.0)
    args.repetitions = args.repetitions or (1 if quick else 2)
    args.warmup = args.warmup or (1.0 if quick else 3.0)
    # 0 streams skips that streaming phase.
    args.streams = args.streams if args.streams is not None else (3 if quick else 10)
    args.paced_streams = (
        args.paced_streams if args.paced_streams is not None else (1 if quick else 2)
    )
    args.idle = args.idle if args.idle is not None else (0.2 if quick else 0.5)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.delay_rates = [float(r) for r in args.delay_rates.split(",") if r.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown target(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_TARGETS)}")
    if "direct" not in args.targets:
        args.targets.insert(0, "direct")  # every "added" figure needs it
    try:
        args.workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    except ValueError:
        p.error(f"--workers takes whole numbers separated by commas, not {args.workers!r}")
    if not args.workers or args.workers[0] < 1:
        p.error("--workers counts must be 1 or more")
    if args.soak < 0 or args.soak_rate <= 0:
        p.error("--soak takes seconds (0: off) and --soak-rate a positive rate")
    args.targets += [f"{t}-w{n}" for t in KINDS if t in args.targets for n in args.workers if n > 1]
    return args


def _workers_starter(
    kind: str, work: Path, nginx_port: int, python: str, redis: str, workers: int
) -> Callable[[], Target]:
    return lambda: target_tollway(kind, work, nginx_port, python, redis, workers)


def is_tollway(name: str) -> bool:
    """``bare``, ``loaded``, ``working`` and their ``-wN`` variants."""
    return name.partition("-w")[0] in KINDS


def check_spans(t: Target, wait: float = 20.0) -> dict[str, Any]:
    """The spans the target's OTLP receiver got against the chat requests the gateway served
    (its own ``gateway_http_requests_total``), after waiting up to ``wait`` s for the exporter's
    last batches."""
    assert t.otlp is not None
    base = t.urls["instant"].removesuffix("/v1/chat/completions")
    deadline = time.monotonic() + wait
    served = served_requests(base)
    got = t.otlp.snapshot()
    while got["roots"] < served and time.monotonic() < deadline:
        time.sleep(0.5)
        served, got = served_requests(base), t.otlp.snapshot()
    log(
        f"{t.name}: {got['spans']} spans received ({got['roots']} request spans) for {served} "
        f"chat requests served"
    )
    return {"requests": served, **got}


def upgrade_report(report: dict[str, Any]) -> dict[str, Any]:
    """A report saved before issue 25 called the "loaded" target "full": rename it."""

    def rename(name: str) -> str:
        return "loaded" + name[4:] if name == "full" or name.startswith("full-w") else name

    for key in ("summary", "raw"):
        if key in report:
            report[key] = {rename(k): v for k, v in report[key].items()}
    for t in report.get("targets", []):
        if t["name"] != rename(t["name"]):
            t["name"] = rename(t["name"])
            t["label"] = t["label"].replace("Tollway full", "Tollway loaded")
    return report


def options_workers(report: dict[str, Any]) -> list[int]:
    """The worker counts above 1 a report measured."""
    return [n for n in report["options"].get("workers", [1]) if n > 1]


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    try:
        yield d
    finally:
        if keep:
            log(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        # Re-render a saved report (no measuring).
        report = upgrade_report(json.loads(args.from_json.read_text()))
        for name, per in report.get("raw", {}).items():
            if per.get("soak"):  # the soak's figures as this code computes them
                report["summary"][name]["soak"] = summarise_soak(per["soak"][0])
        report["bars"] = evaluate_bars(report["summary"], report["options"]["rates"])
        print_console(report)
        if args.markdown:
            args.markdown.write_text(render_markdown(report))
            log(f"wrote {args.markdown}")
        return 0
    started = time.monotonic()
    rng = random.Random(args.seed)
    command = ".venv/bin/python bench/run.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    report: dict[str, Any] = {
        "started_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command.strip(),
        "machine": machine_info(),
        "source": source_state(),
        "load_before": loadavg(),
        "options": {
            "duration": args.duration,
            "rates": args.rates,
            "delay_rates": args.delay_rates,
            "repetitions": args.repetitions,
            "streams": args.streams,
            "paced_streams": args.paced_streams,
            "idle": args.idle,
            "max_inflight": args.max_inflight,
            "quick": args.quick,
            "workers": args.workers,
            "soak": args.soak,
            "soak_rate": args.soak_rate,
        },
    }
    log(f"load average before: {report['load_before']}")
    if shutil.which("wrk") is None:
        log("wrk is missing: run bench/setup.sh")
        return 2
    targets: list[Target] = []
    procs: list[Proc] = []
    with workdir(args.keep) as work:
        try:
            loadgen = build_loadgen(work)
            nginx, nginx_port = start_nginx(work)
            procs.append(nginx)
            log(f"nginx upstream on 127.0.0.1:{nginx_port}")
            report["tools"] = tool_versions()
            starters: dict[str, Callable[[], Target]] = {
                "direct": lambda: target_direct(nginx_port, nginx),
                "litellm": lambda: target_litellm(
                    work, nginx_port, args.litellm_spec, not args.no_install
                ),
                "portkey": lambda: target_portkey(
                    work, nginx_port, args.portkey_spec, not args.no_install
                ),
            }
            labels = {
                "direct": "nginx direct",
                **LABELS,
                "litellm": "LiteLLM proxy",
                "portkey": "Portkey gateway",
            }
            for kind in KINDS:
                starters[kind] = _workers_starter(
                    kind, work, nginx_port, args.python, args.redis, 1
                )
            for n in (w for w in args.workers if w > 1):
                for kind in KINDS:
                    starters[f"{kind}-w{n}"] = _workers_starter(
                        kind, work, nginx_port, args.python, args.redis, n
                    )
                    labels[f"{kind}-w{n}"] = f"{labels[kind]}, {n} workers"
            runner = Runner(
                work,
                loadgen,
                args.duration,
                args.streams,
                args.paced_streams,
                args.max_inflight,
                args.idle,
            )
            for name in args.targets:
                log(f"starting {name}")
                try:
                    t = starters[name]()
                    procs.extend(t.extra_procs)
                    if t.proc is not None and t.proc is not nginx:
                        procs.append(t.proc)
                    log(f"{name} up ({t.version}); warming up")
                    runner.warm(t, args.warmup)
                    assert t.proc is not None
                    t.rss_idle = tree_usage(t.proc.pid)[1]
                except Exception as exc:  # reported, never fatal
                    reason = str(exc).strip().replace("\n", " ")[:500]
                    log(f"{name} unavailable: {reason}")
                    t = Target(name, labels[name], unavailable=reason)
                targets.append(t)
            live = [t for t in targets if t.unavailable is None]
            phases = [
                "wrk",
                *(f"rate{r:g}" for r in args.rates),
                *(f"delay{r:g}" for r in args.delay_rates),
                *(["sse200"] if args.streams else []),
                *(["paced"] if args.paced_streams else []),
            ]
            results: dict[str, dict[str, list[dict[str, Any]]]] = {
                t.name: {ph: [] for ph in phases} for t in live
            }
            for rep in range(args.repetitions):
                for phase in phases:
                    order = live[:]
                    rng.shuffle(order)
                    for t in order:
                        log(f"rep {rep + 1}/{args.repetitions} {phase:<8} {t.name}")
                        try:
                            res = runner.measure(t, phase)
                        except Exception as exc:
                            res = {"error": str(exc)[:300]}
                            log(f"  failed: {res['error']}")
                        results[t.name][phase].append(res)
                        time.sleep(args.idle)
            if args.soak:
                # After the other phases, one target at a time: each soak has the machine's
                # load generator to itself.
                chosen = {n.strip() for n in args.soak_targets.split(",") if n.strip()}
                soaked = [
                    t for t in live if is_tollway(t.name) and (not chosen or t.name in chosen)
                ]
                for t in soaked:
                    log(f"soak {args.soak:g} s at {args.soak_rate:g} req/s: {t.name}")
                    try:
                        raw = run_soak(runner, t, args.soak, args.soak_rate)
                    except Exception as exc:
                        raw = {"error": str(exc)[:300]}
                        log(f"  failed: {raw['error']}")
                    results[t.name]["soak"] = [raw]
                    time.sleep(args.idle)
            summary = {
                name: {
                    ph: summarise_soak(runs[0]) if ph == "soak" else summarise(runs, ph)
                    for ph, runs in per.items()
                }
                for name, per in results.items()
            }
            spans = {t.name: check_spans(t) for t in live if t.otlp is not None}
            for t in live:
                if any(ph.get("errors") or ph.get("error") for ph in summary[t.name].values()):
                    line = last_error_line(t)
                    if line:
                        t.notes.append(f"its log at the end of the run: `{line}`")
        finally:
            for proc in reversed(procs):
                proc.stop()
            for t in targets:
                if t.otlp is not None:
                    t.otlp.close()
    report["load_after"] = loadavg()
    report["wall_s"] = time.monotonic() - started
    try:
        load1 = max(float(report["load_before"].split()[0]), float(report["load_after"].split()[0]))
    except ValueError:
        load1 = 0.0
    # The benchmark itself keeps about 1.5 cores busy; load before it means other work.
    report["loaded"] = float(report["load_before"].split()[0] or 0) > 0.7 or load1 > 3.0
    report["targets"] = [
        {
            "name": t.name,
            "label": t.label,
            "version": t.version,
            "notes": t.notes,
            "unavailable": t.unavailable,
            "rss_idle_mib": t.rss_idle / MIB,
        }
        for t in targets
    ]
    report["summary"] = summary
    report["spans"] = spans
    report["raw"] = results
    get = lambda n: summary.get(n, {}).get("wrk", {}).get("rps")  # noqa: E731
    report["ratios"] = {
        "working/bare": div(get("working"), get("bare")),
        "working/LiteLLM": div(get("working"), get("litellm")),
        "working/Portkey": div(get("working"), get("portkey")),
        "loaded/bare": div(get("loaded"), get("bare")),
        "working/loaded": div(get("working"), get("loaded")),
        "bare/LiteLLM": div(get("bare"), get("litellm")),
        "direct/working": div(get("direct"), get("working")),
    }
    for n in options_workers(report):
        for kind in KINDS:
            if f"{kind}-w{n}" in summary:
                report["ratios"][f"{kind}-w{n}/{kind}"] = div(get(f"{kind}-w{n}"), get(kind))
    report["bars"] = evaluate_bars(summary, args.rates)
    print_console(report)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        log(f"wrote {args.json_out}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(report))
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
