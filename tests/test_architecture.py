"""Dependencies point one way: plugins, providers and the conformance kit import only the core.

Every module under ``plugins/*/src``, ``providers/*/src`` and ``conformance/src`` (and the
plugin templates' ``src``) is parsed with :mod:`ast`, and every import in it — at module level,
inside functions, under ``if TYPE_CHECKING:``, and ``importlib.import_module("…")`` with a
literal name — is checked:

- a distribution imports its own packages, the core (``tollway``) and third-party libraries,
  never another first-party distribution's package (``tollway_budgets`` must not import
  ``tollway_control_plane``);
- nothing imports a private core module (``tollway._sse``, ``from tollway import _hooks``).

Each distribution's ``pyproject.toml`` also declares ``tollway`` as a dependency.

When a check fails: what two packages share belongs in the core as a public interface (a hook, a
registry, a helper — ``tollway.ledger`` and ``tollway.spans`` are examples); what one package
needs stays in that package. A private core name a package needs gets a public home in the core
(a module re-exporting it through ``__all__``, as ``tollway.sse`` does for ``tollway._sse``).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGE = "tollway"
TEMPLATES = ROOT / "conformance" / "src" / "tollway_conformance" / "template"

# Known crossings that other branches are removing (provider adapters that reuse another
# adapter's code). Each entry is (file relative to the repository root, the first-party package
# it imports). The integrator empties this after merging wt/wire; an entry that no longer
# matches an import fails the test below, so the list cannot go stale. Do not add to it: move
# the shared code into the core instead.
#: Known crossings still to be removed: none (keep it empty; a test fails on a stale entry).
ALLOWED_CROSSINGS: frozenset[tuple[str, str]] = frozenset()

HOW_TO_FIX = (
    "Plugins, providers and the conformance kit depend only on the core: move what two "
    "distributions share into the core as a public interface (a hook, a registry or a helper, "
    "as tollway.ledger and tollway.spans do), keep what one needs in that distribution, and "
    "have the others use the core's interface."
)
HOW_TO_FIX_PRIVATE = (
    "tollway._* modules are the core's implementation: import the public name instead "
    "(`from tollway import …`, tollway.sse, tollway.plugins, tollway.server, tollway.logs, "
    "tollway.ledger, …); when the core has none, give it a public home there (a module "
    "re-exporting it with __all__)."
)


@attrs.frozen
class Distribution:
    """One separately installable package of the repository."""

    root: Path
    name: str
    packages: frozenset[str]
    #: Directories below ``root / "src"`` that belong to another distribution (the templates).
    skip: tuple[Path, ...] = ()

    @property
    def rel(self) -> str:
        return self.root.relative_to(ROOT).as_posix()

    def modules(self) -> Iterator[Path]:
        for path in sorted((self.root / "src").rglob("*.py")):
            if not any(path.is_relative_to(s) for s in self.skip):
                yield path


def _distribution(root: Path, skip: tuple[Path, ...] = ()) -> Distribution:
    data = tomllib.loads((root / "pyproject.toml").read_text())
    src = root / "src"
    packages = {p.parent.name for p in src.glob("*/__init__.py")}
    packages |= {p.stem for p in src.glob("*.py")}
    return Distribution(root, data["project"]["name"], frozenset(packages), skip)


def _distributions() -> list[Distribution]:
    templates = sorted(p.parent for p in TEMPLATES.glob("*/pyproject.toml"))
    roots = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))
    roots += sorted(p.parent for p in ROOT.glob("providers/*/pyproject.toml"))
    dists = [_distribution(r) for r in roots]
    dists.append(_distribution(ROOT / "conformance", skip=(TEMPLATES,)))
    dists += [_distribution(t) for t in templates]
    return dists


DISTRIBUTIONS = _distributions()
FIRST_PARTY = frozenset({CORE_PACKAGE}).union(*(d.packages for d in DISTRIBUTIONS))
OWNER = {package: d.name for d in DISTRIBUTIONS for package in d.packages}


@attrs.frozen
class Crossing:
    """One import that breaks the rule."""

    file: str
    line: int
    module: str
    #: The first-party package imported, or ``None`` for a private core module.
    package: str | None

    def __str__(self) -> str:
        if self.package is None:
            return f"{self.file}:{self.line}: imports the private core module {self.module}"
        return (
            f"{self.file}:{self.line}: imports {self.module}, a package of another "
            f"first-party distribution ({OWNER.get(self.package, self.package)})"
        )


def _imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, dotted module)`` for every absolute import in ``tree``; ``from a import b``
    yields ``a.b`` too, so that ``from tollway import _sse`` is seen as ``tollway._sse``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module is None:
                continue  # relative: inside the importing package
            yield node.lineno, node.module
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                yield node.lineno, node.args[0].value


def crossings(source: str, file: str, own: frozenset[str]) -> list[Crossing]:
    """The imports in ``source`` (the module ``file`` of a distribution whose packages are
    ``own``) that reach another first-party distribution or a private core module."""
    found: dict[tuple[int, str], Crossing] = {}
    for line, module in _imported(ast.parse(source, file)):
        parts = module.split(".")
        top = parts[0]
        if top == CORE_PACKAGE:
            private = next(
                (p for p in parts[1:] if p.startswith("_") and not p.startswith("__")), None
            )
            if private is not None:
                shown = ".".join(parts[: parts.index(private) + 1])
                found.setdefault((line, shown), Crossing(file, line, shown, None))
        elif top in FIRST_PARTY and top not in own:
            found.setdefault((line, top), Crossing(file, line, top, top))
    return list(found.values())


def _all_crossings() -> list[Crossing]:
    out: list[Crossing] = []
    for dist in DISTRIBUTIONS:
        for path in dist.modules():
            rel = path.relative_to(ROOT).as_posix()
            out += crossings(path.read_text(), rel, dist.packages)
    return out


def test_distributions_found() -> None:
    names = {d.name for d in DISTRIBUTIONS}
    assert {"tollway-budgets", "tollway-control-plane", "tollway-provider-openai"} <= names
    assert {"tollway-conformance", "tollway-block-words", "tollway-provider-acme"} <= names
    assert len(FIRST_PARTY) == len(DISTRIBUTIONS) + 1, "two distributions share a package name"


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.rel)
def test_imports_only_itself_and_the_core(dist: Distribution) -> None:
    problems = []
    for path in dist.modules():
        rel = path.relative_to(ROOT).as_posix()
        for crossing in crossings(path.read_text(), rel, dist.packages):
            if (crossing.file, crossing.package) not in ALLOWED_CROSSINGS:
                problems.append(crossing)
    private = [str(c) for c in problems if c.package is None]
    other = [str(c) for c in problems if c.package is not None]
    message = []
    if other:
        message += [*other, HOW_TO_FIX]
    if private:
        message += [*private, HOW_TO_FIX_PRIVATE]
    assert not message, "\n".join(message)


def test_allowlist_is_not_stale() -> None:
    seen = {(c.file, c.package) for c in _all_crossings()}
    stale = sorted(ALLOWED_CROSSINGS - seen)
    assert not stale, (
        f"ALLOWED_CROSSINGS lists imports that are gone: {stale}; remove them from the list "
        "in tests/test_architecture.py"
    )


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.rel)
def test_declares_the_core(dist: Distribution) -> None:
    data = tomllib.loads((dist.root / "pyproject.toml").read_text())
    requirements = data["project"].get("dependencies", [])
    names = {canonicalize_name(Requirement(r).name) for r in requirements}
    assert CORE_PACKAGE in names, (
        f"{dist.rel}/pyproject.toml: add `tollway` to [project] dependencies (it imports the "
        "core; the core is the only first-party distribution it may depend on for imports)"
    )


# --------------------------------------------------------------------------------------------
# The checker itself
# --------------------------------------------------------------------------------------------

OWN = frozenset({"tollway_budgets"})


def _found(source: str) -> list[tuple[int, str, str | None]]:
    return [(c.line, c.module, c.package) for c in crossings(source, "x.py", OWN)]


def test_checker_flags_another_distribution_anywhere() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import tollway_control_plane.store\n"
        "if TYPE_CHECKING:\n"
        "    from tollway_guardrails import Evaluator\n"
        "def f():\n"
        "    from tollway_control_plane import embedded_ledger\n"
        "    import importlib\n"
        "    return importlib.import_module('tollway_simulator')\n"
    )
    assert _found(source) == [
        (2, "tollway_control_plane", "tollway_control_plane"),
        (4, "tollway_guardrails", "tollway_guardrails"),
        (6, "tollway_control_plane", "tollway_control_plane"),
        (8, "tollway_simulator", "tollway_simulator"),
    ]


def test_checker_flags_private_core_modules() -> None:
    source = (
        "from tollway._sse import SSESplitter\n"
        "from tollway import _hooks, __version__, hookimpl\n"
        "import tollway._plugins as plugins\n"
    )
    assert _found(source) == [
        (1, "tollway._sse", None),
        (2, "tollway._hooks", None),
        (3, "tollway._plugins", None),
    ]


def test_checker_allows_itself_the_core_and_libraries() -> None:
    source = (
        "import attrs\n"
        "from tollway import hookimpl, __version__\n"
        "from tollway.sse import SSESplitter\n"
        "from tollway_budgets._client import LocalControlPlane\n"
        "from . import _windows\n"
        "from ._store import LocalStore\n"
        "import tollway_budgetsx\n"
    )
    assert _found(source) == []
