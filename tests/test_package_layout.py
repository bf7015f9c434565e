"""Every distribution in the repository ships type information (PEP 561).

Type checkers only trust a package's annotations when the package carries a ``py.typed`` marker
and the wheel actually contains it, so both the file and its ``package-data`` entry are checked.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    p.parent
    for p in [*ROOT.glob("*/pyproject.toml"), *ROOT.glob("*/*/pyproject.toml")]
    if p.parent.name != "template" and (p.parent / "src").is_dir()
)


def _import_packages(dist: Path) -> list[Path]:
    return sorted(p.parent for p in (dist / "src").glob("*/__init__.py"))


def test_every_distribution_is_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PACKAGES}
    assert {"core", "conformance", "plugins/control-plane", "providers/openai"} <= names


@pytest.mark.parametrize("dist", PACKAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_ships_py_typed(dist: Path) -> None:
    packages = _import_packages(dist)
    assert packages, f"{dist}: no import package under src/"
    data = tomllib.loads((dist / "pyproject.toml").read_text())
    package_data = data.get("tool", {}).get("setuptools", {}).get("package-data", {})
    for pkg in packages:
        assert (pkg / "py.typed").is_file(), f"{pkg.relative_to(ROOT)} has no py.typed marker"
        declared = package_data.get(pkg.name, []) + package_data.get("*", [])
        assert "py.typed" in declared, (
            f"{dist.relative_to(ROOT)}/pyproject.toml: add py.typed to "
            f"[tool.setuptools.package-data] {pkg.name} so the wheel carries it"
        )
