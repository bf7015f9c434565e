"""What a gateway process imports at start-up: libraries needed only once a provider of their
kind is configured, or a command runs, are not imported when the plugins load (issue 25: each
costs RSS in every gateway that never uses it).

The check runs in a fresh interpreter: every installed ``tollway`` entry point is loaded, as
``tollway serve`` does, with the core's gateway and the embedded control plane's console (which
``register_routes`` mounts at start-up).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

#: Module → what imports it when it is needed.
LAZY = {
    "botocore": "a bedrock provider (credentials, SigV4, event streams)",
    "google.auth": "a vertex provider's service-account tokens",
    "google.oauth2": "a vertex provider's service-account tokens",
    "tollway_provider_vertex._tokens": "a vertex provider's service-account tokens",
    "aiohttp.web": "the simulator's server (`tollway simulate`)",
    "tollway_simulator.server": "the simulator's server (`tollway simulate`)",
    "httpx": "the control plane's relay (`serve --workers N`) and its CLI client",
    "rich": "httpx's package import (its command line)",
}

_SCRIPT = """
import importlib.metadata, json, sys
for ep in importlib.metadata.entry_points(group="tollway"):
    ep.load()
import tollway.gateway
import tollway_control_plane.console
print(json.dumps(sorted(sys.modules)))
"""

_NEEDED = (
    "tollway-provider-bedrock",
    "tollway-provider-vertex",
    "tollway-simulator",
    "tollway-control-plane",
)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_plugin_load_imports_no_lazy_library() -> None:
    missing = [d for d in _NEEDED if not _installed(d)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    eager = {name: why for name, why in LAZY.items() if name in loaded}
    assert not eager, f"imported at plugin load, but needed only by: {eager}"


def test_the_lazy_names_still_resolve() -> None:
    """The packages' public names that moved behind a lazy import still work."""
    from tollway_provider_vertex import TokenSource
    from tollway_simulator import LISTENING_PREFIX, start_simulator

    assert TokenSource.__module__ == "tollway_provider_vertex._tokens"
    assert LISTENING_PREFIX.startswith("tollway-simulator listening on")
    assert callable(start_simulator)
    with pytest.raises(AttributeError):
        import tollway_simulator

        _ = tollway_simulator.no_such_name  # type: ignore[attr-defined]
