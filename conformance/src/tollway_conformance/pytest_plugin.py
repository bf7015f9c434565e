"""pytest entry point: makes the suites' fixtures available to plugin authors' tests."""

from __future__ import annotations
