"""The operator console: server-rendered pages at ``/console`` (Quart templates, one local CSS
file, one small local script for the copy buttons; no build step, no CDN).

Served wherever the admin API is (``tollway control-plane`` and the embedded default of
``tollway serve``). Sign in with ``TOLLWAY_ADMIN_TOKEN`` or an API token; every page reads and
writes through the same service operations as the admin API and the CLI.
"""

from __future__ import annotations

from tollway_control_plane.console import explorer as _explorer  # noqa: F401 (routes)
from tollway_control_plane.console import keys as _keys  # noqa: F401 (routes)
from tollway_control_plane.console import overview as _overview  # noqa: F401 (routes)
from tollway_control_plane.console import resources as _resources  # noqa: F401 (routes)
from tollway_control_plane.console._web import PREFIX, blueprint

__all__ = ["PREFIX", "blueprint"]
