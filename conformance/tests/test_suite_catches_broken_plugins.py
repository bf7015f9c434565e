"""The suites pass good plugins and fail broken ones with a message that says what to fix.

Broken plugins are made from the templates (or written here), "installed" into a temporary
directory (a module plus a ``.dist-info`` with its entry point, on ``PYTHONPATH``), and checked
by the suites in a pytest subprocess, whose output is asserted on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tollway_conformance import HookPluginSuite
from tollway_conformance.blocking import blocking_calls
from tollway_conformance.new_plugin import render


class TestStaticKeysConforms(HookPluginSuite):
    entry_point = "tollway-static-keys"


def test_missing_entry_point_says_what_to_fix() -> None:
    class Missing(HookPluginSuite):
        entry_point = "tollway-not-installed"

    with pytest.raises(AssertionError, match=r"project\.entry-points\.tollway"):
        Missing().test_entry_point_loads()


def fake_install(site: Path, dist: str, package_dir: Path, requires: tuple[str, ...] = ()) -> None:
    """What ``pip install`` leaves behind, without building: the package and a dist-info
    declaring the ``tollway`` entry point (named after the distribution)."""
    module = package_dir.name
    (site / module).mkdir(parents=True)
    for path in package_dir.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            target = site / module / path.relative_to(package_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(metadata)
    (info / "entry_points.txt").write_text(f"[tollway]\n{dist} = {module}\n")


SLOW_GUARD = '''
"""A plugin with the mistakes the hook-plugin suite looks for."""

from __future__ import annotations

import attrs

from tollway import Verdict, hookimpl


@attrs.frozen
class Settings:
    words: list[str]  # no default: a gateway without the section cannot start


@hookimpl
def register_settings(register):
    register("slow-guard", Settings)


def _load_words(path):
    with open(path) as fh:  # blocking file I/O on the event loop
        return fh.read().split()


@hookimpl
def pre_guardrail(ctx):
    words = _load_words(__file__)
    return None if words else Verdict("allow")
'''


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the suites on three broken plugins in one pytest subprocess; its output."""
    root = tmp_path_factory.mktemp("broken")
    site, work = root / "site", root / "work"
    site.mkdir()

    # 1. The guardrail template with a defaulted hook parameter.
    guard = render("guardrail", "defaulted", root / "defaulted")
    init = guard / "src" / "tollway_defaulted" / "__init__.py"
    source = init.read_text()
    assert "def register_guardrail_evaluators(register: Callable[[str, Any], None])" in source
    init.write_text(
        source.replace(
            "register: Callable[[str, Any], None])", "register: Callable[..., None] = print)"
        )
    )
    fake_install(site, "tollway-defaulted", guard / "src" / "tollway_defaulted")

    # 2. The provider template that drops usage.
    prov = render("provider", "no-usage", root / "no-usage")
    init = prov / "src" / "tollway_provider_no_usage" / "__init__.py"
    source = init.read_text()
    assert source.count("ctx.usage = ") == 2
    init.write_text(source.replace("ctx.usage = ", "_dropped = "))
    fake_install(site, "tollway-provider-no-usage", prov / "src" / "tollway_provider_no_usage")

    # 3. Blocking I/O in a sync hook, settings without defaults.
    slow = root / "slow" / "tollway_slow_guard"
    slow.mkdir(parents=True)
    (slow / "__init__.py").write_text(SLOW_GUARD)
    fake_install(site, "tollway-slow-guard", slow)

    work.mkdir()
    (work / "test_broken_plugins.py").write_text(
        textwrap.dedent(
            """
            from tollway_conformance import HookPluginSuite, ProviderSuite


            class TestDefaulted(HookPluginSuite):
                entry_point = "tollway-defaulted"


            class TestNoUsage(ProviderSuite):
                entry_point = "tollway-provider-no-usage"
                provider_type = "no-usage"
                model = "no-usage-large"
                upstream_path = "/v1"


            class TestSlowGuard(HookPluginSuite):
                entry_point = "tollway-slow-guard"
                gateway_config = '[plugin.slow-guard]\\nwords = ["zebra"]\\n'
            """
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfE",
            "--tb=short",
            "-k",
            "TestDefaulted and hooks_match or TestNoUsage and (usage or non_stream) "
            "or TestSlowGuard and (block or works_alone or settings)",
            "test_broken_plugins.py",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout + proc.stderr


def _failed(output: str, test: str) -> None:
    assert f"FAILED test_broken_plugins.py::{test}" in output, (
        f"{test} should have failed:\n{output[-4000:]}"
    )


def test_defaulted_hook_parameter_fails_with_the_fix(broken_run: str) -> None:
    _failed(broken_run, "TestDefaulted::test_hooks_match_specs")
    assert "register_guardrail_evaluators(): parameters ['register'] have default" in broken_run
    assert "remove the defaults: def register_guardrail_evaluators(register)" in broken_run


def test_provider_that_drops_usage_fails_with_the_fix(broken_run: str) -> None:
    _failed(broken_run, "TestNoUsage::test_usage_reported[chat]")
    assert "usage not reported: after a successful non-streaming chat call" in broken_run
    assert "Set ctx.usage = tollway.Usage(input_tokens=" in broken_run
    # Everything else about the adapter is fine, and the suite says so.
    assert "FAILED test_broken_plugins.py::TestNoUsage::test_non_stream_answer" not in broken_run


def test_blocking_sync_hook_fails_statically_and_at_run_time(broken_run: str) -> None:
    _failed(broken_run, "TestSlowGuard::test_sync_hooks_do_not_block")
    assert "pre_guardrail(): pre_guardrail → _load_words calls open" in broken_run
    _failed(broken_run, "TestSlowGuard::test_works_alone_with_builtins")
    assert "synchronous per-request hooks made blocking calls on the event loop" in broken_run
    assert "pre_guardrail(): open" in broken_run


def test_settings_without_defaults_fail_with_the_fix(broken_run: str) -> None:
    _failed(broken_run, "TestSlowGuard::test_settings_round_trip")
    assert "an empty or absent [plugin.slow-guard] must give the defaults" in broken_run
    assert "Give every field of Settings a default" in broken_run


# --- the static blocking-call finder on its own -------------------------------------------


def _sleepy(ctx: object) -> None:
    import time

    time.sleep(0.1)


def _pathy(ctx: object) -> None:
    Path("x").read_text()


async def _fine(ctx: object) -> None:
    pass


def test_blocking_finder() -> None:
    module = __name__
    assert [f.call for f in blocking_calls("admit", _sleepy, module)] == ["time.sleep"]
    assert [f.call for f in blocking_calls("admit", _pathy, module)] == [".read_text()"]
    assert blocking_calls("admit", _fine, module) == []
