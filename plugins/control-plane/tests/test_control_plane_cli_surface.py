"""The CLI's public surface stays put: every ``tollway`` control plane command keeps its name,
arguments, options, help texts and rendered ``--help`` output.

``data/control_plane_cli_surface.json`` was generated from the commands as they were before
their scaffolding was folded into shared helpers. After a deliberate change to a command,
regenerate it with ``python plugins/control-plane/tests/test_control_plane_cli_surface.py`` and
review the diff.

The surface is read in a fresh interpreter: click caches each command's help option on the
(module-level) command objects, so a test that mounted them under a root without ``-h`` would
otherwise change what this one sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner

from tollway_control_plane.cli import add_commands

SNAPSHOT = Path(__file__).parent / "data" / "control_plane_cli_surface.json"


def _root() -> click.Group:
    cli = click.Group("tollway", context_settings={"help_option_names": ["-h", "--help"]})
    add_commands(cli)
    return cli


def _paths(group: click.Group) -> list[tuple[str, ...]]:
    """Every command below ``group`` (sub-groups too), in the order they were added."""
    paths: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        paths.append((name,))
        if isinstance(command, click.Group):
            paths += [(name, *sub) for sub in _paths(command)]
    return paths


def surface() -> dict[str, Any]:
    """Each command's structure (click's info dict) and its ``--help`` at 80 columns."""
    root = _root()
    runner = CliRunner()
    helps: dict[str, Any] = {}
    for path in _paths(root):
        result = runner.invoke(root, [*path, "--help"], terminal_width=80)
        helps[" ".join(path)] = {"exit_code": result.exit_code, "output": result.output}
    with click.Context(root, info_name="tollway") as ctx:
        info = root.to_info_dict(ctx)
    return {"commands": [" ".join(p) for p in _paths(root)], "help": helps, "info": info}


def _dump(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


@pytest.fixture(scope="module")
def actual() -> Any:
    proc = subprocess.run(
        [sys.executable, __file__, "--print"], capture_output=True, check=True, timeout=60
    )
    return orjson.loads(proc.stdout)


@pytest.fixture(scope="module")
def expected() -> Any:
    return orjson.loads(SNAPSHOT.read_bytes())


def test_command_list_is_unchanged(actual: Any, expected: Any) -> None:
    assert actual["commands"] == expected["commands"]


def test_help_output_is_unchanged(actual: Any, expected: Any) -> None:
    assert sorted(actual["help"]) == sorted(expected["help"])
    for name, help_ in expected["help"].items():
        assert actual["help"][name] == help_, name


def test_params_and_help_texts_are_unchanged(actual: Any, expected: Any) -> None:
    assert actual["info"] == expected["info"]


if __name__ == "__main__":
    if sys.argv[1:] == ["--print"]:
        sys.stdout.buffer.write(_dump(surface()))
    else:
        SNAPSHOT.write_bytes(_dump(surface()))
        print(f"wrote {SNAPSHOT}")
