"""Fixtures of the simulator's tests: one simulator subprocess per test module (``url``) and the
official SDK clients pointed at it. Registered by each test module with ``pytest_plugins`` (a
conftest.py here would shadow the repository-wide tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from simulator_helpers import _start, _stop


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    proc, base_url = _start()
    try:
        yield base_url
    finally:
        _stop(proc)


@pytest.fixture
def oai(url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-key", max_retries=0, timeout=10)
    yield client
    client.close()


@pytest.fixture
def ant(url: str) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0, timeout=10)
    yield client
    client.close()
