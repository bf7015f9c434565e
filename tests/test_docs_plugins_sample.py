"""The ``tollway plugins`` samples in docs/ match the command's real output.

Every row of a sample that names an installed plugin must be the row the command prints (same
version, conformance and hooks; spacing aside), and every sample's header is the command's.
Rows for example plugins that are not installed (``tollway-block-words``, a rendered template)
are checked for shape only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def _rows(text: str) -> dict[str, str]:
    return {line.split()[0]: " ".join(line.split()) for line in text.splitlines() if line.strip()}


def _samples() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "$ tollway plugins":
                continue
            block = []
            for row in lines[i + 1 :]:
                if row.startswith(("$", "```")):
                    break
                block.append(row)
            found.append((f"{path.name}:{i + 1}", block))
    return found


def test_plugins_samples_match_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tollway", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    real = _rows(out)
    samples = _samples()
    assert samples, "no `$ tollway plugins` sample found in docs/"
    for where, block in samples:
        rows = [r for r in block if r.strip() and r.strip() not in ("...", "…")]
        assert rows and " ".join(rows[0].split()) == real["NAME"], f"{where}: header {rows[0]!r}"
        for row in rows[1:]:
            name = row.split()[0]
            if name in real:
                assert " ".join(row.split()) == real[name], (
                    f"{where}: the sample row of {name} is out of date:\n  docs: "
                    f"{' '.join(row.split())}\n  real: {real[name]}"
                )
            else:
                assert re.match(r"^tollway-[a-z0-9-]+ +\d+\.\d+\.\d+ +(declared|-) +\w", row), (
                    f"{where}: {row!r} does not have the command's columns"
                )
