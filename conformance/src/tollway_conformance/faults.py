"""What a provider suite may declare it can do, and the fault interface its upstream implements
(see docs/testing-plugins.md, "The fault interface")."""

from __future__ import annotations

__all__ = ["CAPABILITIES", "EVENT_DELAY_HEADER", "FAULT_HEADER", "OUTPUT_WORDS_HEADER"]

#: Capabilities a suite may declare, and what each turns on.
CAPABILITIES = {
    "streaming": "the stream checks (frames, text, mid-stream failure, client disconnect)",
    "tools": "the tool-call round trips through the official SDKs",
    "vision": "the image-input check (a small PNG in the client's format)",
    "embeddings": "the /v1/embeddings check (vectors back, input tokens reported)",
    "faults": (
        "the checks that ask the upstream for a failure through the fault interface "
        "(x-simulator-fault: 500 | timeout | midstream:N, x-simulator-output-words: N, "
        "x-simulator-event-delay-ms: N; see docs/testing-plugins.md)"
    ),
}
#: The fault interface: request headers the checks send through the gateway (adapters forward
#: them with ``forwardable_request_headers``); an upstream test server of your own implements
#: them. ``500``: answer HTTP 500; ``timeout``: never answer; ``midstream:N``: cut a stream
#: after N events.
FAULT_HEADER = "x-simulator-fault"
#: Answer with exactly N words (and stop with "length"/"max_tokens" past ``max_tokens``).
OUTPUT_WORDS_HEADER = "x-simulator-output-words"
#: Wait N ms between stream events.
EVENT_DELAY_HEADER = "x-simulator-event-delay-ms"
