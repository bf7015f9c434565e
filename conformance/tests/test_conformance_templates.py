"""The plugin templates, as an author uses them: render, ``pip install``, ``tollway plugins``,
``pytest`` in the plugin folder — green, with the conformance suites running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tollway_conformance.new_plugin import KINDS, TEMPLATES, main, render

NETWORK_TROUBLE = re.compile(
    r"NewConnectionError|Could not find a version that satisfies the requirement setuptools|"
    r"Temporary failure in name resolution|No matching distribution found for setuptools"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The templates rendered and pip-installed into a private target directory (so the
    shared environment never sees them); the folder and the environment to use them."""
    root = tmp_path_factory.mktemp("templates")
    render("guardrail", "no-zebras", root / "tollway-no-zebras")
    render("provider", "zeta-ai", root / "tollway-provider-zeta-ai")
    render("provider-ndjson", "kappa", root / "tollway-provider-kappa")
    site = root / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(site),
            str(root / "tollway-no-zebras"),
            str(root / "tollway-provider-zeta-ai"),
            str(root / "tollway-provider-kappa"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and NETWORK_TROUBLE.search(proc.stdout + proc.stderr):
        pytest.skip(f"pip cannot fetch the build backend (offline?): {proc.stderr[-500:]}")
    assert proc.returncode == 0, f"pip install of the rendered templates failed:\n{proc.stderr}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    return root, env


@pytest.mark.slow
def test_tollway_plugins_lists_them_with_conformance(
    installed: tuple[Path, dict[str, str]],
) -> None:
    _, env = installed
    out = subprocess.run(
        [sys.executable, "-m", "tollway", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    for dist, hooks in (
        ("tollway-no-zebras", "register_guardrail_evaluators"),
        ("tollway-provider-zeta-ai", "register_providers"),
        ("tollway-provider-kappa", "register_providers"),
    ):
        line = next((ln for ln in out.splitlines() if ln.startswith(dist + " ")), None)
        assert line is not None, out
        assert "declared" in line and hooks in line, line


FOLDERS = ("tollway-no-zebras", "tollway-provider-zeta-ai", "tollway-provider-kappa")


@pytest.fixture(scope="module")
def template_runs(installed: tuple[Path, dict[str, str]]) -> dict[str, tuple[int, str]]:
    """``pytest -v`` in each plugin folder (all at once): return code and output."""
    root, env = installed
    procs = {
        folder: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rs"],
            cwd=root / folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for folder in FOLDERS
    }
    return {folder: (p.wait(280), p.communicate()[0]) for folder, p in procs.items()}


@pytest.mark.slow
# Three nested pytest runs at once, each with the conformance suites in three client formats
# (chat, messages, responses): past the default 120 s on two busy cores.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("folder", FOLDERS)
def test_pytest_in_the_plugin_folder_is_green(
    template_runs: dict[str, tuple[int, str]], folder: str
) -> None:
    code, out = template_runs[folder]
    assert code == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary, summary
    # The conformance suites ran, and passed.
    expected = ["test_hooks_match_specs PASSED", "test_works_alone_with_builtins PASSED"]
    if "provider" in folder:
        expected += ["test_usage_reported[chat] PASSED", "test_client_disconnect_closes_upstream"]
    if folder == "tollway-provider-kappa":
        # Its own wire, its own upstream: Anthropic clients served by the core's translation,
        # every fault check run against the stand-in, tools skipped as undeclared.
        expected += [
            "test_usage_reported[messages] PASSED",
            "test_stream_frames[messages] PASSED",
            "test_midstream_failure_ends_with_error_event[messages] PASSED",
            "test_client_disconnect_closes_upstream PASSED",
            "test_timeout_is_504 PASSED",
            "capability 'tools' not declared",
        ]
    for line in expected:
        assert line in out, f"{line!r} not in:\n{out[-5000:]}"


def test_rendering_renames_everything(tmp_path: Path) -> None:
    guard = render("guardrail", "pii-lite", tmp_path / "g")
    prov = render("provider", "nimbus", tmp_path / "p")
    for folder, old in ((guard, ("block-words", "block_words", "BlockWords")), (prov, ("acme",))):
        for path in folder.rglob("*"):
            assert not any(o in str(path.relative_to(folder)) for o in old), path
            if path.is_file():
                text = path.read_text()
                assert not any(o in text.lower() for o in (x.lower() for x in old)), path
    assert (guard / "src" / "tollway_pii_lite" / "__init__.py").exists()
    assert (prov / "tests" / "test_provider_nimbus_conformance.py").exists()
    assert (
        'type: ClassVar[str] = "nimbus"'
        in (prov / "src/tollway_provider_nimbus/__init__.py").read_text()
    )
    own = render("provider-ndjson", "nimbus", tmp_path / "n")
    for path in own.rglob("*"):
        assert "acme" not in str(path.relative_to(own)), path
        if path.is_file():
            assert "acme" not in path.read_text().lower(), path
    assert (own / "tests" / "test_provider_nimbus_conformance.py").exists()


def test_new_plugin_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acme2", "--kind", "provider", str(tmp_path / "x")]) == 0
    assert "pip install -e '.[test]'" in capsys.readouterr().out
    assert main(["acme2", "--kind", "provider", str(tmp_path / "x")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["Bad_Name", "--kind", "guardrail", str(tmp_path / "y")]) == 2
    assert "lower-case letters" in capsys.readouterr().err
    assert main(["tollway-x", "--kind", "guardrail", str(tmp_path / "z")]) == 2


def test_templates_ship_with_the_package() -> None:
    for kind in KINDS:
        assert (TEMPLATES / kind / "pyproject.toml").exists()
        assert (TEMPLATES / kind / "README.md").exists()
