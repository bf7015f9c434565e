"""The core distribution's extras name the repository's packages: none forgotten, none invented.

``pip install "tollway[all]"`` is how a user outside the repository gets the whole product, so a
new plugin or provider folder must be added to the ``all`` extra of core/pyproject.toml (and a
provider to ``providers``) in the same change.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# First-party distributions deliberately left out of ``all``, with the reason.
NOT_IN_ALL = {
    "tollway": "the core itself: the extra belongs to it",
    "tollway-conformance": "the plugin authors' test kit (pulls in pytest); not part of a gateway",
}


def _project(path: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(path.read_text())["project"]
    return project


def _names(pattern: str) -> set[str]:
    return {_project(p)["name"] for p in ROOT.glob(pattern)}


def _extra(name: str) -> list[str]:
    extras: dict[str, list[str]] = _project(ROOT / "core" / "pyproject.toml").get(
        "optional-dependencies", {}
    )
    assert name in extras, f"core/pyproject.toml has no [project.optional-dependencies] {name}"
    return extras[name]


def test_packages_found() -> None:
    assert {"tollway", "tollway-conformance", "tollway-budgets", "tollway-provider-openai"} <= (
        _names("*/pyproject.toml") | _names("*/*/pyproject.toml")
    )


def test_all_extra_lists_every_first_party_package() -> None:
    every = _names("core/pyproject.toml") | _names("conformance/pyproject.toml")
    every |= _names("plugins/*/pyproject.toml") | _names("providers/*/pyproject.toml")
    listed = _extra("all")
    assert len(listed) == len(set(listed)), f"tollway[all] lists a package twice: {listed}"
    missing = sorted(every - set(listed) - set(NOT_IN_ALL))
    unknown = sorted(set(listed) - every)
    assert not missing, (
        f"add {missing} to the `all` extra of core/pyproject.toml (pip install 'tollway[all]' "
        "would leave them out)"
    )
    assert not unknown, f"the `all` extra of core/pyproject.toml names no package here: {unknown}"
    assert not set(listed) & set(NOT_IN_ALL)


def test_providers_extra_lists_every_provider() -> None:
    assert sorted(_extra("providers")) == sorted(_names("providers/*/pyproject.toml"))
    assert set(_extra("providers")) <= set(_extra("all"))
