"""Meta-tests: every name the documentation tells a user to type exists in the code.

Over docs/**/*.md and README.md:

- every environment variable of the families the gateway reads (``TOLLWAY_*``, ``GATEWAY_*``,
  ``SERVER_*``, ``LW_*``, ``LOG_*``, ``ENVIRONMENT``, ``OTEL_*``) is read
  somewhere: its exact name appears in the sources of a first-party package (``OTEL_*`` names:
  or of the OpenTelemetry SDK, which reads them for the telemetry plugin);
- every ``tollway <command> [<sub-command>]`` written in code (inline or in a block) exists in
  the CLI, plugin commands included (added as ``tollway``'s ``main()`` adds them);
- every ``--flag`` written after such a command is an option of that command;
- the sample ``tollway plugins`` output in docs/operator-guide.md lists the repository's plugins.

A name documented on purpose although nothing reads it (it belongs to another program, say) goes
in an allowlist below, with the reason.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import click
import pytest

from tollway._plugins import build_plugin_manager
from tollway.cli import cli
from tollway.config import PluginSelection

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]

# Variables named in the docs that no Tollway package reads, each with its reason.
ENV_ALLOWLIST = {
    # docs/codex.md: the variable Codex reads the key from (its config's `env_key`), the
    # user's choice of name.
    "TOLLWAY_API_KEY",
    # tollway-vk-auth reads these as f"{name}_SECONDS", the reference's seconds-valued twins of
    # LW_GATEWAY_AUTH_CACHE_SOFT_BUMP / _HARD_GRACE (tollway_vk_auth._settings._duration_var).
    "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP_SECONDS",
    "LW_GATEWAY_AUTH_CACHE_HARD_GRACE_SECONDS",
}

# The standard HTTPS_PROXY / HTTP_PROXY / NO_PROXY are left out: HTTP libraries read them
# generically (every `*_proxy` variable), so their names need not appear in any source.
_ENV_NAME = re.compile(
    r"(?<!\w)((?:TOLLWAY|GATEWAY|SERVER|LW|LOG|OTEL)_[A-Z0-9_]*[A-Z0-9]|ENVIRONMENT)(?!\w)"
)
_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
# `tollway` as a command: not `tollway-simulator`, `tollway.toml`, `tollway_budgets`, a Python
# `from tollway import …`, a `pip install tollway`, a quoted string or a `tollway:` key prefix.
_TOLLWAY = re.compile(r"(?<![\w./\"'=-])(?<!from )(?<!import )(?<!install )tollway(?![\w.:\"'[-])")
_END = re.compile(r"[|;&#>)`]")  # what ends a command line in a shell snippet


def _code(text: str) -> list[str]:
    """The code of a Markdown text: each fenced block's lines and each inline code span."""
    out: list[str] = []
    for match in _FENCE.finditer(text):
        out.extend(match.group(2).replace("\\\n", " ").splitlines())
    for match in _INLINE_CODE.finditer(_FENCE.sub("", text)):
        out.append(match.group(2))
    return out


def _read(tests: bool) -> str:
    parts: list[str] = []
    for top in ("core", "plugins", "providers", "conformance", "tests"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).parts
            in_tests = "tests" in rel or path.name.startswith("test_") or path.name == "conftest.py"
            if "template" in rel or in_tests != tests:
                continue
            parts.append(path.read_text())
    return "\n".join(parts)


@cache
def _sources() -> str:
    """The text of every first-party package's source (tests excluded)."""
    return _read(tests=False)


@cache
def _test_sources() -> str:
    """The test suites: the testing docs name the variables that switch on their long runs."""
    return _read(tests=True)


@cache
def _otel_sources() -> str:
    import opentelemetry.sdk

    sdk = Path(opentelemetry.sdk.__path__[0]).parent
    return "\n".join(p.read_text() for p in sorted(sdk.rglob("*.py")))


def _env_mentions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for doc in DOC_FILES:
        for name in _ENV_NAME.findall(doc.read_text()):
            where = str(doc.relative_to(ROOT))
            if where not in found.setdefault(name, []):
                found[name].append(where)
    return found


ENV_MENTIONS = _env_mentions()


def test_env_mentions_found() -> None:
    assert {"SERVER_ADDR", "GATEWAY_REDIS_URL", "TOLLWAY_PLUGINS"} <= set(ENV_MENTIONS)


@pytest.mark.parametrize("name", sorted(ENV_MENTIONS))
def test_documented_environment_variable_is_read(name: str) -> None:
    if name in ENV_ALLOWLIST:
        return
    read = name in _sources() or (name.startswith("OTEL_") and name in _otel_sources())
    if not read and set(ENV_MENTIONS[name]) <= {"docs/testing-plugins.md"}:
        read = name in _test_sources()  # a switch of the test suites, documented for them
    assert read, (
        f"{name} is documented in {', '.join(ENV_MENTIONS[name])}, but no Tollway package reads "
        "it: fix the docs, or add it to ENV_ALLOWLIST in tests/test_docs_names.py with the reason"
    )


def test_env_allowlist_is_needed() -> None:
    stale = sorted(n for n in ENV_ALLOWLIST if n not in ENV_MENTIONS or n in _sources())
    assert not stale, f"ENV_ALLOWLIST entries no longer needed: {stale}"


# --- commands and flags ------------------------------------------------------------------------


@cache
def _cli() -> click.Group:
    """The ``tollway`` command with every installed plugin's commands, as ``main()`` builds it
    (on a copy: the module-level group is left alone)."""
    root = type(cli)(name="tollway", commands=dict(cli.commands), params=list(cli.params))
    pm, _ = build_plugin_manager(PluginSelection(), skip_broken=True)
    pm.hook.register_commands(cli=root)
    return root


def _invocations() -> Iterator[tuple[str, list[str]]]:
    """``(where, tokens after "tollway")`` for every ``tollway …`` written in code."""
    for doc in DOC_FILES:
        where = str(doc.relative_to(ROOT))
        for line in _code(doc.read_text()):
            for match in _TOLLWAY.finditer(line):
                rest = _END.split(line[match.end() :], maxsplit=1)[0]
                yield where, rest.split()


def _option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _check(tokens: list[str]) -> tuple[str, list[str]]:
    """The command path named, and the problems with it (unknown command or flag)."""
    command: click.Command = _cli()
    path = ["tollway"]
    problems: list[str] = []
    for raw in tokens:
        token = raw.strip("[](){}…,.:'\"")
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            if flag not in _option_names(command):
                problems.append(f"`{' '.join(path)}` has no option {flag}")
            continue
        if not isinstance(command, click.Group) or not re.fullmatch(r"[a-z][a-z0-9-]*", token):
            # A leaf command's arguments, or not a command word (`tollway 0.1.0 listening`).
            if len(path) == 1:
                break
            continue
        # get_command, not .commands: aliases (`tollway vk`) resolve there.
        sub = command.get_command(click.Context(command), token)
        if sub is None:
            problems.append(f"`{' '.join(path)}` has no sub-command {token!r}")
            break
        command = sub
        path.append(token)
    return " ".join(path), problems


INVOCATIONS = sorted({(where, " ".join(tokens)) for where, tokens in _invocations()})


def test_invocations_found() -> None:
    named = {_check(tokens.split())[0] for _, tokens in INVOCATIONS}
    assert {"tollway serve", "tollway plugins", "tollway config show"} <= named
    assert "tollway simulate" in named  # a plugin command


@pytest.mark.parametrize(
    ("where", "invocation"), INVOCATIONS, ids=[f"{w}:{i}" for w, i in INVOCATIONS]
)
def test_documented_command_and_flags_exist(where: str, invocation: str) -> None:
    _, problems = _check(invocation.split())
    assert not problems, f"{where} writes `tollway {invocation}`: " + "; ".join(problems)


# --- the sample `tollway plugins` output -------------------------------------------------------


def test_operator_guide_plugins_sample_lists_the_repositorys_plugins() -> None:
    """The sample in the operator guide is the real list: a new plugin updates it."""
    text = (ROOT / "docs" / "operator-guide.md").read_text()
    match = re.search(r"^\$ tollway plugins\nNAME .*?\n(.*?)^```", text, re.M | re.S)
    assert match, "docs/operator-guide.md has no sample output of `$ tollway plugins`"
    shown = [line.split()[0] for line in match.group(1).splitlines() if line.strip()]
    entry_points: set[str] = set()
    for path in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("providers/*/pyproject.toml")]:
        project = tomllib.loads(path.read_text())["project"]
        entry_points.update(project.get("entry-points", {}).get("tollway", {}))
    assert shown == sorted(entry_points), (
        "the `tollway plugins` sample in docs/operator-guide.md should list the repository's "
        "plugins, in name order (run `tollway plugins` and paste its output): "
        f"{sorted(entry_points)}"
    )
