"""``tollway.spans``: plugins offer in-process span sinks through ``register_span_sinks``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tollway import hookimpl
from tollway.config import Settings
from tollway.gateway import Gateway
from tollway.spans import SpanSink, span_sinks


class Sink:
    name = "test"

    def export(self, body: bytes, auth_token: str | None) -> None:
        pass


class Offers:
    def __init__(self, sink: object) -> None:
        self.sink = sink
        self.calls = 0

    @hookimpl
    def register_span_sinks(self, register: Callable[[SpanSink], None]) -> None:
        self.calls += 1
        register(self.sink)  # type: ignore[arg-type]


def gateway(*plugins: object) -> Gateway:
    extra = [(f"p{i}", p) for i, p in enumerate(plugins)]
    return Gateway(Settings(), extra_plugins=extra, load_installed=False)


def test_sinks_are_collected_once() -> None:
    sink = Sink()
    offers = Offers(sink)
    gw = gateway(offers)
    assert span_sinks(gw) == [sink]
    assert span_sinks(gw) == [sink]
    assert offers.calls == 1


def test_no_plugin_no_sink() -> None:
    assert span_sinks(gateway()) == []


def test_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match=r"is not a tollway\.spans\.SpanSink"):
        span_sinks(gateway(Offers(object())))
