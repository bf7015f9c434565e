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
"""

from __future__ import annotations

from tollway._server import bind_address, run_gateway

__all__ = ["bind_address", "run_gateway"]
