"""A static look for blocking calls in synchronous hook implementations.

Synchronous per-request hooks run on the gateway's event loop: a file read, a socket, a
``time.sleep`` or a synchronous HTTP client there stalls every request in flight. This module
reads the source of a hook implementation (and of the functions it calls by name in the same
package, a few levels deep) and reports calls to known blocking functions.

It is a heuristic, with known limits: it does not follow calls through attributes of objects
(``self.client.get(...)``), callables passed around, or other packages; it does not know what a
third-party library does inside. The hook-plugin suite's gateway check complements it at run
time with an audit hook (see :mod:`tollway_conformance.serve`).
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import attrs

__all__ = ["Finding", "blocking_calls"]

#: Dotted names (after import resolution) that block, and what to do instead.
_EXACT = {
    "open": "reads or writes a file",
    "io.open": "reads or writes a file",
    "time.sleep": "sleeps the whole event loop (use `await asyncio.sleep`)",
    "socket.socket": "opens a socket",
    "socket.create_connection": "opens a socket",
    "socket.getaddrinfo": "does a blocking DNS look-up",
    "socket.gethostbyname": "does a blocking DNS look-up",
    "urllib.request.urlopen": "makes a synchronous HTTP request",
    "httpx.get": "makes a synchronous HTTP request",
    "httpx.post": "makes a synchronous HTTP request",
    "httpx.put": "makes a synchronous HTTP request",
    "httpx.patch": "makes a synchronous HTTP request",
    "httpx.delete": "makes a synchronous HTTP request",
    "httpx.head": "makes a synchronous HTTP request",
    "httpx.request": "makes a synchronous HTTP request",
    "httpx.stream": "makes a synchronous HTTP request",
    "httpx.Client": "makes synchronous HTTP requests",
    "os.system": "runs a process and waits for it",
    "os.popen": "runs a process",
    "os.wait": "waits for a process",
    "os.waitpid": "waits for a process",
    "sqlite3.connect": "opens a database synchronously",
    "psycopg.connect": "opens a database synchronously",
    "psycopg2.connect": "opens a database synchronously",
    "redis.Redis": "is a synchronous Redis client (use redis.asyncio)",
    "redis.StrictRedis": "is a synchronous Redis client (use redis.asyncio)",
    "redis.from_url": "is a synchronous Redis client (use redis.asyncio.from_url)",
    "input": "waits for the terminal",
}
#: Any call under these modules blocks.
_PREFIXES = {
    "requests": "makes a synchronous HTTP request",
    "urllib3": "makes a synchronous HTTP request",
    "subprocess": "runs a process and waits for it",
    "smtplib": "talks SMTP synchronously",
    "ftplib": "talks FTP synchronously",
    "http.client": "makes a synchronous HTTP request",
    "shutil": "copies or removes files",
}
#: Method names that are file I/O whatever the object (``pathlib.Path``).
_METHODS = {
    "read_text": "reads a file",
    "read_bytes": "reads a file",
    "write_text": "writes a file",
    "write_bytes": "writes a file",
}

_MAX_DEPTH = 4


@attrs.frozen
class Finding:
    """One blocking call reachable from a hook implementation."""

    hook: str
    call: str
    why: str
    #: ``file:line`` of the call.
    where: str
    #: The functions from the hook to the call, e.g. ``("pre_guardrail", "_load")``.
    chain: tuple[str, ...]

    def __str__(self) -> str:
        via = " → ".join(self.chain)
        return f"{self.hook}(): {via} calls {self.call} ({self.where}), which {self.why}"


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name → dotted name, from every import statement in ``tree``."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _relative_imports(tree: ast.AST, package: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                names[alias.asname or alias.name] = f"{module}.{alias.name}"
    return names


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Module:
    """A module's syntax tree, its imports and its top-level functions."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        source = inspect.getsource(module)
        self.tree = ast.parse(source)
        self.file = getattr(module, "__file__", module.__name__)
        package = module.__name__ if hasattr(module, "__path__") else module.__package__ or ""
        self.names = {**_relative_imports(self.tree, package), **_imports(self.tree)}
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        self.functions[f"{node.name}.{item.name}"] = item


_CACHE: dict[str, _Module | None] = {}


def _module(name: str) -> _Module | None:
    if name not in _CACHE:
        module = sys.modules.get(name)
        try:
            _CACHE[name] = _Module(module) if module is not None else None
        except (OSError, TypeError, SyntaxError):
            _CACHE[name] = None
    return _CACHE[name]


def _function_node(fn: Callable[..., Any]) -> tuple[_Module, ast.AST] | None:
    fn = inspect.unwrap(fn)
    fn = getattr(fn, "__func__", fn)
    mod = _module(getattr(fn, "__module__", "") or "")
    if mod is not None:
        node = mod.functions.get(fn.__qualname__)
        if node is not None:
            return mod, node
    try:  # a nested or dynamically made function: parse its own source
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    if mod is None:
        return None
    tree = ast.parse(source)
    return mod, tree.body[0] if tree.body else tree


def _calls(node: ast.AST) -> Iterator[ast.Call]:
    """Calls in ``node``'s body, not in functions defined inside it."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.Call):
            yield child
        stack.extend(ast.iter_child_nodes(child))


def _blocking(name: str) -> str | None:
    if name in _EXACT:
        return _EXACT[name]
    for prefix, why in _PREFIXES.items():
        if name == prefix or name.startswith(prefix + "."):
            return why
    return None


def blocking_calls(hook: str, fn: Callable[..., Any], package: str) -> list[Finding]:
    """Blocking calls reachable from ``fn`` (implementing ``hook``), following calls by name
    into functions of modules under ``package``."""
    found: list[Finding] = []
    located = _function_node(fn)
    if located is None:
        return found
    seen: set[tuple[str, str]] = set()

    def visit(mod: _Module, node: ast.AST, chain: tuple[str, ...], depth: int) -> None:
        local_defs = {
            n.name
            for n in ast.walk(node)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n is not node
        }
        for call in _calls(node):
            where = f"{mod.file}:{call.lineno}"
            if isinstance(call.func, ast.Attribute) and call.func.attr in _METHODS:
                what = _METHODS[call.func.attr]
                found.append(Finding(hook, f".{call.func.attr}()", what, where, chain))
                continue
            dotted = _dotted(call.func)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            if head in mod.names:
                resolved = mod.names[head] + ("." + rest if rest else "")
            elif head in mod.functions or head in local_defs:
                resolved = f"{mod.module.__name__}.{dotted}"
            else:
                resolved = dotted  # a builtin (open, input) or an unknown name
            why = _blocking(resolved)
            if why is not None:
                found.append(Finding(hook, resolved, why, where, chain))
                continue
            if depth >= _MAX_DEPTH:
                continue
            target_mod, _, func_name = resolved.rpartition(".")
            if target_mod.split(".")[0] != package.split(".")[0]:
                continue
            key = (target_mod, func_name)
            if key in seen:
                continue
            seen.add(key)
            other = _module(target_mod)
            if other is None or func_name not in other.functions:
                continue
            callee = other.functions[func_name]
            if isinstance(callee, ast.AsyncFunctionDef):
                continue  # called un-awaited it only makes a coroutine
            visit(other, callee, (*chain, func_name), depth + 1)

    mod, node = located
    visit(mod, node, (hook,), 0)
    return found
