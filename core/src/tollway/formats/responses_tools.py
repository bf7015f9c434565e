"""The tools of a Responses request as chat tools, and back.

A Responses request declares its tools in ``tools`` and in ``additional_tools`` input items
(Codex's default model sends them there), each either a tool or a ``namespace`` grouping
``function`` and ``custom`` tools. Function tools become chat's nested ones. A ``custom`` tool
takes one free-form string: chat has none, so it becomes a function tool taking an object with
that string as its ``input`` (its grammar, if it has one, told in the description); a call of it
comes back as a ``custom_tool_call`` whose ``input`` is that string. The answer's translators
know the custom tools from the client's request (:func:`custom_tool_names`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from tollway._errors import BadRequest
from tollway.formats.helpers import DroppedParams, _dumps_str, require_object

__all__ = [
    "CUSTOM_INPUT_DESCRIPTION",
    "chat_tool_choice",
    "chat_tools",
    "custom_call_arguments",
    "custom_tool_input",
    "custom_tool_names",
]

#: The description of the one ``input`` parameter a custom tool's chat function takes.
CUSTOM_INPUT_DESCRIPTION = "The tool's whole input, as raw text."

_FUNCTION_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})
_CUSTOM_FIELDS = frozenset({"type", "name", "description", "format"})
_CALLABLE = ("function", "custom")


def _declared(
    body: Mapping[str, Any], dropped: DroppedParams | None = None
) -> Iterator[tuple[str, Any]]:
    """``(where, tool)`` for every tool of the request, in order: ``tools``, then those of each
    ``additional_tools`` input item; a namespace's tools in its place. Without ``dropped`` any
    shape goes (what is not a list is skipped); with it, a list that is not one is a 400 and
    a namespace's fields (its description) are reported dropped."""
    tools = body.get("tools")
    if dropped is not None and tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    for j, raw in enumerate(tools if isinstance(tools, list) else ()):
        yield from _flat(f"tools[{j}]", raw, dropped)
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            extra = _tool_list(item, f"input[{i}]", dropped)
            for j, raw in enumerate(extra):
                yield from _flat(f"input[{i}].tools[{j}]", raw, dropped)


def _flat(where: str, raw: Any, dropped: DroppedParams | None) -> Iterator[tuple[str, Any]]:
    if isinstance(raw, dict) and raw.get("type") == "namespace":
        for k, tool in enumerate(_tool_list(raw, where, dropped)):
            yield f"{where}.tools[{k}]", tool
        if dropped is not None:
            for field, value in raw.items():
                if field not in ("type", "name", "tools") and value:
                    dropped.add(f"tools.namespace.{field}")  # chat has no tool groups
    else:
        yield where, raw


def _tool_list(group: dict[str, Any], where: str, dropped: DroppedParams | None) -> list[Any]:
    tools = group.get("tools")
    if isinstance(tools, list):
        return tools
    if dropped is not None:
        raise BadRequest(f"{where}.tools must be an array of tools", param=where)
    return []


def _callable_name(tool: Any) -> str | None:
    """The name of a function or custom tool (None: another tool, or no name)."""
    if not isinstance(tool, dict) or tool.get("type") not in _CALLABLE:
        return None
    name = tool.get("name")
    return name if isinstance(name, str) and name else None


def custom_tool_names(request: Mapping[str, Any] | None) -> frozenset[str]:
    """The names that the chat translation of the Responses ``request`` gave to custom tools
    (a name declared twice is the first declaration's). Never raises: any shape goes."""
    seen: set[str] = set()
    custom: set[str] = set()
    for _, tool in _declared(request or {}):
        name = _callable_name(tool)
        if name is None or name in seen:
            continue
        seen.add(name)
        if tool["type"] == "custom":
            custom.add(name)
    return frozenset(custom)


def custom_call_arguments(tool_input: str) -> str:
    """The chat arguments of a custom tool call whose input is ``tool_input``."""
    return _dumps_str({"input": tool_input})


def custom_tool_input(arguments: str) -> str:
    """A custom tool call's input from its chat ``arguments``: their ``input`` string, or the
    arguments as they are when they are not a JSON object with one."""
    try:
        doc = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(doc, dict) and isinstance(doc.get("input"), str):
        return doc["input"]  # type: ignore[no-any-return]
    return arguments


# --------------------------------------------------------------------------- requests


def chat_tools(body: Mapping[str, Any], dropped: DroppedParams) -> list[dict[str, Any]]:
    """The chat tools of a Responses request: its function and custom tools, wherever
    declared (:func:`_declared`). Other tools, a name declared again and tool fields chat has
    no place for are dropped and reported; a malformed declaration is a 400."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for where, raw in _declared(body, dropped):
        tool = require_object(raw, where)
        kind = tool.get("type")
        if kind not in _CALLABLE:
            dropped.add(f"tools.{kind}")  # hosted tools (web_search, file_search, mcp …)
            continue
        name = _callable_name(tool)
        if name is None:
            raise BadRequest(f"{where}.name is required", param=where)
        if name in seen:
            dropped.add(where)  # the first tool of that name is the one chat gets
            continue
        seen.add(name)
        fields = _FUNCTION_FIELDS if kind == "function" else _CUSTOM_FIELDS
        for extra, value in tool.items():
            if extra not in fields and value:
                dropped.add(f"tools.{extra}")
        if kind == "function":
            out.append({"type": "function", "function": _function(tool, name)})
        else:
            out.append({"type": "function", "function": _custom(tool, name, where, dropped)})
    return out


def _function(tool: dict[str, Any], name: str) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if isinstance(tool.get("parameters"), dict):
        function["parameters"] = tool["parameters"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return function


def _custom(tool: dict[str, Any], name: str, where: str, dropped: DroppedParams) -> dict[str, Any]:
    """A custom tool as a chat function taking ``{"input": <string>}``."""
    description = tool.get("description") if isinstance(tool.get("description"), str) else ""
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        syntax, definition = fmt.get("syntax"), fmt.get("definition")
        if not isinstance(syntax, str) or not isinstance(definition, str):
            raise BadRequest(
                f"{where}.format: a grammar needs its syntax and definition", param=where
            )
        note = f"The input must follow this {syntax} grammar:\n{definition}"
        description = f"{description}\n\n{note}" if description else note
    elif fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        dropped.add("tools.format")
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": CUSTOM_INPUT_DESCRIPTION}},
        "required": ["input"],
        "additionalProperties": False,
    }
    return function


def chat_tool_choice(choice: Any, tools: list[dict[str, Any]], dropped: DroppedParams) -> Any:
    """The chat ``tool_choice`` (None: leave it out). A function or custom tool named is chat's
    function choice; ``allowed_tools`` narrows ``tools``."""
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        names = {t["function"]["name"] for t in tools}
        if kind in _CALLABLE and choice.get("name") in names:
            return {"type": "function", "function": {"name": choice["name"]}}
        if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
            allowed = {
                t.get("name")
                for t in choice.get("tools") or ()
                if isinstance(t, dict) and t.get("type") in _CALLABLE
            }
            tools[:] = [t for t in tools if t["function"]["name"] in allowed]
            return choice["mode"]
    dropped.add("tool_choice")
    return None
