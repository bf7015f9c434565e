"""pytest entry point (``pytest11``): the suites' fixtures and command-line options.

Installed with ``tollway-conformance``, this plugin is active in every pytest run of the
environment. It adds only ``tollway_``-prefixed fixtures, so it does not clash with a
project's own:

``tollway_simulator`` (session)
    A running provider simulator (:class:`tollway_conformance.harness.Simulator`).
``tollway_gateway_factory`` (function)
    ``make(config_toml, env=None, **kw) -> GatewayProcess``: start gateways (see
    :func:`tollway_conformance.harness.start_gateway`), stopped after the test.
``tollway_target`` (session)
    The deployment :class:`~tollway_conformance.GatewaySuite` drives: ``--tollway-url``,
    ``--tollway-key`` and ``--tollway-model``, or ``TOLLWAY_CONFORMANCE_URL``,
    ``TOLLWAY_CONFORMANCE_KEY`` and ``TOLLWAY_CONFORMANCE_MODEL``. Without a URL and a key
    the suite is skipped; override the fixture to start a gateway of your own.

It also parametrizes the ``client_format`` argument of :class:`~tollway_conformance.ProviderSuite`
tests with the formats the adapter claims.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tollway_conformance.harness import (
    GatewayProcess,
    Simulator,
    Target,
    start_gateway,
    start_simulator,
    stop,
)

__all__ = [
    "tollway_gateway_factory",
    "tollway_simulator",
    "tollway_target",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tollway-conformance", "Tollway conformance suites")
    group.addoption(
        "--tollway-url",
        default=None,
        help="GatewaySuite: base URL of the gateway under test (env TOLLWAY_CONFORMANCE_URL)",
    )
    group.addoption(
        "--tollway-key",
        default=None,
        help="GatewaySuite: a virtual key of that gateway (env TOLLWAY_CONFORMANCE_KEY)",
    )
    group.addoption(
        "--tollway-model",
        default=None,
        help="GatewaySuite: a model the key may use (env TOLLWAY_CONFORMANCE_MODEL; "
        "default gpt-4o-mini)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cls = metafunc.cls
    formats = getattr(cls, "client_formats", None) if cls is not None else None
    if formats is not None and "client_format" in metafunc.fixturenames:
        only = getattr(metafunc.function, "conformance_formats", None)
        metafunc.parametrize("client_format", [f for f in formats() if only is None or f in only])


@pytest.fixture(scope="session")
def tollway_simulator() -> Iterator[Simulator]:
    """The provider simulator, one per test session."""
    sim = start_simulator()
    yield sim
    stop(sim.proc)


@pytest.fixture
def tollway_gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways with :func:`~tollway_conformance.harness.start_gateway`; all are
    stopped when the test ends."""
    started: list[GatewayProcess] = []

    def make(config: str = "", env: dict[str, str] | None = None, **kw: Any) -> GatewayProcess:
        gw = start_gateway(tmp_path / f"gw{len(started)}", config, env=env, **kw)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        stop(gw.proc)


@pytest.fixture(scope="session")
def tollway_target(pytestconfig: pytest.Config) -> Target:
    """The running gateway :class:`~tollway_conformance.GatewaySuite` checks."""
    url = pytestconfig.getoption("tollway_url") or os.environ.get("TOLLWAY_CONFORMANCE_URL")
    key = pytestconfig.getoption("tollway_key") or os.environ.get("TOLLWAY_CONFORMANCE_KEY")
    model = (
        pytestconfig.getoption("tollway_model")
        or os.environ.get("TOLLWAY_CONFORMANCE_MODEL")
        or "gpt-4o-mini"
    )
    if not url or not key:
        pytest.skip(
            "GatewaySuite needs a running gateway: pass --tollway-url URL --tollway-key KEY "
            "(or set TOLLWAY_CONFORMANCE_URL and TOLLWAY_CONFORMANCE_KEY)"
        )
    return Target(url.rstrip("/"), key, model)
