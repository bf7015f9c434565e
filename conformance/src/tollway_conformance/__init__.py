"""Conformance suites for Tollway plugins and gateways: subclass them in your tests.

* :class:`HookPluginSuite` — any plugin: packaging, hook signatures, blocking calls, isolation
  of ``account``, settings, and a real gateway with only the plugin and the built-ins.
* :class:`ProviderSuite` — a provider adapter behind a real gateway, against the simulator or
  an upstream of your own (declared capabilities, the fault interface).
* :class:`GatewaySuite` — a running gateway, from the outside, through the official SDKs.

Installed, the package is a pytest plugin (``pytest11``) providing the fixtures the suites use
(``tollway_simulator``, ``tollway_gateway_factory``, ``tollway_target``). See
docs/testing-plugins.md.

The suites are imported on first use, so that ``python -m tollway_conformance.serve`` (the
gateway the suites start) and every pytest run of the environment stay quick to start.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tollway_conformance.gateway_suite import GatewaySuite
    from tollway_conformance.hook_plugin import HookPluginSuite
    from tollway_conformance.provider import ProviderSuite

__all__ = ["GatewaySuite", "HookPluginSuite", "ProviderSuite"]

_SUITES = {
    "GatewaySuite": "tollway_conformance.gateway_suite",
    "HookPluginSuite": "tollway_conformance.hook_plugin",
    "ProviderSuite": "tollway_conformance.provider",
}

if "pytest" in sys.modules:
    # Plain `assert`s in the suites get pytest's introspection when they fail.
    sys.modules["pytest"].register_assert_rewrite(*sorted(set(_SUITES.values())))


def __getattr__(name: str) -> Any:
    if name in _SUITES:
        return getattr(importlib.import_module(_SUITES[name]), name)
    raise AttributeError(f"module 'tollway_conformance' has no attribute {name!r}")
