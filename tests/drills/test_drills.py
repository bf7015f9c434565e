"""Every drill linked in drills.py names a test that exists (a renamed test would otherwise
drop out of the suite silently), and the quick slice leaves out the long ones."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from drills import DRILLS, ROOT, selected


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_linked_drill_exists() -> None:
    missing = []
    for drill in DRILLS:
        for node_id in drill.tests:
            file, _, name = node_id.partition("::")
            path = ROOT / file
            if not path.is_file() or name.split("[")[0] not in _tests_in(path):
                missing.append(f"{drill.name}: {node_id}")
    assert not missing, missing


def test_the_quick_slice_leaves_out_the_long_drills() -> None:
    quick = selected(long=False)
    assert quick and all(not d.long for d in quick)
    assert len(selected(long=True)) == len(DRILLS)
    assert len({d.name for d in DRILLS}) == len(DRILLS)
