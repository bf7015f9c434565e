"""Logging set-up for a Tollway process: JSON lines (or one pretty line) on stderr (SPEC §7).

``tollway serve`` calls :func:`configure_logging` itself; a program that runs a gateway or a
standalone service of its own (the control plane's ``tollway control-plane``, the conformance
kit's gateway) calls it once at start-up with the settings' ``log.format`` and ``log.level``,
so every process of a deployment logs alike. Each line carries the id of the request being
served (:data:`request_id_var`, set by the gateway) when there is one.
"""

from __future__ import annotations

from tollway._logging import configure_logging, request_id_var

__all__ = ["configure_logging", "request_id_var"]
