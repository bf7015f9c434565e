"""``bench/instructions.py``: instructions per request, counted by callgrind.

It never asserts a count (the figure is a measurement, read by people, not tested); it checks
that a short run against the bare target produces one, and how the callgrind output is read.
Needs valgrind and the bench's nginx (``bench/setup.sh``); skipped, saying why, without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from instructions import callgrind_total, source_path  # noqa: E402


def test_the_totals_of_every_dump_are_added(tmp_path: Path) -> None:
    first, second = tmp_path / "callgrind.out", tmp_path / "callgrind.out.1"
    first.write_text("version: 1\nevents: Ir\nsummary: 0\nfn=x\n1 5\ntotals: 1200\n")
    second.write_text("events: Ir\nsummary: 0\ntotals: 34\n")
    assert callgrind_total([first, second]) == 1234
    assert callgrind_total([tmp_path / "callgrind.out"]) == 1200


def test_another_checkout_is_put_first_on_the_path() -> None:
    parts = source_path(REPO).split(":")
    assert parts[0] == str(REPO / "core" / "src")
    assert str(REPO / "plugins" / "telemetry" / "src") in parts
    assert str(REPO / "providers" / "openai" / "src") in parts


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_short_run_counts_the_bare_target(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("needs valgrind (apt-get install valgrind)")
    setup = subprocess.run(
        ["bash", str(REPO / "bench" / "setup.sh")], capture_output=True, text=True, timeout=900
    )
    if setup.returncode != 0:
        pytest.skip("bench/setup.sh could not provide nginx with the echo module")
    out = tmp_path / "instructions.json"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "instructions.py"),
            "--target",
            "bare",
            "--rounds",
            "1",
            "--requests",
            "5",
            "--warmup",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "bare (this tree):" in res.stdout
    report = json.loads(out.read_text())
    (run,) = report["runs"]["bare"]["this tree"]
    assert run["requests"] == 5
    assert run["instructions_per_request"] > 0
    assert report["summary"]["bare"]["this tree"] == run["instructions_per_request"]


def test_help_names_every_option() -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "instructions.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0
    for option in (
        "--target",
        "--requests",
        "--warmup",
        "--rounds",
        "--compare",
        "--env",
        "--without",
        "--json",
    ):
        assert option in res.stdout


def test_the_markdown_shows_each_target_and_what_each_plugin_costs() -> None:
    from render_costs import render_instructions

    lines = render_instructions(
        {
            "requests": 200,
            "warmup": 50,
            "rounds": 2,
            "summary": {
                "working": {"this tree": 5_800_000.0, "without tollway-telemetry": 5_200_000.0},
                "bare": {"this tree": 2_100_000.0},
            },
            "plugin_costs": {"working": {"tollway-telemetry": 600_000.0}},
        }
    )
    text = "\n".join(lines)
    assert "| Tollway working | 5.80 | – |" in text
    assert "| Tollway bare | 2.10 | – |" in text
    assert "| `tollway-telemetry` | +0.60 | +10.3 % | – |" in text
    assert "200 sequential requests" in text
