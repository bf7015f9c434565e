"""The adapter passes the conformance kit's provider suite and hook-plugin suite, against a
stand-in for Acme's API (``standin_upstream.py``) — not the simulator: Acme has its own wire.

Capabilities declare what Acme can do; the checks for the rest are skipped with the reason
printed (``pytest -rs``). Acme has no tool calling, so ``tools`` is left out. Anthropic
clients are tested too: the core serves ``/v1/messages`` by translating to chat.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from standin_upstream import AcmeUpstream

from tollway_conformance import HookPluginSuite, ProviderSuite


class TestAcmeProvider(ProviderSuite):
    entry_point = "tollway-provider-acme-wire"
    provider_type = "acme"
    model = "acme-large"
    capabilities: ClassVar[frozenset[str]] = frozenset({"streaming", "faults"})
    upstream: ClassVar[AcmeUpstream | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def provider_upstream(cls) -> Iterator[str]:
        """Acme's stand-in instead of the simulator."""
        cls.upstream = AcmeUpstream()
        yield cls.upstream.url
        cls.upstream.stop()

    def upstream_disconnects(self, request: pytest.FixtureRequest) -> int:
        assert self.upstream is not None
        return self.upstream.disconnects


class TestAcmePluginConforms(HookPluginSuite):
    entry_point = "tollway-provider-acme-wire"
