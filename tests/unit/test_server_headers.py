"""The ``date`` and ``server`` headers Hypercorn adds to every response, formatted once per
second by the gateway's server config."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from tollway._server import _ServerConfig


def test_date_and_server_headers_are_current_and_a_fresh_list_each_time() -> None:
    config = _ServerConfig()
    first = config.response_headers("h11")
    headers = dict(first)
    assert headers[b"server"] == b"hypercorn-h11"
    sent = parsedate_to_datetime(headers[b"date"].decode()).timestamp()
    assert abs(sent - time.time()) <= 2
    first.append((b"x-mutated", b"1"))  # Hypercorn's callers may extend what they get
    assert (b"x-mutated", b"1") not in config.response_headers("h11")
    assert dict(config.response_headers("h2"))[b"server"] == b"hypercorn-h2"


def test_the_date_moves_on_with_the_clock() -> None:
    config = _ServerConfig()
    before = dict(config.response_headers("h11"))[b"date"]
    deadline = time.time() + 3
    while time.time() < deadline:
        now = dict(config.response_headers("h11"))[b"date"]
        if now != before:
            break
        time.sleep(0.05)
    assert now != before
