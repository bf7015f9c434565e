"""What every part of the benchmark shares: paths, pinned versions, the request and response
bodies, and the log line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = Path(os.environ.get("TOLLWAY_BENCH_CACHE") or Path.home() / ".cache" / "tollway-bench")

#: The newest LiteLLM whose pinned dependencies all resolve from the registry this project uses
#: (1.106.3+ pin certifi>=2026.10.19, 1.109 also litellm-proxy-extras 0.4.113, neither there yet).
#: Never 1.107.0: that release was compromised and withdrawn.
LITELLM_SPEC = "litellm[proxy]==1.106.2"
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
ALL_TARGETS = ("direct", "bare", "loaded", "working", "litellm", "portkey")
#: Where a target with ``vary`` gets a per-request counter (bench/loadgen -vary, the wrk script).
VARY_MARKER = "@VARY@"
MODES = ("instant", "sse200", "paced", "delay60")
UPSTREAM_KEY = "sk-bench-upstream"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
SSE_EVENTS = 200
PACE_SECONDS = 0.005
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- payloads -------------------------------------------------------------------------------


def request_body(model: str, *, stream: bool, vary: bool = False) -> bytes:
    """The one request body every target gets (a small chat call declaring one tool); with
    ``vary`` the user message ends with :data:`VARY_MARKER`, which the load tools replace with a
    per-request counter."""
    question = "What is the weather in Paris today? One sentence."
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": question + (f" Ref {VARY_MARKER}." if vary else "")},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def completion_json() -> str:
    """An OpenAI ``chat.completion`` the upstream returns at once (~670 bytes)."""
    return json.dumps(
        {
            "id": "chatcmpl-bench0000000000000000000001",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Mild and partly cloudy in Paris today, around 18 degrees.",
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 52,
                "completion_tokens": 16,
                "total_tokens": 68,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_bench0001",
        },
        separators=(",", ":"),
    )


def sse_events(count: int = SSE_EVENTS) -> list[str]:
    """``count`` OpenAI ``chat.completion.chunk`` events (role, tokens, finish, usage, [DONE])."""
    head = (
        '{"id":"chatcmpl-bench0000000000000000000002","object":"chat.completion.chunk",'
        '"created":1700000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench0001",'
    )

    def chunk(delta: str, finish: str = "null") -> str:
        return (
            f'data: {head}"choices":[{{"index":0,"delta":{delta},"logprobs":null,'
            f'"finish_reason":{finish}}}]}}\n\n'
        )

    events = [chunk('{"role":"assistant","content":"","refusal":null}')]
    tokens = count - 4
    events += [chunk(f'{{"content":" word{i}"}}') for i in range(tokens)]
    events.append(chunk("{}", '"stop"'))
    events.append(
        f'data: {head}"choices":[],"usage":{{"prompt_tokens":52,"completion_tokens":{tokens},'
        f'"total_tokens":{52 + tokens}}}}}\n\n'
    )
    events.append("data: [DONE]\n\n")
    assert len(events) == count
    return events
