"""The guardrail evaluator protocol (SPEC §6) and the text helpers evaluators share.

A guardrail **evaluator** judges one piece of content and answers with a :class:`tollway.Verdict`
(``allow``, ``block`` with a reason, or ``modify`` with the rewritten content). Evaluator plugins
register them by name (``register_guardrail_evaluators(register)`` → ``register("pii", obj)``);
the guardrails plugin (``tollway-guardrails``) reads a key's ``guardrails`` config, runs the named
evaluators for each direction and applies their verdicts to the request, the response or the
stream.

What an evaluator sees is one :class:`GuardrailRequest`. Its ``content`` has the shape of the
webhook evaluator's body (SPEC §6), whatever the client's wire format:

=================  ===========================================================================
direction          ``content``
=================  ===========================================================================
``pre``            ``{"messages": [{"role": "user", "content": "<text>"}, …], "model": "…"}`` —
                   one entry per piece of text in the request (a system prompt, a message's
                   text, a text part of a multi-part message, a tool result's text), in order
``post``           ``{"output": "<assistant text>", "outputs": ["<text>", …], "model": "…"}`` —
                   ``outputs`` has one entry per text part of the answer, ``output`` joins them
                   with newlines
``stream_chunk``   ``{"delta": "<text>", "deltas": ["<text>", …]}`` — the streamed text being
                   judged (the guardrails plugin's window: a chunk's text with the text it
                   still holds back), one entry per text, ``delta`` their concatenation
=================  ===========================================================================

A ``modify`` verdict carries content of the same shape in :attr:`Verdict.content`: the same
number of ``messages`` (only their ``content`` is read), or a new ``output``/``outputs``
(``delta``/``deltas``). :func:`content_texts` and :func:`with_texts` let an evaluator work on the
list of texts and build that answer without knowing the shapes.

The rest of this module maps those shapes onto the wire formats and back — pure functions, used by
the guardrails plugin and usable by anyone: :func:`request_texts` / :func:`set_texts` for request
bodies (OpenAI chat, Anthropic messages, OpenAI Responses, embeddings), :func:`response_texts` for
complete responses, :func:`parse_chunk` for SSE chunks (chat ``choices[].delta.content``,
Anthropic ``content_block_delta``/``text_delta``, Responses ``response.output_text.delta`` and
the events that repeat the full text).

Optional evaluator methods, found by duck typing:

* ``evaluate_sync(request) -> Verdict`` (:class:`SyncEvaluator`): a fast, CPU-only evaluation
  (microseconds: no I/O). The guardrails plugin runs it inline for ``stream_chunk``; evaluators
  without it are awaited within the stream budget (see the guardrails plugin's documentation).
* ``validate_settings(settings) -> list[str]``: problems with an inline evaluator object, one
  line each, checked when a key's config is written and when the gateway first uses it.
* ``async start()`` / ``async aclose()``: called by the guardrails plugin when the gateway starts
  and stops (open and close connections).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import attrs
import orjson

from tollway._sse import SSESplitter, event_fields, format_event
from tollway._types import Verdict

__all__ = [
    "DIRECTIONS",
    "ContentShapeError",
    "Direction",
    "Evaluator",
    "GuardrailRequest",
    "ParsedChunk",
    "Path",
    "SyncEvaluator",
    "TextSlot",
    "chunk_content",
    "content_texts",
    "merge_text",
    "merge_texts",
    "parse_chunk",
    "post_content",
    "pre_content",
    "request_texts",
    "response_texts",
    "set_texts",
    "texts_from_content",
    "with_texts",
]

#: The three guardrail directions, in request order.
Direction = Literal["pre", "post", "stream_chunk"]
DIRECTIONS: tuple[Direction, ...] = ("pre", "post", "stream_chunk")

#: Where a piece of text sits in a JSON document: object keys and array indexes.
Path = tuple[str | int, ...]

# Client endpoints (the values of ``RequestContext.endpoint``).
_CHAT = "chat"
_MESSAGES = "messages"
_RESPONSES = "responses"
_EMBEDDINGS = "embeddings"


@attrs.frozen
class GuardrailRequest:
    """What one evaluator is asked to judge."""

    #: ``"pre"`` (the request), ``"post"`` (a complete response) or ``"stream_chunk"``.
    direction: Direction
    #: The content in the shape of the module docstring's table.
    content: Mapping[str, Any]
    #: The key config's inline evaluator object (``{"evaluator": "webhook", "url": …}``), or
    #: ``{}`` when the config names the evaluator with a plain string.
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    #: The virtual key's id (never its secret).
    vk_id: str = ""
    #: The gateway request id (``grq_…``).
    request_id: str = ""
    #: How long the caller waits for the verdict; past it the evaluation is abandoned.
    timeout_s: float = 2.0
    #: The client endpoint (``chat``, ``messages``, ``responses``, ``embeddings``).
    endpoint: str = ""


@runtime_checkable
class Evaluator(Protocol):
    """A guardrail evaluator. ``evaluate`` must not block the event loop (``await`` I/O)."""

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        """Judge ``request.content``: ``Verdict("allow")``, ``Verdict("block", reason)`` or
        ``Verdict("modify", content=<same shape, rewritten>)``. Raise to report a failure
        (the guardrails plugin then fails closed or open as the key says)."""
        ...


@runtime_checkable
class SyncEvaluator(Evaluator, Protocol):
    """An evaluator that can also answer synchronously, in microseconds (no I/O)."""

    def evaluate_sync(self, request: GuardrailRequest) -> Verdict:
        """The same judgement as :meth:`Evaluator.evaluate`, without awaiting."""
        ...


class ContentShapeError(ValueError):
    """A ``modify`` verdict's content does not have the shape of what was judged."""


# --------------------------------------------------------------------------------------------
# Text slots in JSON documents
# --------------------------------------------------------------------------------------------


@attrs.frozen
class TextSlot:
    """One piece of text in a JSON document: where it is, whose it is, and what it says."""

    path: Path
    role: str
    text: str


def _role(message: Mapping[str, Any], default: str = "user") -> str:
    role = message.get("role")
    return role if isinstance(role, str) and role else default


def _parts(out: list[TextSlot], base: Path, content: Any, role: str, kinds: frozenset[str]) -> None:
    """Text of a ``content`` that is a string or a list of typed parts."""
    if isinstance(content, str):
        out.append(TextSlot(base, role, content))
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in kinds:
                text = part.get("text")
                if isinstance(text, str):
                    out.append(TextSlot((*base, j, "text"), role, text))


_TEXT = frozenset({"text"})
_RESPONSES_PARTS = frozenset({"input_text", "output_text", "text"})


def _chat_request(body: Mapping[str, Any], out: list[TextSlot]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        if isinstance(message, dict):
            _parts(out, ("messages", i, "content"), message.get("content"), _role(message), _TEXT)


def _messages_request(body: Mapping[str, Any], out: list[TextSlot]) -> None:
    _parts(out, ("system",), body.get("system"), "system", _TEXT)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role = _role(message)
        content = message.get("content")
        base: Path = ("messages", i, "content")
        if isinstance(content, str):
            out.append(TextSlot(base, role, content))
            continue
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                out.append(TextSlot((*base, j, "text"), role, block["text"]))
            elif kind == "tool_result":
                _parts(out, (*base, j, "content"), block.get("content"), "tool", _TEXT)


def _responses_request(body: Mapping[str, Any], out: list[TextSlot]) -> None:
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        out.append(TextSlot(("instructions",), "system", instructions))
    items = body.get("input")
    if isinstance(items, str):
        out.append(TextSlot(("input",), "user", items))
        return
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in (None, "message") and "role" in item:
            _parts(out, ("input", i, "content"), item.get("content"), _role(item), _RESPONSES_PARTS)
        elif kind == "function_call_output" and isinstance(item.get("output"), str):
            out.append(TextSlot(("input", i, "output"), "tool", item["output"]))


def _embeddings_request(body: Mapping[str, Any], out: list[TextSlot]) -> None:
    value = body.get("input")
    if isinstance(value, str):
        out.append(TextSlot(("input",), "user", value))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(TextSlot(("input", i), "user", item))


def _prompt_request(body: Mapping[str, Any], out: list[TextSlot]) -> None:
    value = body.get("prompt")
    if isinstance(value, str):
        out.append(TextSlot(("prompt",), "user", value))


_REQUEST_READERS = {
    _CHAT: _chat_request,
    _MESSAGES: _messages_request,
    _RESPONSES: _responses_request,
    _EMBEDDINGS: _embeddings_request,
    # The other wires' text: what guardrails judge (and may redact) there too.
    "count_tokens": _messages_request,
    "moderations": _embeddings_request,
    "speech": _embeddings_request,
    "images": _prompt_request,
    "transcriptions": _prompt_request,
}


def request_texts(endpoint: str, body: Mapping[str, Any]) -> list[TextSlot]:
    """Every piece of text in a request body, in document order, with its role.

    ``endpoint`` is the client's (``chat``, ``messages``, ``responses``, ``embeddings``; also
    ``count_tokens``'s messages, ``moderations``' and ``speech``'s ``input``, ``images``' and
    ``transcriptions``' ``prompt``); an unknown one has no text. System prompts have role
    ``system``, tool results ``tool``. Images, tool definitions and tool-call arguments are not
    text here.
    """
    reader = _REQUEST_READERS.get(endpoint)
    out: list[TextSlot] = []
    if reader is not None:
        reader(body, out)
    return out


def response_texts(endpoint: str, body: Any) -> list[TextSlot]:
    """The assistant's text in a complete (non-streaming) response, in order (role
    ``assistant``): chat ``choices[].message.content``, Anthropic ``content[]`` text blocks,
    Responses ``output[]`` message items' ``output_text`` parts."""
    out: list[TextSlot] = []
    if not isinstance(body, dict):
        return out
    if endpoint == _CHAT:
        choices = body.get("choices")
        if isinstance(choices, list):
            for i, choice in enumerate(choices):
                message = choice.get("message") if isinstance(choice, dict) else None
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    path: Path = ("choices", i, "message", "content")
                    out.append(TextSlot(path, "assistant", message["content"]))
    elif endpoint == _MESSAGES:
        content = body.get("content")
        if isinstance(content, list):
            _parts(out, ("content",), content, "assistant", _TEXT)
    elif endpoint == _RESPONSES:
        output = body.get("output")
        if isinstance(output, list):
            for i, item in enumerate(output):
                if isinstance(item, dict) and item.get("type") == "message":
                    content = item.get("content")
                    if isinstance(content, list):
                        _parts(out, ("output", i, "content"), content, "assistant", _OUTPUT_TEXT)
    return out


_OUTPUT_TEXT = frozenset({"output_text"})


def set_texts(doc: Any, slots: Sequence[TextSlot], texts: Sequence[str]) -> Any:
    """``doc`` with each slot's text replaced by the text at the same index of ``texts``.

    Copy on write: ``doc`` is not modified, and only the containers on the path to a changed
    text are copied. Slots whose text is unchanged cost nothing; when none changed, ``doc``
    itself is returned.
    """
    if len(slots) != len(texts):
        raise ValueError(f"{len(texts)} texts for {len(slots)} slots")
    copies: dict[int, Any] = {}

    def copy_of(node: Any) -> Any:
        made = copies.get(id(node))
        if made is None:
            made = list(node) if isinstance(node, list) else dict(node)
            copies[id(node)] = made
            copies[id(made)] = made
        return made

    root: Any = None
    for slot, text in zip(slots, texts, strict=True):
        if text == slot.text:
            continue
        if root is None:
            root = copy_of(doc)
        node = root
        for key in slot.path[:-1]:
            child = copy_of(node[key])
            node[key] = child
            node = child
        node[slot.path[-1]] = text
    return doc if root is None else root


# --------------------------------------------------------------------------------------------
# The evaluator-facing content shapes
# --------------------------------------------------------------------------------------------


def pre_content(slots: Sequence[TextSlot], model: Any = None) -> dict[str, Any]:
    """The ``pre`` content for a request's text slots."""
    content: dict[str, Any] = {"messages": [{"role": s.role, "content": s.text} for s in slots]}
    if isinstance(model, str):
        content["model"] = model
    return content


def post_content(texts: Sequence[str], model: Any = None) -> dict[str, Any]:
    """The ``post`` content for a response's texts."""
    content: dict[str, Any] = {"output": "\n".join(texts), "outputs": list(texts)}
    if isinstance(model, str):
        content["model"] = model
    return content


def chunk_content(texts: Sequence[str]) -> dict[str, Any]:
    """The ``stream_chunk`` content for a chunk's text deltas."""
    return {"delta": "".join(texts), "deltas": list(texts)}


_JOINED = {"post": ("output", "outputs", "\n"), "stream_chunk": ("delta", "deltas", "")}


def content_texts(direction: Direction, content: Mapping[str, Any]) -> list[str]:
    """The texts of a content object: the messages' contents (``pre``), ``outputs`` (``post``)
    or ``deltas`` (``stream_chunk``) — falling back to the joined string when the list is
    absent. Entries that are not strings read as ``""``."""
    if direction == "pre":
        messages = content.get("messages")
        if not isinstance(messages, list):
            return []
        return [
            m["content"] if isinstance(m, dict) and isinstance(m.get("content"), str) else ""
            for m in messages
        ]
    one, many, _ = _JOINED[direction]
    values = content.get(many)
    if isinstance(values, list):
        return [v if isinstance(v, str) else "" for v in values]
    value = content.get(one)
    return [value] if isinstance(value, str) else []


def with_texts(
    direction: Direction, content: Mapping[str, Any], texts: Sequence[str]
) -> dict[str, Any]:
    """A copy of ``content`` with its texts (as :func:`content_texts` lists them) replaced —
    the content of a ``modify`` verdict."""
    out = dict(content)
    if direction == "pre":
        messages = content.get("messages")
        old = messages if isinstance(messages, list) else []
        if len(old) != len(texts):
            raise ValueError(f"{len(texts)} texts for {len(old)} messages")
        out["messages"] = [
            {**m, "content": t} if isinstance(m, dict) else {"role": "user", "content": t}
            for m, t in zip(old, texts, strict=True)
        ]
        return out
    one, many, sep = _JOINED[direction]
    out[many] = list(texts)
    out[one] = sep.join(texts)
    return out


def texts_from_content(direction: Direction, modified: Any, original: Sequence[str]) -> list[str]:
    """The slot texts a ``modify`` verdict's content asks for, one per entry of ``original``.

    ``pre``: ``messages`` must have as many entries as were sent, each with a string
    ``content``. ``post`` / ``stream_chunk``: a changed ``outputs``/``deltas`` list of the same
    length wins; otherwise a changed ``output``/``delta`` string replaces the first text and
    empties the others (the only mapping when several texts were joined). Raises
    :class:`ContentShapeError` naming what is wrong.
    """
    if not isinstance(modified, Mapping):
        raise ContentShapeError(
            f"modified_content must be an object, not {type(modified).__name__}"
        )
    n = len(original)
    if direction == "pre":
        messages = modified.get("messages")
        if not isinstance(messages, list):
            raise ContentShapeError("modified_content.messages must be an array")
        if len(messages) != n:
            raise ContentShapeError(
                f"modified_content.messages has {len(messages)} entries; it must have the "
                f"{n} that were sent, in the same order"
            )
        texts: list[str] = []
        for i, message in enumerate(messages):
            text = message.get("content") if isinstance(message, Mapping) else None
            if not isinstance(text, str):
                raise ContentShapeError(f"modified_content.messages[{i}].content must be a string")
            texts.append(text)
        return texts
    one, many, sep = _JOINED[direction]
    values = modified.get(many)
    value = modified.get(one)
    if values is not None:
        if (
            not isinstance(values, list)
            or len(values) != n
            or not all(isinstance(v, str) for v in values)
        ):
            raise ContentShapeError(
                f"modified_content.{many} must be an array of {n} strings, like the one sent"
            )
        if list(values) != list(original) or value is None:
            return list(values)
    if value is None:
        raise ContentShapeError(f"modified_content needs {one!r} (a string) or {many!r}")
    if not isinstance(value, str):
        raise ContentShapeError(f"modified_content.{one} must be a string")
    if value == sep.join(original):
        return list(original)
    if n <= 1:
        return [value]
    return [value] + [""] * (n - 1)


def merge_texts(original: Sequence[str], versions: Sequence[Sequence[str]]) -> list[str]:
    """Combine several evaluators' rewrites of the same texts, in config order.

    The evaluators of a direction judge the same original concurrently, so each version is
    turned into word-level edits of the original (:func:`merge_text`): edits that touch
    different words all apply (one evaluator redacts an email, another a name in the same
    message); where two edits overlap, the later version's wins. Texts no version changed stay
    as they were. (Where a text repeats the same words, which occurrence an edit belongs to can
    be ambiguous; each version is still applied as a whole edit script.)
    """
    for version in versions:
        if len(version) != len(original):
            raise ValueError(f"a version has {len(version)} texts, not {len(original)}")
    return [merge_text(text, [v[i] for v in versions]) for i, text in enumerate(original)]


_TOKEN = re.compile(r"\s+|\S+")
#: Past this many characters, overlapping versions are not diffed: the last one that changed
#: the text wins whole (diffing is quadratic in the worst case).
_MAX_DIFF_CHARS = 100_000

_Edit = tuple[int, int, str, int]  # start, end (in the original), replacement, version index


def _conflict(a: _Edit, b: _Edit) -> bool:
    s1, e1, s2, e2 = a[0], a[1], b[0], b[1]
    if s1 == e1 and s2 == e2:
        return False  # two insertions at one point: both kept, in order
    if s1 == e1:
        return s2 < s1 < e2
    if s2 == e2:
        return s1 < s2 < e1
    return s1 < e2 and s2 < e1


def merge_text(original: str, versions: Sequence[str]) -> str:
    """One text's versions combined (see :func:`merge_texts`)."""
    changed = [v for v in versions if v != original]
    if not changed:
        return original
    if len(changed) == 1:
        return changed[0]
    if len(original) > _MAX_DIFF_CHARS or any(len(v) > _MAX_DIFF_CHARS for v in changed):
        return changed[-1]
    tokens = _TOKEN.findall(original)
    offsets = [0]
    for token in tokens:
        offsets.append(offsets[-1] + len(token))
    accepted: list[_Edit] = []
    for n, version in enumerate(changed):
        theirs = _TOKEN.findall(version)
        matcher = difflib.SequenceMatcher(None, tokens, theirs, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            edit: _Edit = (offsets[i1], offsets[i2], "".join(theirs[j1:j2]), n)
            accepted = [e for e in accepted if not _conflict(e, edit)]
            accepted.append(edit)
    accepted.sort(key=lambda e: (e[0], e[0] != e[1], e[3]))
    out: list[str] = []
    pos = 0
    for start, end, replacement, _ in accepted:
        out.append(original[pos:start])
        out.append(replacement)
        pos = max(pos, end)
    out.append(original[pos:])
    return "".join(out)


# --------------------------------------------------------------------------------------------
# SSE chunks
# --------------------------------------------------------------------------------------------

#: Substrings an event must contain to possibly carry text, by endpoint (cheap pre-filter).
_CHUNK_MARKERS = {_CHAT: b'"content"', _MESSAGES: b"text", _RESPONSES: b"output_text"}
_RESPONSE_SNAPSHOTS = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)


@attrs.frozen
class _ChunkSlot:
    event: int
    slot: TextSlot


def _chat_event(doc: Any, out: list[TextSlot]) -> None:
    choices = doc.get("choices")
    if not isinstance(choices, list):
        return
    for i, choice in enumerate(choices):
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(TextSlot(("choices", i, "delta", "content"), "assistant", text))


def _messages_event(doc: Any, out: list[TextSlot]) -> None:
    kind = doc.get("type")
    if kind == "content_block_delta":
        delta = doc.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                out.append(TextSlot(("delta", "text"), "assistant", text))
    elif kind == "content_block_start":
        block = doc.get("content_block")
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                out.append(TextSlot(("content_block", "text"), "assistant", text))


def _nonempty(slots: list[TextSlot], out: list[TextSlot]) -> None:
    out.extend(s for s in slots if s.text)


def _responses_item(item: Any, base: Path, out: list[TextSlot]) -> None:
    if isinstance(item, dict) and item.get("type") == "message":
        found: list[TextSlot] = []
        _parts(found, (*base, "content"), item.get("content"), "assistant", _OUTPUT_TEXT)
        _nonempty(found, out)


def _responses_event(doc: Any, out: list[TextSlot]) -> None:
    kind = doc.get("type")
    if kind == "response.output_text.delta":
        text = doc.get("delta")
        if isinstance(text, str) and text:
            out.append(TextSlot(("delta",), "assistant", text))
    elif kind == "response.output_text.done":
        text = doc.get("text")
        if isinstance(text, str) and text:
            out.append(TextSlot(("text",), "assistant", text))
    elif kind in ("response.content_part.added", "response.content_part.done"):
        part = doc.get("part")
        if isinstance(part, dict) and part.get("type") == "output_text":
            text = part.get("text")
            if isinstance(text, str) and text:
                out.append(TextSlot(("part", "text"), "assistant", text))
    elif kind in ("response.output_item.added", "response.output_item.done"):
        _responses_item(doc.get("item"), ("item",), out)
    elif kind in _RESPONSE_SNAPSHOTS:
        response = doc.get("response")
        output = response.get("output") if isinstance(response, dict) else None
        if isinstance(output, list):
            for i, item in enumerate(output):
                _responses_item(item, ("response", "output", i), out)


_EVENT_READERS = {_CHAT: _chat_event, _MESSAGES: _messages_event, _RESPONSES: _responses_event}


class ParsedChunk:
    """The text deltas of one chunk of complete SSE events, ready to be rewritten.

    Built by :func:`parse_chunk`. :attr:`texts` lists the non-empty text deltas in stream order
    (for Responses streams also the full texts that ``*.done`` and ``response.completed`` events
    repeat, so a rewrite reaches what the SDKs assemble at the end); :meth:`rewrite` returns the
    chunk with new texts, re-serialising only the events whose text changed.
    """

    __slots__ = ("_blocks", "_docs", "_names", "_slots")

    def __init__(
        self,
        blocks: list[bytes],
        names: dict[int, str | None],
        docs: dict[int, Any],
        slots: list[_ChunkSlot],
    ) -> None:
        self._blocks = blocks
        self._names = names
        self._docs = docs
        self._slots = slots

    @property
    def texts(self) -> list[str]:
        """The chunk's text deltas, in order."""
        return [s.slot.text for s in self._slots]

    @property
    def slots(self) -> list[TextSlot]:
        """The same texts with where each sits in its event's JSON (``("choices", 0, "delta",
        "content")``, ``("delta", "text")``, ``("response", "output", 0, "content", 0,
        "text")``, …): a path containing ``"delta"`` is a piece of a longer text."""
        return [s.slot for s in self._slots]

    def rewrite(self, texts: Sequence[str]) -> bytes:
        """The chunk's bytes with its text deltas replaced by ``texts`` (same length).

        Events whose text did not change are kept byte for byte; a changed event is written
        again as ``event: <name>`` (when it had one) and one ``data:`` line.
        """
        if len(texts) != len(self._slots):
            raise ValueError(f"{len(texts)} texts for {len(self._slots)} deltas")
        changed: dict[int, tuple[list[TextSlot], list[str]]] = {}
        for cs, text in zip(self._slots, texts, strict=True):
            if text != cs.slot.text:
                changed.setdefault(cs.event, ([], []))
        if not changed:
            return b"".join(self._blocks)
        for cs, text in zip(self._slots, texts, strict=True):
            entry = changed.get(cs.event)
            if entry is not None:
                entry[0].append(cs.slot)
                entry[1].append(text)
        out = list(self._blocks)
        for index, (slots, new) in changed.items():
            doc = set_texts(self._docs[index], slots, new)
            out[index] = format_event(orjson.dumps(doc), self._names[index])
        return b"".join(out)


def parse_chunk(endpoint: str, chunk: bytes | bytearray) -> ParsedChunk | None:
    """Find the text deltas in a chunk of complete SSE events of the ``endpoint``'s stream
    format; ``None`` when it has none (most chunks of a stream cost one substring test)."""
    marker = _CHUNK_MARKERS.get(endpoint)
    if marker is None or marker not in chunk:
        return None
    reader = _EVENT_READERS[endpoint]
    splitter = SSESplitter()
    blocks = splitter.feed(bytes(chunk))
    tail = splitter.tail()
    if tail:
        blocks.append(tail)
    names: dict[int, str | None] = {}
    docs: dict[int, Any] = {}
    slots: list[_ChunkSlot] = []
    for index, block in enumerate(blocks):
        if marker not in block:
            continue
        name, data = event_fields(block)
        if not data or data == b"[DONE]":
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        found: list[TextSlot] = []
        reader(doc, found)
        if found:
            names[index] = name
            docs[index] = doc
            slots.extend(_ChunkSlot(index, s) for s in found)
    if not slots:
        return None
    return ParsedChunk(blocks, names, docs, slots)
