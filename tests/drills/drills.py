"""The reliability drills of issue 22 as one suite: each drill is a test that already lives next
to the code it exercises (real processes: gateways, the simulator, Redis, a control plane),
linked here — not copied — with its target. Each prints one ``DRILL <name>: <figure>`` line.

Run them and get the table for docs/reliability.md::

    .venv/bin/python tests/drills/drills.py             # the quick slice
    TOLLWAY_DRILLS_LONG=1 .venv/bin/python tests/drills/drills.py   # + the long drills

The quick slice also runs in the normal test run (each test in its own folder);
``test_drills.py`` checks that every drill linked here still exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
#: Set to 1 to add the long drills (more calls, several breaker cool-downs, a slow cluster).
LONG_ENV = "TOLLWAY_DRILLS_LONG"


@attrs.frozen
class Drill:
    name: str
    target: str
    #: pytest node ids (relative to the repository root).
    tests: tuple[str, ...]
    long: bool = False
    #: Environment the drill runs with (the long breaker drill: more calls).
    env: tuple[tuple[str, str], ...] = ()


DRILLS = (
    Drill(
        "rpm_two_replicas_200_concurrent",
        "rate-limit overshoot 0 (rpm=50, 200 concurrent calls, 2 replicas, shared Redis)",
        (
            "plugins/rate-limits/tests/test_rate_limits_redis.py::"
            "test_200_concurrent_requests_across_two_gateways_admit_exactly_the_limit",
        ),
    ),
    Drill(
        "redis_restarted_empty_rpm",
        "rate-limit overshoot 0 after Redis restarts empty (2 replicas)",
        (
            "plugins/rate-limits/tests/test_rate_limits_heal.py::"
            "test_redis_restarted_empty_does_not_reset_the_window[rpm]",
        ),
    ),
    Drill(
        "redis_restarted_empty_rpd",
        "rpd overshoot 0 after Redis restarts empty (2 replicas)",
        (
            "plugins/rate-limits/tests/test_rate_limits_heal.py::"
            "test_redis_restarted_empty_does_not_reset_the_window[rpd]",
        ),
    ),
    Drill(
        "redis_paused_rpm",
        "requests admitted fail-open during a SIGSTOP count in the window afterwards",
        (
            "plugins/rate-limits/tests/test_rate_limits_heal.py::"
            "test_requests_admitted_while_redis_was_frozen_count_in_the_window[rpm]",
        ),
    ),
    Drill(
        "redis_paused_rpd",
        "requests admitted fail-open during a SIGSTOP count in the day afterwards",
        (
            "plugins/rate-limits/tests/test_rate_limits_heal.py::"
            "test_requests_admitted_while_redis_was_frozen_count_in_the_window[rpd]",
        ),
    ),
    Drill(
        "redis_paused_budget",
        "budget counter == ledger after Redis paused (SIGSTOP) and resumed with its data",
        (
            "plugins/budgets/tests/test_budgets_heal.py::"
            "test_spend_admitted_while_redis_was_frozen_reaches_the_counter",
        ),
    ),
    Drill(
        "kill_9_cut_calls_billed",
        "calls cut by kill -9 billed at their reservation, marked estimated, within seconds",
        (
            "plugins/budgets/tests/test_budgets_reclaim.py::"
            "test_a_killed_replicas_reservations_are_reclaimed_and_billed",
        ),
    ),
    Drill(
        "sigterm_mid_stream",
        "a stream in flight at SIGTERM finishes; exit 0",
        ("tests/test_lifecycle.py::test_sigterm_lets_in_flight_stream_finish",),
    ),
    Drill(
        "fallback_30pct_5xx_10pct_timeouts",
        "non-stream success ≥ 99.9 % across a fallback chain, the breaker opening",
        (
            "tests/test_breaker_e2e.py::"
            "test_flaky_primary_opens_its_breaker_and_every_call_succeeds",
        ),
    ),
    Drill(
        "control_plane_down_past_soft_bump",
        "known keys served from the cache through an outage of 3 soft bumps; its spend reaches "
        "the ledger after; a key created during it works",
        (
            "plugins/budgets/tests/test_drill_control_plane_down.py::"
            "test_control_plane_down_longer_than_the_soft_bump",
        ),
    ),
    Drill(
        "stream_cuts_fallback_chain",
        "a stream cut after bytes ends in the error frame (no mid-stream fallback), failures "
        "before the first byte fall back; ledger rows == streams",
        (
            "plugins/budgets/tests/test_drill_stream_cuts.py::"
            "test_streams_cut_mid_way_end_in_an_error_frame_and_are_billed_once",
        ),
    ),
    Drill(
        "soak",
        "RSS ≤ 125 % + 32 MiB and open fds ≤ +16 of their post-warm-up figure after mixed "
        "traffic (30 s; 5 min with TOLLWAY_DRILLS_LONG=1)",
        ("tests/drills/test_soak.py::test_soak_mixed_traffic_keeps_rss_and_fds_flat",),
    ),
    Drill(
        "block_budget_100_concurrency",
        "spend ≤ limit + one reservation (2 replicas, 100 concurrent clients), with and "
        "without max_tokens",
        ("plugins/budgets/tests/test_budgets_cluster.py::test_replicas_racing_at_the_limit",),
        long=True,
    ),
    Drill(
        "kill_9_under_load",
        "ledger == the client-side sum of completed calls after kill -9 under load",
        (
            "plugins/budgets/tests/test_budgets_cluster.py::"
            "test_kill_9_mid_traffic_loses_and_duplicates_nothing",
        ),
        long=True,
    ),
    Drill(
        "fallback_30pct_5xx_10pct_timeouts_long",
        "as above over 3000 calls and several cool-downs: the breaker re-opens",
        (
            "tests/test_breaker_e2e.py::"
            "test_flaky_primary_opens_its_breaker_and_every_call_succeeds",
        ),
        long=True,
        env=(("TOLLWAY_BREAKER_DRILL_CALLS", "3000"),),
    ),
)

_LINE = re.compile(r"^DRILL (\S+): (.*)$", re.MULTILINE)


def selected(long: bool) -> list[Drill]:
    return [d for d in DRILLS if long or not d.long]


def run(drill: Drill) -> tuple[bool, list[tuple[str, str]], float]:
    """Run one drill's tests; whether they passed, the figures they printed, seconds."""
    started = time.monotonic()
    proc = subprocess.run(
        # The long drills outlast the suite's per-test timeout (120 s).
        [sys.executable, "-m", "pytest", "-q", "-s", "--timeout=900", *drill.tests],
        cwd=ROOT,
        env={**os.environ, **dict(drill.env)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc.returncode == 0, _LINE.findall(proc.stdout), time.monotonic() - started


def main() -> int:
    long = os.environ.get(LONG_ENV) == "1"
    rows = []
    failed = False
    for drill in selected(long):
        ok, figures, seconds = run(drill)
        failed |= not ok
        figure = "; ".join(f for _, f in figures) or "(no figure printed)"
        rows.append((drill.name, drill.target, figure, "met" if ok else "NOT MET", seconds))
        print(f"{drill.name}: {'met' if ok else 'NOT MET'} in {seconds:.0f} s — {figure}")
    print("\n| Drill | Target | Figure (last run) | Result |\n|---|---|---|---|")
    for name, target, figure, result, _ in rows:
        print(f"| `{name}` | {target} | {figure} | {result} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
