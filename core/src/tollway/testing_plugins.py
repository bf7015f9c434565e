"""Test helper: make a one-module plugin installable without pip.

A test that needs a plugin in a subprocess gateway (a tiny provider adapter, a guardrail)
writes its source here and passes the returned environment to
:func:`tollway.testing.start_gateway`::

    env = plugin_site(tmp_path / "site", "tollway-test-echo", SOURCE)
    gw = start_gateway(tmp_path, providers=[...], env=env)

The module is importable from the returned ``PYTHONPATH`` and registered in the ``tollway``
entry-point group (a minimal ``.dist-info``), exactly as ``pip install`` would leave it, so the
gateway, ``tollway plugins`` and ``TOLLWAY_PLUGINS`` see it like any installed plugin.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["plugin_site"]

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def plugin_site(site: Path, name: str, source: str, *, version: str = "0.0.1") -> dict[str, str]:
    """Write plugin ``name`` (a distribution name such as ``tollway-test-echo``; the module is
    its snake-case form) with module text ``source`` into ``site``; return the environment
    (``PYTHONPATH`` with ``site`` first) under which it is installed. Several calls may share
    one ``site``."""
    if not _NAME.match(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and dashes")
    module = name.replace("-", "_")
    package = site / module
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(source)
    (package / "py.typed").write_text("")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[tollway]\n{name} = {module}\n")
    (info / "top_level.txt").write_text(module + "\n")
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), path) if p)}
