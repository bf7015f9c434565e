"""The pluggy markers of the ``tollway`` project."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "tollway"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
