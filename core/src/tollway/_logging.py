"""JSON-lines logging with the request id on every line (SPEC §7)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["configure_logging", "handler_task_var", "request_id_var", "set_worker"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tollway_request_id", default=None
)
#: The task serving the current request (set with ``request_id_var`` where a handler starts).
#: Tasks a request spawns inherit both variables but are not this task: what they do is not on
#: the request's path (``tollway.redis`` counts their round trips as background).
handler_task_var: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar(
    "tollway_handler_task", default=None
)

#: This process's worker index under ``serve --workers N`` (on every line), else None.
_worker: int | None = None


def set_worker(index: int | None) -> None:
    """Mark every following log line with ``"worker": index`` (pretty: ``[w<index>]``)."""
    global _worker
    _worker = index


_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            doc["request_id"] = rid
        if _worker is not None:
            doc["worker"] = _worker
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class PrettyFormatter(logging.Formatter):
    """One line per event for humans. Characters that are not printable (CR, LF, NUL, …) in
    the message are escaped, so client input in it can never start a forged line."""

    def format(self, record: logging.LogRecord) -> str:
        rid = request_id_var.get()
        head = time.strftime("%H:%M:%S", time.localtime(record.created))
        message = record.getMessage()
        if not message.isprintable():
            message = "".join(c if c.isprintable() else _escape(c) for c in message)
        worker = f" [w{_worker}]" if _worker is not None else ""
        line = f"{head} {record.levelname:<7}{worker} {record.name}: {message}"
        if rid:
            line += f" request_id={rid}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Route every logger (ours, Quart's, Hypercorn's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrettyFormatter() if fmt == "pretty" else JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
