"""Instructions per request: what a Tollway target costs, counted by valgrind, not timed.

On a shared or virtual machine a wall-clock A/B of the same code moves by a fifth from one run
to the next; the CPU instructions the gateway executes per request do not (about ±1.5 %). This
starts the nginx upstream and a target exactly as bench/run.py does, with the gateway process
under ``valgrind --tool=callgrind`` with counting off; sends ``--warmup`` requests, turns
counting on (``callgrind_control -i on``), sends ``--requests`` requests one after another on
one keep-alive connection, turns it off and reads the total. Every thread of the gateway is
counted (the span exporter's too); background timers add a little, which is why each target is
measured ``--rounds`` times and the median reported.

``--compare DIR`` measures the sources of another checkout (``git worktree add DIR REV``) the
same way, interleaved, with DIR's packages first on ``PYTHONPATH`` (same venv, same
dependencies): the change between two commits, in instructions.

    .venv/bin/python bench/instructions.py --target working --requests 200
    git worktree add /tmp/base HEAD~3
    .venv/bin/python bench/instructions.py --compare /tmp/base --json out.json

Requests are sequential, so Redis pipelines are not shared between requests as they are under
load: this counts the cost of one request on its own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VARY_MARKER, request_body
from render import loadavg
from targets import Target, start_nginx
from tollway_target import KINDS, target_tollway


def callgrind_total(paths: list[Path]) -> int:
    """The instructions counted in callgrind output files (the ``totals:`` line of each dump;
    ``summary:`` is 0 when counting was switched on and off by ``callgrind_control``)."""
    total = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def source_path(root: Path) -> str:
    """``PYTHONPATH`` that puts a checkout's core, plugins and providers first."""
    dirs = [root / "core" / "src"]
    for group in ("plugins", "providers"):
        dirs += sorted(p / "src" for p in (root / group).iterdir() if (p / "src").is_dir())
    return os.pathsep.join(str(d) for d in dirs)


class Client:
    """Sequential requests on one keep-alive connection, every body different."""

    def __init__(self, target: Target) -> None:
        url = target.urls["instant"].removeprefix("http://")
        hostport, _, path = url.partition("/")
        host, _, port = hostport.partition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.path = "/" + path
        self.body = request_body(target.models["instant"], stream=False, vary=target.vary)
        self.headers = {**target.headers["instant"], "Content-Type": "application/json"}
        self.sent = 0

    def send(self) -> None:
        self.sent += 1
        body = self.body.replace(VARY_MARKER.encode(), str(self.sent).encode())
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"request {self.sent} answered HTTP {resp.status}")


def measure(
    kind: str,
    work: Path,
    nginx_port: int,
    python: str,
    args: argparse.Namespace,
    variant_env: dict[str, str],
) -> dict[str, Any]:
    """One target, once: instructions per request and the wall time they took."""
    out = work / "callgrind.out"
    wrap = (
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
    )
    env = dict(item.split("=", 1) for item in args.env)
    env.update(variant_env)
    target = target_tollway(kind, work, nginx_port, python, args.redis, wrap=wrap, extra_env=env)
    assert target.proc is not None
    try:
        client = Client(target)
        for _ in range(args.warmup):
            client.send()
        pid = str(target.proc.pid)
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        started = time.monotonic()
        for _ in range(args.requests):
            client.send()
        wall = time.monotonic() - started
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        total = callgrind_total(sorted(work.glob("callgrind.out*")))
    finally:
        for proc in reversed([*target.extra_procs, target.proc]):
            proc.stop()
        if target.otlp is not None:
            target.otlp.close()
    if total <= 0:
        raise RuntimeError(f"callgrind counted nothing for {kind} (see {work})")
    return {
        "instructions_per_request": total / args.requests,
        "requests": args.requests,
        "wall_s": round(wall, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--target",
        default="working",
        help=f"comma-separated targets ({', '.join(KINDS)}; default working)",
    )
    p.add_argument("--requests", type=int, default=200, help="requests counted (200)")
    p.add_argument("--warmup", type=int, default=50, help="requests before counting (50)")
    p.add_argument("--rounds", type=int, default=2, help="measurements per target (2)")
    p.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also measure another checkout's sources (a git worktree), interleaved",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set for the gateway and the CLI calls that set it up (repeatable), e.g. "
        "TOLLWAY_DISABLE_PLUGINS=tollway-telemetry",
    )
    p.add_argument(
        "--without",
        default="",
        metavar="PLUGIN,...",
        help="also measure the target with each of these plugins disabled (one at a time, "
        "interleaved; not for bare, which loads none of them): what each plugin costs per "
        "request",
    )
    p.add_argument("--redis", default="auto", help="as bench/run.py --redis (auto)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", dest="json_out", type=Path, help="write the results as JSON")
    args = p.parse_args()
    if any("=" not in item for item in args.env):
        p.error("--env takes NAME=VALUE")
    kinds = [k for k in args.target.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        p.error(f"--target: unknown {unknown or 'empty'}; choose from {', '.join(KINDS)}")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
    variants: list[tuple[str, dict[str, str]]] = [("this tree", {})]
    if args.compare is not None:
        if not (args.compare / "core" / "src" / "tollway").is_dir():
            p.error(f"--compare {args.compare}: not a Tollway checkout")
        variants.append((str(args.compare), {"PYTHONPATH": source_path(args.compare.resolve())}))
    without = [name for name in args.without.split(",") if name]
    for name in without:
        variants.append((f"without {name}", {"TOLLWAY_DISABLE_PLUGINS": name}))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    load = loadavg()
    with tempfile.TemporaryDirectory(prefix="tollway-instructions-") as tmp:
        root = Path(tmp)
        nginx, port = start_nginx(root)
        try:
            for rnd in range(args.rounds):
                for kind in kinds:
                    for index, (label, variant_env) in enumerate(variants):
                        if kind == "bare" and label.startswith("without "):
                            continue  # bare loads none of those plugins
                        work = root / f"{kind}-{rnd}-{index}"
                        work.mkdir()
                        print(f"[{kind}, {label}, round {rnd + 1}] ...", file=sys.stderr)
                        one = measure(kind, work, port, args.python, args, variant_env)
                        results.setdefault(kind, {}).setdefault(label, []).append(one)
                        print(
                            f"  {one['instructions_per_request'] / 1e6:.3f} M instructions "
                            f"per request ({one['wall_s']} s under callgrind)",
                            file=sys.stderr,
                        )
        finally:
            nginx.stop()
    summary: dict[str, dict[str, float]] = {}
    costs: dict[str, dict[str, float]] = {}
    for kind, by_tree in results.items():
        for label, runs in by_tree.items():
            median = statistics.median(r["instructions_per_request"] for r in runs)
            summary.setdefault(kind, {})[label] = median
            spread = ", ".join(f"{r['instructions_per_request'] / 1e6:.3f}" for r in runs)
            print(f"{kind} ({label}): {median / 1e6:.3f} M instructions/request ({spread})")
        if args.compare is not None:
            new, old = summary[kind]["this tree"], summary[kind][str(args.compare)]
            print(f"{kind}: this tree vs {args.compare}: {100 * (new - old) / old:+.1f} %")
        full = summary[kind]["this tree"]
        for name in without if kind != "bare" else ():
            cost = full - summary[kind][f"without {name}"]
            costs.setdefault(kind, {})[name] = cost
            print(f"{kind}: {name} costs {cost / 1e6:+.3f} M ({100 * cost / full:+.1f} %)")
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "load_before": load,
                    "requests": args.requests,
                    "warmup": args.warmup,
                    "rounds": args.rounds,
                    "summary": summary,
                    "plugin_costs": costs,
                    "runs": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
