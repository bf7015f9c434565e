"""Meta-tests: the documentation in docs/ keeps up with the code.

- docs/hooks.md is exactly what docs/gen_hooks.py generates from the hook specifications'
  docstrings (``./run docs`` regenerates it), and every docstring documents each parameter
  (``:param name:``), the result, what may be raised and the call mode;
- every hook specification has a ``### name(params)`` section in docs/hooks.md whose parameter
  list is the spec's, and docs/hooks.md documents no hook that does not exist;
- every environment variable the configuration reads is in docs/operator-guide.md;
- every ``tollway`` command is mentioned in docs/operator-guide.md;
- every relative link in docs/**/*.md points at an existing file (and heading, for Markdown);
- every check of the conformance suites is explained in docs/testing-plugins.md.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from tollway import hookspecs
from tollway._markers import PROJECT_NAME
from tollway.cli import cli
from tollway.config import _ENV

DOCS = Path(__file__).resolve().parents[1] / "docs"
HOOKS_MD = DOCS / "hooks.md"
OPERATOR_GUIDE = DOCS / "operator-guide.md"
TESTING_PLUGINS = DOCS / "testing-plugins.md"

# Commands that plugins add to the CLI (not on the bare click group), documented all the same.
PLUGIN_COMMANDS = ("tollway simulate",)

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_HOOK_HEADING = re.compile(r"^#{2,3}[ \t]+(\w+)\(([^)]*)\)[ \t]*$", re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _specs() -> dict[str, Callable[..., Any]]:
    marker = f"{PROJECT_NAME}_spec"
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


SPECS = _specs()


def _prose(text: str) -> str:
    """Markdown without fenced code blocks (where ``#`` lines and ``[x](y)`` are not markup)."""
    return _FENCE.sub("", text)


def _hook_headings() -> dict[str, list[str]]:
    headings: dict[str, list[str]] = {}
    for name, params in _HOOK_HEADING.findall(_prose(HOOKS_MD.read_text())):
        assert name not in headings, f"docs/hooks.md documents {name} twice"
        headings[name] = [p.strip() for p in params.split(",") if p.strip()]
    return headings


def test_hookspecs_found() -> None:
    assert len(SPECS) >= 10, sorted(SPECS)
    assert "authenticate" in SPECS and "account" in SPECS


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hookspec_has_docstring(name: str) -> None:
    doc = inspect.getdoc(SPECS[name])
    assert doc and doc.strip(), f"hookspec {name} has no docstring"


def _gen_hooks() -> Any:
    spec = importlib.util.spec_from_file_location("gen_hooks", DOCS / "gen_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_md_is_generated_from_the_hookspecs() -> None:
    gen = _gen_hooks()
    assert HOOKS_MD.read_text() == gen.generate(), (
        "docs/hooks.md differs from the docstrings of core/src/tollway/hookspecs.py: edit the "
        f"docstrings (not docs/hooks.md), then run `{gen.COMMAND}` "
        "(or `.venv/bin/python docs/gen_hooks.py`) and commit the result"
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hookspec_docstring_is_complete(name: str) -> None:
    gen = _gen_hooks()
    doc = inspect.getdoc(SPECS[name]) or ""
    gen.call_mode(name, doc)  # raises when the docstring states no call mode
    _, fields = gen.split_fields(doc)
    documented = [n for kind, n, _ in fields if kind == "param"]
    params = list(inspect.signature(SPECS[name]).parameters)
    assert documented == params, (
        f"hookspec {name}: the docstring's :param: fields are {documented}, its parameters "
        f"{params} (one `:param name:` each, in order)"
    )
    kinds = {kind for kind, _, _ in fields}
    assert {"returns", "raises"} <= kinds, (
        f"hookspec {name}: the docstring needs a `:returns:` and a `:raises:` field"
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_documented_with_its_signature(name: str) -> None:
    params = list(inspect.signature(SPECS[name]).parameters)
    headings = _hook_headings()
    expected = f"### {name}({', '.join(params)})"
    assert name in headings, f"docs/hooks.md has no section `{expected}`"
    assert headings[name] == params, (
        f"docs/hooks.md documents {name}({', '.join(headings[name])}); the spec is {expected[4:]}"
    )


def test_no_documented_hook_is_missing_from_the_specs() -> None:
    stale = sorted(set(_hook_headings()) - set(SPECS))
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {stale}"


@pytest.mark.parametrize("variable", sorted(_ENV))
def test_environment_variable_documented(variable: str) -> None:
    text = OPERATOR_GUIDE.read_text()
    assert re.search(rf"(?<![A-Z0-9_]){re.escape(variable)}(?![A-Z0-9_])", text), (
        f"{variable} (read by tollway.config) is not in docs/operator-guide.md"
    )


def _command_paths(group: click.Group, prefix: tuple[str, ...]) -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield " ".join(path)
        if isinstance(command, click.Group):
            yield from _command_paths(command, path)


COMMANDS = sorted({*_command_paths(cli, ("tollway",)), *PLUGIN_COMMANDS})


def test_commands_found() -> None:
    assert {"tollway serve", "tollway plugins", "tollway config show"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_documented(command: str) -> None:
    assert command in OPERATOR_GUIDE.read_text(), (
        f"`{command}` is not mentioned in docs/operator-guide.md"
    )


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _INLINE_CODE.sub(lambda m: m.group(0)[1:-1], heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for _, title in _HEADING.findall(_prose(path.read_text())):
        slug = _slug(title)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(path: Path) -> list[str]:
    text = _INLINE_CODE.sub("", _prose(path.read_text()))
    return _LINK.findall(text)


DOC_FILES = sorted(DOCS.rglob("*.md"))


def test_docs_exist() -> None:
    names = {p.name for p in DOC_FILES}
    assert {
        "index.md",
        "operator-guide.md",
        "writing-plugins.md",
        "hooks.md",
        "troubleshooting.md",
        "testing-plugins.md",
    } <= names


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_resolve(doc: Path) -> None:
    broken: list[str] = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http:, https:, mailto:, …
        file_part, _, fragment = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
            continue
        if fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{target} (no heading with anchor #{fragment} in {dest.name})")
    assert not broken, f"broken links in docs/{doc.relative_to(DOCS)}:\n  " + "\n  ".join(broken)


def _suite_checks() -> list[str]:
    from tollway_conformance import GatewaySuite, HookPluginSuite, ProviderSuite

    return sorted(
        f"{suite.__name__}.{name}"
        for suite in (HookPluginSuite, ProviderSuite, GatewaySuite)
        for name in vars(suite)
        if name.startswith("test_")
    )


@pytest.mark.parametrize("check", _suite_checks())
def test_conformance_check_documented(check: str) -> None:
    name = check.partition(".")[2]
    assert re.search(rf"`{name}(\[[^`]*\])?`", TESTING_PLUGINS.read_text()), (
        f"{check} (tollway_conformance) is not explained in docs/testing-plugins.md"
    )
