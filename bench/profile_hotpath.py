"""Profile Tollway (every installed plugin on) under ``wrk -c50`` with py-spy, grouped by layer.

Starts the nginx upstream and a "working" gateway (``--target``: or "loaded", "bare") exactly as
bench/run.py does, warms it up, runs
wrk against it and records the gateway process with ``py-spy record`` meanwhile (sampling, non
blocking, idle frames dropped). Then prints where the CPU went:

* by **layer** of the innermost frame (server, framework, upstream client, our code, plugin
  libraries, stdlib: logging/json/asyncio/...), and by **owner** (the innermost non-stdlib
  frame's layer: who asked for that stdlib time);
* the top functions by self time and our code's functions by inclusive time.

    .venv/bin/pip install py-spy          # once (needs ptrace: root, or CAP_SYS_PTRACE)
    .venv/bin/python bench/profile_hotpath.py --seconds 10 [--raw out.txt] [--json out.json]

``--json bench/results/profile-working.json`` (of the working target) is what bench/run.py's
Markdown shows under "What each request costs".
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import request_body
from measure import Runner, parse_wrk, wrk_script
from procs import Proc
from render import loadavg
from targets import start_nginx
from tollway_target import KINDS, target_tollway

# Path fragments → layer, first match wins.
LAYERS: list[tuple[str, str]] = [
    ("/tollway_", "our code (plugins, providers)"),
    ("/tollway/", "our code (core)"),
    ("/hypercorn/", "server (Hypercorn, h11)"),
    ("/h11/", "server (Hypercorn, h11)"),
    ("/h2/", "server (Hypercorn, h11)"),
    ("/wsproto/", "server (Hypercorn, h11)"),
    ("/uvloop/", "server (Hypercorn, h11)"),
    ("/quart/", "framework (Quart, Werkzeug)"),
    ("/werkzeug/", "framework (Quart, Werkzeug)"),
    ("/flask/", "framework (Quart, Werkzeug)"),
    ("/blinker/", "framework (Quart, Werkzeug)"),
    ("/aiohttp/", "upstream client (aiohttp, yarl, multidict)"),
    ("/yarl/", "upstream client (aiohttp, yarl, multidict)"),
    ("/multidict/", "upstream client (aiohttp, yarl, multidict)"),
    ("/aiohappyeyeballs/", "upstream client (aiohttp, yarl, multidict)"),
    ("/aiosignal/", "upstream client (aiohttp, yarl, multidict)"),
    ("/frozenlist/", "upstream client (aiohttp, yarl, multidict)"),
    ("/propcache/", "upstream client (aiohttp, yarl, multidict)"),
    ("/pluggy/", "library: pluggy"),
    ("/redis/", "library: redis-py"),
    ("/opentelemetry/", "library: opentelemetry"),
    ("/prometheus_client/", "library: prometheus-client"),
    ("/logging/", "stdlib: logging"),
    ("/json/", "stdlib: json"),
    ("/asyncio/", "stdlib: asyncio"),
    ("/contextvars", "stdlib: asyncio"),
    ("/ssl.py", "stdlib: other"),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def layer_of(path: str) -> str:
    for fragment, layer in LAYERS:
        if fragment in path:
            return layer
    if "site-packages/" in path:
        return "library: " + path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/lib/python3" in path or path.startswith("<"):
        return "stdlib: other"
    return "other"


def parse_raw(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's collapsed stacks: ``frame;frame;... count`` (outermost first)."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw.strip())
            frames.append((m.group("func"), m.group("file")) if m else (raw.strip(), ""))
        # drop py-spy's "process N" / "thread" pseudo-frames
        frames = [f for f in frames if f[1]]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


#: Frames that only start the process and the event loop: never the "owner" of CPU time.
_BOOTSTRAP = ("tollway/__main__.py", "tollway/cli.py", "tollway/_server.py", "/click/core.py")
_PLUGIN_PKG = re.compile(r"/(tollway_[a-z0-9_]+)/")


def _bootstrap(path: str) -> bool:
    return path.endswith(_BOOTSTRAP) or "/click/" in path


def summarise(stacks: list[tuple[list[tuple[str, str]], int]], top: int = 15) -> dict[str, Any]:
    total = sum(c for _, c in stacks) or 1
    by_layer: collections.Counter[str] = collections.Counter()
    by_owner: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    ours_incl: collections.Counter[str] = collections.Counter()
    by_plugin: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        func, path = frames[-1]
        by_layer[layer_of(path)] += count
        self_fn[f"{func} ({_short(path)})"] += count
        owner = "event loop (uvloop, asyncio scheduling)"
        for _func, p in reversed(frames):
            layer = layer_of(p)
            if not layer.startswith("stdlib") and not _bootstrap(p):
                owner = layer
                break
        if frames[0][0] == "Thread._bootstrap":
            owner = "background threads" + ("" if owner.startswith("event loop") else f": {owner}")
        by_owner[owner] += count
        seen: set[str] = set()
        plugins: set[str] = set()
        for f, p in frames:
            if layer_of(p).startswith("our code") and not _bootstrap(p):
                key = f"{f} ({_short(p)})"
                if key not in seen:
                    seen.add(key)
                    ours_incl[key] += count
            m = _PLUGIN_PKG.search(p)
            if m:
                plugins.add(m.group(1))
        for plugin in plugins:
            by_plugin[plugin] += count

    def pct(counter: collections.Counter[str], n: int | None = None) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "by_layer": pct(by_layer),
        "by_owner": pct(by_owner),
        "by_plugin": pct(by_plugin),
        "top_self": pct(self_fn, top),
        "ours_inclusive": pct(ours_incl, top),
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="recording time (10)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second (250)")
    p.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    p.add_argument("--json", dest="json_out", type=Path, help="write the summary as JSON")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--redis", default="auto", help="as bench/run.py --redis (auto)")
    p.add_argument("--target", default="working", choices=KINDS, help="which gateway (working)")
    p.add_argument(
        "--all-threads",
        dest="gil",
        action="store_false",
        help="sample every running thread (default: only the thread holding the GIL, so a "
        "background thread inside SQLite or a socket call, GIL released, is not counted as "
        "the gateway's Python CPU)",
    )
    args = p.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    procs: list[Proc] = []
    target = None
    load = loadavg()
    with tempfile.TemporaryDirectory(prefix="tollway-profile-") as tmp:
        work = Path(tmp)
        try:
            nginx, port = start_nginx(work)
            procs.append(nginx)
            target = target_tollway(args.target, work, port, args.python, args.redis)
            assert target.proc is not None
            procs.extend(target.extra_procs)
            procs.append(target.proc)
            runner = Runner(work, Path("/nonexistent"), args.seconds, 0, 0, 0, 0)
            runner._wrk(target, 2, connections=10)  # warm-up
            raw = work / "pyspy.txt"
            wrk = subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    "-c50",
                    f"-d{round(args.seconds) + 3}s",
                    "-s",
                    str(
                        wrk_script(
                            work / "wrk.lua",
                            request_body("bench-instant", stream=False, vary=target.vary),
                            target.headers["instant"],
                        )
                    ),
                    target.urls["instant"],
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)
            rec = subprocess.run(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(target.proc.pid),
                    "--duration",
                    str(round(args.seconds)),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--full-filenames",
                    "--nonblocking",
                    *(["--gil"] if args.gil else []),
                    "--output",
                    str(raw),
                ],
                capture_output=True,
                text=True,
                timeout=args.seconds + 60,
            )
            wrk_out, _ = wrk.communicate(timeout=60)
            if rec.returncode != 0 or not raw.exists():
                print(f"py-spy failed: {rec.stderr.strip()}", file=sys.stderr)
                return 1
            text = raw.read_text()
            if args.raw:
                args.raw.write_text(text)
        finally:
            for proc in reversed(procs):
                proc.stop()
            if target is not None and target.otlp is not None:
                target.otlp.close()
    summary = summarise(parse_raw(text))
    summary["wrk"] = parse_wrk(wrk_out)
    summary["plugins"] = target.notes[0]
    summary.update(
        target=args.target, seconds=args.seconds, rate=args.rate, load=load, gil=args.gil
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrk -c50 during the recording: {summary['wrk']['rps']:.0f} req/s")
    print(f"{target.notes[0]}\n{summary['samples']} samples")
    for title, key in (
        ("CPU by layer of the innermost frame", "by_layer"),
        ("CPU by owner (innermost non-stdlib frame)", "by_owner"),
        ("Plugin packages, inclusive", "by_plugin"),
        ("Top functions by self time", "top_self"),
        ("Our code, inclusive", "ours_inclusive"),
    ):
        print(f"\n{title}:")
        for name, share in summary[key]:
            print(f"  {share:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
