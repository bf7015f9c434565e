"""For the cache-passthrough tests: a gateway started with :mod:`tollway.testing`, and Claude
Code's captured requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tollway.testing import GatewayProcess, StaticKey, default_providers
from tollway.testing import start_gateway as _start_gateway

DATA = Path(__file__).parent / "data"

#: The plugins these tests run with.
MODULES = (
    "tollway_cache_passthrough",
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
)


def start_gateway(tmp: Path, sim_url: str, keys: list[StaticKey]) -> GatewayProcess:
    """A gateway in front of ``sim_url`` (OpenAI serves ``gpt-*``, Anthropic ``claude-*``),
    without Redis."""
    openai_, anthropic_ = default_providers(sim_url)
    providers = [{**openai_, "models": ["gpt-*"]}, {**anthropic_, "models": ["claude-*"]}]
    env = {"SERVER_GRACEFUL_SECONDS": "1", "GATEWAY_REDIS_URL": ""}
    return _start_gateway(tmp, env=env, providers=providers, keys=keys, plugins=MODULES)


def claude_code_requests() -> list[dict[str, Any]]:
    """The two captured Claude Code requests (see data/SOURCE.md)."""
    return list(json.loads((DATA / "claude-code-2.1.330-tool.json").read_text()))


def claude_code_headers(capture: dict[str, Any], key: StaticKey) -> dict[str, str]:
    """The captured request's headers, with our key in ``x-api-key`` as Claude Code sends it."""
    pairs = capture["headers"]
    skip = {"x-api-key", "content-length", "connection", "accept-encoding", "host"}
    headers = {k: v for k, v in pairs if k.lower() not in skip}
    headers["x-api-key"] = key.secret
    return headers


def message_start_usage(sse: str) -> dict[str, Any]:
    """The ``usage`` of an Anthropic stream's ``message_start`` event."""
    for block in sse.split("\n\n"):
        if "event: message_start" in block:
            data = next(line[6:] for line in block.splitlines() if line.startswith("data: "))
            return dict(json.loads(data)["message"]["usage"])
    raise AssertionError(f"no message_start in the stream:\n{sse[:500]}")
