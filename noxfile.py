"""Developer sessions. Packages are discovered by glob, so a new plugin folder needs no edit here.

    nox -s tests      # every package installed editable into one venv, then pytest
    nox -s lint       # ruff check + ruff format --check
    nox -s typecheck  # mypy (strict on every package)
    nox -s package    # build each distribution on its own (sdist + wheel)

CI and the README use ``./run test``, which runs the same three checks in ``.venv``.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.sessions = ["lint", "typecheck", "tests"]


def packages() -> list[str]:
    """Every separately installable package: core, plugins/*, providers/*, conformance."""
    found = [
        ROOT / "core",
        *sorted((ROOT / "plugins").glob("*")),
        *sorted((ROOT / "providers").glob("*")),
        ROOT / "conformance",
    ]
    return [str(p) for p in found if (p / "pyproject.toml").exists()]


def install_all(session: nox.Session) -> None:
    args: list[str] = []
    for pkg in packages():
        args += ["-e", pkg]
    session.install(*args, "-r", "requirements-dev.txt")


@nox.session
def tests(session: nox.Session) -> None:
    install_all(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_all(session)
    session.run("mypy")


@nox.session
def package(session: nox.Session) -> None:
    session.install("build")
    for pkg in packages():
        session.run("python", "-m", "build", "--outdir", str(ROOT / "dist"), pkg)
