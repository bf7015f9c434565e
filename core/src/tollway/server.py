"""Running a gateway in the current process, as ``tollway serve`` does.

:func:`run_gateway` serves a :class:`tollway.gateway.Gateway` on Hypercorn (uvloop where
available) at ``SERVER_ADDR`` until SIGTERM/SIGINT, then drains (SPEC §8): ``/readyz`` turns 503,
new connections are refused, in-flight requests and streams get ``SERVER_GRACEFUL_SECONDS``, and
the plugins' ``gateway_stopping`` flush what they hold. For a program that hosts a gateway with
extra plugins of its own (the conformance kit's probe)::

    from tollway.config import load_settings
    from tollway.gateway import Gateway
    from tollway.logs import configure_logging
    from tollway.server import run_gateway

    settings = load_settings(config_file="tollway.toml")
    configure_logging(settings.log.format, settings.log.level)
    run_gateway(Gateway(settings, extra_plugins=[("my-probe", probe)]))

:func:`bind_address` turns a ``SERVER_ADDR`` value into the address Hypercorn binds.

Under ``tollway serve --workers N`` (N > 1) every worker is a gateway of its own; when the
supervisor runs the embedded control plane for them, :func:`supervised_control_plane` gives its
loopback URL in a worker (the control-plane plugin relays its HTTP API there), else None;
:func:`serves_workers` is True in that control plane process.
:func:`worker_index` is the worker's index (0…N-1), None outside a supervisor.
"""

from __future__ import annotations

from tollway._server import (
    bind_address,
    run_gateway,
    serves_workers,
    supervised_control_plane,
    worker_index,
)

__all__ = [
    "bind_address",
    "run_gateway",
    "serves_workers",
    "supervised_control_plane",
    "worker_index",
]
