"""Translation between the OpenAI Chat Completions, OpenAI Responses and Anthropic Messages wire
formats (SPEC §5). Chat is the hub: Messages translate both ways, Responses to chat and back.

A provider adapter translates when the client's wire format is not its own: an OpenAI-SDK client
asking an Anthropic provider for ``claude-*`` on ``/v1/chat/completions``, or an Anthropic-SDK
client asking an OpenAI(-compatible) provider for ``gpt-*`` on ``/v1/messages``. Same-format
lanes never come here: they stay byte-for-byte.

Everything in this module is pure (no I/O) so it can be property-tested, and it lives in the
core because several provider plugins need the same two directions (an Anthropic, Bedrock- or
Vertex-Claude adapter needs chat → messages; OpenAI, Azure and OpenAI-compatible adapters need
messages → chat) and plugins never import each other.

- Requests: :func:`chat_request_to_messages`, :func:`messages_request_to_chat` return a
  :class:`Translated` body plus the parameters the upstream cannot take (reported to the client
  in ``X-LangWatch-Params-Dropped``, see :func:`report_dropped`). A request that cannot be
  translated faithfully raises :class:`~tollway.BadRequest` naming the field.
- Responses: :func:`messages_response_to_chat`, :func:`chat_response_to_messages`.
- The OpenAI Responses API (``/v1/responses``) through the hub:
  :func:`responses_request_to_chat` (a request needing stored state — :data:`STATEFUL_PARAMS` —
  raises :class:`NeedsStoredState`, a :class:`~tollway.BadRequest`),
  :func:`chat_response_to_responses` and the stream translator :class:`ChatToResponsesStream`;
  :func:`responses_usage` / :func:`usage_to_responses` for its usage objects.
- Streams: :class:`MessagesToChatStream` and :class:`ChatToMessagesStream` re-frame one SSE event
  block at a time (one ``orjson.loads`` and, on the common delta path, one ``orjson.dumps`` per
  event); :func:`reframe_sse` drives either over the upstream's byte chunks.
- Shared shapes: stop-reason maps, :func:`chat_usage` / :func:`messages_usage` (upstream usage →
  :class:`~tollway.Usage`) and back (:func:`usage_to_chat`, :func:`usage_to_messages`), and the
  SSE writers :func:`sse_data` / :func:`sse_event` / :func:`chat_chunk` /
  :func:`chat_usage_chunk`.
- Request helpers for provider plugins whose wire is neither (Gemini, Bedrock Converse, …) and
  translate from the chat hub: :class:`DroppedParams` and :func:`dropped_chat_params`,
  :func:`chat_messages`, :func:`content_parts`, :func:`text_of_parts`, :func:`part_text`,
  :func:`image_part_url`, :func:`parse_data_url`, :func:`file_part_data`,
  :func:`tool_functions`, :func:`assistant_tool_calls`, :func:`tool_call_arguments`,
  :func:`require_object`, :func:`new_chat_completion_id`, :func:`new_tool_call_id`. They check
  and report exactly as the core's own translators do (same messages, same ``param``).

Every name is importable from ``tollway.formats``; the modules of the package group them by
direction (import from the package, the split may change):

- :mod:`tollway.formats.shapes`: errors, ``Sampling``, stop reasons, usage, SSE writers, the
  dropped-parameters report;
- :mod:`tollway.formats.helpers`: the request helpers above;
- :mod:`tollway.formats.chat_to_messages` and :mod:`tollway.formats.messages_to_chat`: requests;
- :mod:`tollway.formats.responses`: complete responses, both directions;
- :mod:`tollway.formats.streams`: the stream translators and :func:`reframe_sse`;
- :mod:`tollway.formats.responses_api` (requests), :mod:`tollway.formats.responses_output`
  (complete answers) and :mod:`tollway.formats.responses_stream`: the Responses API ⇄ chat;
  :mod:`tollway.formats.responses_tools`, their tools (function and custom tools, Codex's
  ``additional_tools``), is internal to them and not exported.
"""

from __future__ import annotations

from tollway.formats.chat_to_messages import chat_request_to_messages
from tollway.formats.helpers import (
    CHAT_COMMON_PARAMS,
    CHAT_NOOP_DEFAULTS,
    CHAT_ROLES,
    DroppedParams,
    assistant_tool_calls,
    chat_messages,
    content_parts,
    dropped_chat_params,
    file_part_data,
    image_part_url,
    new_chat_completion_id,
    new_tool_call_id,
    parse_data_url,
    part_text,
    require_object,
    text_of_parts,
    tool_call_arguments,
    tool_functions,
)
from tollway.formats.messages_to_chat import MAX_CHAT_STOP as MAX_CHAT_STOP
from tollway.formats.messages_to_chat import MAX_CHAT_USER as MAX_CHAT_USER
from tollway.formats.messages_to_chat import messages_request_to_chat
from tollway.formats.responses import (
    chat_response_to_messages,
    messages_response_to_chat,
)
from tollway.formats.responses_api import (
    RESPONSES_NOOP_DEFAULTS,
    STATEFUL_PARAMS,
    NeedsStoredState,
    responses_request_to_chat,
)
from tollway.formats.responses_output import (
    TRANSLATED_RESPONSE_PREFIX,
    chat_response_to_responses,
)
from tollway.formats.responses_stream import ChatToResponsesStream
from tollway.formats.shapes import (
    PARAMS_DROPPED_HEADER,
    SSE_DONE,
    Sampling,
    Translated,
    TranslationError,
    chat_chunk,
    chat_usage,
    chat_usage_chunk,
    finish_reason_from_stop,
    forget_dropped,
    messages_usage,
    report_dropped,
    responses_usage,
    sse_data,
    sse_event,
    stop_reason_from_finish,
    usage_to_chat,
    usage_to_messages,
    usage_to_responses,
)
from tollway.formats.streams import (
    ChatToMessagesStream,
    MessagesToChatStream,
    StreamTranslator,
    reframe_sse,
)

__all__ = [
    "CHAT_COMMON_PARAMS",
    "CHAT_NOOP_DEFAULTS",
    "CHAT_ROLES",
    "PARAMS_DROPPED_HEADER",
    "RESPONSES_NOOP_DEFAULTS",
    "SSE_DONE",
    "STATEFUL_PARAMS",
    "TRANSLATED_RESPONSE_PREFIX",
    "ChatToMessagesStream",
    "ChatToResponsesStream",
    "DroppedParams",
    "MessagesToChatStream",
    "NeedsStoredState",
    "Sampling",
    "StreamTranslator",
    "Translated",
    "TranslationError",
    "assistant_tool_calls",
    "chat_chunk",
    "chat_messages",
    "chat_request_to_messages",
    "chat_response_to_messages",
    "chat_response_to_responses",
    "chat_usage",
    "chat_usage_chunk",
    "content_parts",
    "dropped_chat_params",
    "file_part_data",
    "finish_reason_from_stop",
    "forget_dropped",
    "image_part_url",
    "messages_request_to_chat",
    "messages_response_to_chat",
    "messages_usage",
    "new_chat_completion_id",
    "new_tool_call_id",
    "parse_data_url",
    "part_text",
    "reframe_sse",
    "report_dropped",
    "require_object",
    "responses_request_to_chat",
    "responses_usage",
    "sse_data",
    "sse_event",
    "stop_reason_from_finish",
    "text_of_parts",
    "tool_call_arguments",
    "tool_functions",
    "usage_to_chat",
    "usage_to_messages",
    "usage_to_responses",
]
