"""``python -m tollway_conformance.serve``: ``tollway serve`` with the conformance probe.

The gateway is the real one (same settings loading, plugin loading, server and drain as
``tollway serve --config FILE``), with one extra, uninstalled plugin when asked:

* ``--probe FILE``: an ``account`` implementation that appends one JSON line per finished
  request (request id, status, endpoint, the usage the provider adapter reported on
  ``ctx.usage``, error type, stream facts, attempts). The suites read it to see what the
  gateway itself saw, which no response header tells.
* ``--audit-plugin NAME``: a :func:`sys.addaudithook` hook that records blocking calls (file
  opens, socket connects and DNS look-ups, ``time.sleep``, subprocesses) made while one of
  NAME's *synchronous* per-request hooks is on the stack. Those hooks run on the event loop,
  so any such call stalls every request in flight. Records go to the probe file.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import threading
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from tollway import RequestContext, hookimpl

__all__ = ["PER_REQUEST_HOOKS", "Probe", "main"]

#: Hooks called on the event loop for every request.
PER_REQUEST_HOOKS = (
    "authenticate",
    "admit",
    "pre_guardrail",
    "route",
    "before_attempt",
    "filter_models",
    "post_guardrail",
    "on_stream_chunk",
    "account",
)

PROBE_NAME = "tollway-conformance-probe"

# Audit events that mean "this thread waits on the outside world".
_BLOCKING_EVENTS = frozenset(
    {
        "open",
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "time.sleep",
        "subprocess.Popen",
        "os.system",
        "os.posix_spawn",
        "os.exec",
        "os.fork",
        "sqlite3.connect",
        "http.client.connect",
        "urllib.Request",
        "shutil.copyfile",
        "shutil.rmtree",
    }
)


_SOURCE_READERS = ("linecache.py", "tokenize.py")


class Probe:
    """The probe plugin: one JSON line per ``account`` call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        with self._lock, self.path.open("a") as fh:
            fh.write(line)

    @hookimpl(trylast=True)
    def account(self, ctx: RequestContext) -> None:
        usage = ctx.usage
        record = {
            "kind": "request",
            "request_id": ctx.request_id,
            "endpoint": ctx.endpoint,
            "model": ctx.model,
            "stream": ctx.stream,
            "status": ctx.status,
            "error_type": ctx.error_type,
            "error_message": ctx.error_message,
            "provider": ctx.provider,
            "provider_type": ctx.provider_type,
            "resolved_model": ctx.resolved_model,
            "usage": None
            if usage is None
            else {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
            },
            "stream_chunks": ctx.stream_chunks,
            "terminated_at_chunk": ctx.terminated_at_chunk,
            "client_disconnected": ctx.client_disconnected,
            "attempts": [
                {"provider": a.provider, "outcome": a.outcome, "status": a.status}
                for a in ctx.attempts
            ],
        }
        # Written once the whole account chain ran (the core awaits the implementations one
        # after the other), so a record means "every account implementation was called".
        try:
            asyncio.get_running_loop().call_soon(self.write, record)
        except RuntimeError:
            self.write(record)


def sync_hook_codes(pm: Any, plugin_name: str) -> dict[CodeType, str]:
    """The code objects of ``plugin_name``'s synchronous per-request hook implementations."""
    plugin = pm.get_plugin(plugin_name)
    if plugin is None:
        return {}
    codes: dict[CodeType, str] = {}
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.name not in PER_REQUEST_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            fn = inspect.unwrap(impl.function)
            fn = getattr(fn, "__func__", fn)
            if inspect.iscoroutinefunction(fn) or not hasattr(fn, "__code__"):
                continue
            codes[fn.__code__] = caller.name
    return codes


def install_audit(codes: dict[CodeType, str], probe: Probe) -> None:
    """Record blocking audit events raised under one of ``codes`` (once per hook and event)."""
    seen: set[tuple[str, str, str]] = set()
    busy = threading.local()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in _BLOCKING_EVENTS or getattr(busy, "on", False):
            return
        if event == "time.sleep" and args and not args[0]:
            return  # time.sleep(0) yields the GIL, it does not wait
        busy.on = True
        try:
            frame: FrameType | None = sys._getframe(1)
            hook_name = None
            where = ""
            while frame is not None:
                code = frame.f_code
                name = code.co_filename
                if name.startswith("<frozen importlib") or name.endswith(_SOURCE_READERS):
                    # An import inside the hook, or a traceback being formatted: reading
                    # Python source, not the plugin's own I/O.
                    return
                if hook_name is None and code in codes:
                    hook_name = codes[code]
                    where = f"{code.co_filename}:{frame.f_lineno}"
                frame = frame.f_back
            if hook_name is None:
                return
            detail = repr(args[0])[:120] if args else ""
            key = (hook_name, event, detail)
            if key in seen:
                return
            seen.add(key)
            probe.write(
                {
                    "kind": "blocking",
                    "hook": hook_name,
                    "event": event,
                    "detail": detail,
                    "where": where,
                }
            )
        finally:
            busy.on = False

    sys.addaudithook(hook)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tollway_conformance.serve",
        description="tollway serve, plus the conformance probe (a test tool).",
    )
    parser.add_argument("--config", help="TOML config file (as for tollway serve)")
    parser.add_argument("--probe", help="append one JSON line per finished request here")
    parser.add_argument(
        "--audit-plugin", help="record blocking calls from this plugin's sync per-request hooks"
    )
    args = parser.parse_args(argv)

    from tollway import __version__
    from tollway.config import ConfigError, load_settings
    from tollway.gateway import Gateway
    from tollway.logs import configure_logging
    from tollway.plugins import PluginLoadError
    from tollway.server import run_gateway

    try:
        settings = load_settings(config_file=args.config)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log.format, settings.log.level)
    if args.audit_plugin and not args.probe:
        parser.error("--audit-plugin needs --probe (where the findings are written)")
    probe = Probe(Path(args.probe)) if args.probe else None
    extra: list[tuple[str, object]] = [(PROBE_NAME, probe)] if probe is not None else []
    try:
        gateway = Gateway(settings, extra_plugins=extra)
    except (PluginLoadError, ConfigError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if args.audit_plugin and probe is not None:
        install_audit(sync_hook_codes(gateway.pm, args.audit_plugin), probe)

    def ready(bind: str) -> None:
        print(f"tollway {__version__} listening on http://{bind}", file=sys.stderr, flush=True)

    try:
        run_gateway(gateway, on_ready=ready)
    except PluginLoadError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
