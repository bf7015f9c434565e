"""Candidate extraction: which tools, MCP servers and URLs a request puts in front of the model.

Pure functions over the parsed body, for every request shape the gateway serves (OpenAI chat,
Anthropic messages, OpenAI Responses including Codex's ``additional_tools`` input items). A tool
is reported wherever it can travel — declared in ``tools``, named by ``tool_choice``, or called in
the conversation history — so a tool cannot be smuggled past a rule through a place the rules
did not look at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import re2

__all__ = [
    "UNNAMED_MCP_SERVER",
    "Candidate",
    "Candidates",
    "extract",
    "mcp_candidates",
    "tool_candidates",
    "url_candidates",
]

#: One thing to judge, as the tuple of forms it is judged under; ``[0]`` is the display name.
#: A namespaced tool ``functions.exec`` is ``("functions.exec", "exec")``: a deny pattern
#: matching either form refuses it, an allow pattern matching either form admits it.
Candidate = tuple[str, ...]

#: The MCP candidate of a server entry that carries no name, id, label or URL: an allow list
#: refuses it (it matches no sensible allow pattern), a deny list cannot name it.
UNNAMED_MCP_SERVER = "(unnamed)"

_MCP_BODY_KEYS = ("mcp", "mcps", "mcp_servers")
_MCP_ENTRY_FIELDS = ("name", "id", "server_label", "url")
_MCP_TOOL_FIELDS = ("server_label", "name", "server_url", "connector_id")
# tool_choice values that are modes, not the name of a hosted tool.
_CHOICE_MODES = frozenset(
    {"auto", "none", "required", "any", "tool", "function", "custom", "allowed_tools", "mcp"}
)
_TOOL_CALL_ITEMS = frozenset({"function_call", "custom_tool_call"})
_MCP_ITEMS = frozenset({"mcp_call", "mcp_list_tools", "mcp_approval_request"})
_TOOL_USE_BLOCKS = frozenset({"tool_use", "server_tool_use"})

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
# One pattern for every http(s) URL inside a string; no leading \b, so "xhttps://evil" still
# yields https://evil (the model would read it too).
_URL = re2.compile(r"(?i)https?://[^\s\"'<>\\^`{|}]+", _OPTIONS)
_TRAILING_PUNCTUATION = ".,;:!?"


@attrs.frozen
class Candidates:
    """What one request is judged on, per dimension (``None`` = that dimension not extracted)."""

    tools: list[Candidate] | None = None
    mcp: list[str] | None = None
    urls: list[str] | None = None


class _Collector:
    """Walks the places tools and MCP servers travel, deduplicating as it goes."""

    __slots__ = ("mcp", "tools")

    def __init__(self) -> None:
        self.tools: dict[str, Candidate] = {}
        self.mcp: dict[str, None] = {}

    # --- sinks ------------------------------------------------------------------------------

    def tool(self, name: Any, namespace: Any = None) -> bool:
        if not isinstance(name, str) or not name:
            return False
        if isinstance(namespace, str) and namespace:
            full = f"{namespace}.{name}"
            if full not in self.tools:
                self.tools[full] = (full, name)
        elif name not in self.tools:
            self.tools[name] = (name,)
        return True

    def server(self, label: Any) -> None:
        if isinstance(label, str) and label:
            self.mcp[label] = None

    # --- shapes -----------------------------------------------------------------------------

    def named(self, obj: Mapping[str, Any], namespace: Any) -> bool:
        """Names of a tool-ish object: ``name``, ``function.name``, ``custom.name``."""
        found = self.tool(obj.get("name"), namespace)
        for nested in ("function", "custom"):
            inner = obj.get(nested)
            if isinstance(inner, dict) and self.tool(inner.get("name"), namespace):
                found = True
        return found

    def declared(self, tool: Any, namespace: Any = None) -> None:
        """One entry of a ``tools`` list (any provider's shape)."""
        if isinstance(tool, str):
            self.tool(tool, namespace)
            return
        if not isinstance(tool, dict):
            return
        kind = tool.get("type")
        if kind == "namespace":
            name = tool.get("name")
            prefix = name if isinstance(name, str) and name else None
            if prefix and isinstance(namespace, str) and namespace:
                prefix = f"{namespace}.{prefix}"
            inner = tool.get("tools")
            if isinstance(inner, list):
                for entry in inner:
                    self.declared(entry, prefix or namespace)
            return
        if kind == "mcp":
            self.server(_first_str(tool, _MCP_TOOL_FIELDS) or UNNAMED_MCP_SERVER)
            return
        if kind == "mcp_toolset":
            self.server(tool.get("mcp_server_name") or UNNAMED_MCP_SERVER)
            return
        if not self.named(tool, namespace) and isinstance(kind, str) and kind:
            # A hosted tool without a name (Responses web_search, file_search, …).
            self.tool(kind, namespace)

    def choice(self, choice: Any) -> None:
        """``tool_choice`` (every provider's shape) or the legacy ``function_call``."""
        if not isinstance(choice, dict):
            return
        kind = choice.get("type")
        if kind == "allowed_tools":
            inner = choice.get("tools")
            if not isinstance(inner, list):
                nested = choice.get("allowed_tools")
                inner = nested.get("tools") if isinstance(nested, dict) else None
            if isinstance(inner, list):
                for entry in inner:
                    self.declared(entry)
            return
        if kind == "mcp":
            self.server(choice.get("server_label") or UNNAMED_MCP_SERVER)
            return
        if not self.named(choice, None) and isinstance(kind, str) and kind not in _CHOICE_MODES:
            self.tool(kind)

    def item(self, item: Any) -> None:
        """One conversation item: a chat/Anthropic message or a Responses input item."""
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        if kind == "additional_tools":
            tools = item.get("tools")
            if isinstance(tools, list):
                for tool in tools:
                    self.declared(tool)
        elif kind in _TOOL_CALL_ITEMS:
            self.tool(item.get("name"), item.get("namespace"))
        elif kind in _MCP_ITEMS:
            self.server(item.get("server_label") or UNNAMED_MCP_SERVER)
        calls = item.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self.named(call, None)
        legacy = item.get("function_call")
        if isinstance(legacy, dict):
            self.tool(legacy.get("name"))
        if item.get("role") == "function":
            self.tool(item.get("name"))
        content = item.get("content")
        if isinstance(content, list):
            for block in content:
                if not isinstance(block, dict):
                    continue
                block_type = block.get("type")
                if block_type in _TOOL_USE_BLOCKS:
                    self.tool(block.get("name"))
                elif block_type == "mcp_tool_use":
                    self.server(block.get("server_name") or UNNAMED_MCP_SERVER)

    def servers(self, value: Any) -> None:
        """A body-level ``mcp`` / ``mcps`` / ``mcp_servers`` value."""
        if isinstance(value, list):
            for entry in value:
                self.server_entry(entry)
        elif isinstance(value, dict):
            if any(isinstance(value.get(f), str) for f in _MCP_ENTRY_FIELDS):
                self.server_entry(value)
            else:  # a mapping of server name → settings
                for name in value:
                    self.server(name)
        elif isinstance(value, str):
            self.server(value)

    def server_entry(self, entry: Any) -> None:
        if isinstance(entry, str):
            self.server(entry)
        elif isinstance(entry, dict):
            self.server(_first_str(entry, _MCP_ENTRY_FIELDS) or UNNAMED_MCP_SERVER)


def _first_str(obj: Mapping[str, Any], fields: Iterable[str]) -> str | None:
    for field in fields:
        value = obj.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def _collect(body: Mapping[str, Any]) -> _Collector:
    c = _Collector()
    for key in ("tools", "functions"):
        tools = body.get(key)
        if isinstance(tools, list):
            for tool in tools:
                c.declared(tool)
    c.choice(body.get("tool_choice"))
    legacy = body.get("function_call")
    if isinstance(legacy, dict):
        c.tool(legacy.get("name"))
    for key in ("messages", "input"):
        items = body.get(key)
        if isinstance(items, list):
            for item in items:
                c.item(item)
    for key in _MCP_BODY_KEYS:
        value = body.get(key)
        if value is not None:
            c.servers(value)
    tools = c.tools
    if any(len(forms) > 1 for forms in tools.values()):
        # A call in the history names a namespaced tool by its bare name (Codex's
        # custom_tool_call "exec" for functions.exec): it is that tool, judged once, as declared.
        bare = {forms[-1] for forms in tools.values() if len(forms) > 1}
        for name in [n for n, forms in tools.items() if len(forms) == 1 and n in bare]:
            del tools[name]
    return c


def tool_candidates(body: Mapping[str, Any]) -> list[Candidate]:
    """Every tool the request declares, chooses or has called, deduplicated.

    Sources: ``tools[]`` (OpenAI chat ``function.name``/``custom.name``, Anthropic ``name``,
    Responses ``name``, or the ``type`` of a hosted tool such as ``web_search``), namespaces
    (``{"type": "namespace", "name": NS, "tools": [...]}`` → ``NS.name`` and ``name``),
    legacy ``functions[]``, ``tool_choice`` / ``function_call`` naming a tool, Responses
    ``input[]`` items (``additional_tools``, ``function_call``, ``custom_tool_call``), chat
    history (``tool_calls[].function.name``, ``role: "function"``) and Anthropic
    ``tool_use`` / ``server_tool_use`` blocks. MCP tools are judged by their server (the
    ``mcp`` dimension), not here.
    """
    return list(_collect(body).tools.values())


def mcp_candidates(body: Mapping[str, Any]) -> list[str]:
    """Every MCP server the request names, deduplicated.

    Sources: body ``mcp`` / ``mcps`` / ``mcp_servers`` entries (``name``, then ``id``, then
    ``server_label``, then ``url``), Responses tools of type ``mcp`` (``server_label``),
    Anthropic ``mcp_toolset`` tools (``mcp_server_name``), ``tool_choice`` of type ``mcp``, and
    history (Responses ``mcp_call`` / ``mcp_list_tools`` / ``mcp_approval_request`` items,
    Anthropic ``mcp_tool_use`` blocks). An entry with no identifying field is
    :data:`UNNAMED_MCP_SERVER`.
    """
    return list(_collect(body).mcp)


def url_candidates(body: Any) -> list[str]:
    """Every ``http://`` / ``https://`` URL in any string of the body (keys included),
    deduplicated, with trailing sentence punctuation and unbalanced closing brackets trimmed."""
    found: dict[str, None] = {}
    stack: list[Any] = [body]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        value = pop()
        if isinstance(value, str):
            if "://" in value:
                _urls_in(value, found)
        elif isinstance(value, dict):
            for key, inner in value.items():
                if "://" in key:
                    _urls_in(key, found)
                if isinstance(inner, str):
                    if "://" in inner:
                        _urls_in(inner, found)
                elif isinstance(inner, (dict, list)):
                    push(inner)
        elif isinstance(value, list):
            extend(value)
    return list(found)


def _urls_in(text: str, found: dict[str, None]) -> None:
    for match in _URL.findall(text):
        url = _trim(match)
        if url.find("://") + 3 < len(url):  # more than the bare scheme
            found[url] = None


def _trim(url: str) -> str:
    url = url.rstrip(_TRAILING_PUNCTUATION)
    for close, open_ in ((")", "("), ("]", "[")):
        while url.endswith(close) and url.count(close) > url.count(open_):
            url = url[:-1].rstrip(_TRAILING_PUNCTUATION)
    return url


def extract(
    body: Mapping[str, Any], *, tools: bool = True, mcp: bool = True, urls: bool = True
) -> Candidates:
    """The candidates of the dimensions asked for; the body is walked for URLs only when
    ``urls`` is true, and for tools/MCP servers only when either is."""
    collected = _collect(body) if (tools or mcp) else None
    return Candidates(
        tools=list(collected.tools.values()) if tools and collected is not None else None,
        mcp=list(collected.mcp) if mcp and collected is not None else None,
        urls=url_candidates(body) if urls else None,
    )
