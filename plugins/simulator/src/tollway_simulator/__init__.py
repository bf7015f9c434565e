"""Tollway provider simulator: OpenAI and Anthropic wire formats on loopback, with faults."""

from __future__ import annotations

from tollway_simulator.cli import run_simulator, simulate
from tollway_simulator.faults import Fault, parse_fault
from tollway_simulator.fixtures import fixture_names, read_fixture
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
