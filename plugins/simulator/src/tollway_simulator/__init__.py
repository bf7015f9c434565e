"""Tollway provider simulator: OpenAI and Anthropic wire formats on loopback, with faults."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway_simulator.cli import run_simulator, simulate
from tollway_simulator.faults import Fault, parse_fault
from tollway_simulator.fixtures import fixture_names, read_fixture

if TYPE_CHECKING:
    from tollway_simulator.server import (
        LISTENING_PREFIX,
        SIMULATOR_KEY,
        Simulator,
        Stats,
        create_app,
        start_simulator,
    )

__version__ = "0.1.0"

__all__ = [
    "LISTENING_PREFIX",
    "SIMULATOR_KEY",
    "Fault",
    "Simulator",
    "Stats",
    "__version__",
    "create_app",
    "fixture_names",
    "parse_fault",
    "read_fixture",
    "run_simulator",
    "simulate",
    "start_simulator",
]

_SERVER_NAMES = frozenset(
    {"LISTENING_PREFIX", "SIMULATOR_KEY", "Simulator", "Stats", "create_app", "start_simulator"}
)


def __getattr__(name: str) -> Any:
    # The server (aiohttp.web and every wire) is imported on first use: a gateway loading the
    # plugin for its ``simulate`` command does not pay for it.
    if name in _SERVER_NAMES:
        from tollway_simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
