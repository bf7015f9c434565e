"""Processes: free ports, start and stop, CPU and RSS of a process tree, waiting on HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process in its own session (so its whole tree can be stopped by its group id)."""

    def __init__(self, name: str, argv: list[str], logfile: Path, **kw: Any) -> None:
        self.name = name
        self.logfile = logfile
        self._fh = logfile.open("wb")
        self.popen = subprocess.Popen(
            argv, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        else:  # the leader is gone; children of its group may not be
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._fh.close()


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime ticks, rss pages) of one process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid=4, utime=14, stime=15, rss=24
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21])


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_usage(root: int) -> tuple[float, int]:
    """CPU seconds (user+system) and RSS bytes of a process tree, from /proc."""
    cpu = 0
    rss = 0
    for pid in process_tree(root):
        st = _proc_stat(pid)
        if st is not None:
            cpu += st[1]
            rss += st[2]
    return cpu / _TICK, rss * _PAGE


def http_ok(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> bool:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            resp.read()
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], proc: Proc, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{what} exited with {proc.popen.returncode}: {proc.tail()}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s: {proc.tail()}")


def run_text(argv: list[str], timeout: float = 30, **kw: Any) -> str:
    """stdout+stderr of a short command ('' if it cannot run)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (res.stdout + res.stderr).strip()
