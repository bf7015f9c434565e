"""``tollway serve --workers N``: one supervisor process, N gateway worker processes on one port.

The design (docs/operator-guide.md, "Several workers"):

- The supervisor binds the port once with ``SO_REUSEPORT`` and keeps that socket (bound, never
  listening: it only holds the port, so ``--port 0`` and restarts get the same one). Each worker
  is a fresh ``python -m tollway serve`` that binds its own ``SO_REUSEPORT`` socket to that port
  and listens once its gateway started; the kernel spreads new connections over the listening
  workers, and a worker that stops listening (drain, crash) gets none.
- Workers are fresh interpreters (not forks) so that prometheus-client picks its multi-process
  mode at import: the supervisor creates ``PROMETHEUS_MULTIPROC_DIR`` (a temporary directory it
  removes at exit) and any worker's ``/metrics`` reads every worker's counters from it.
- The embedded control plane (``LW_GATEWAY_BASE_URL`` unset and the control-plane plugin on) has
  one writer: the supervisor starts ``tollway control-plane`` on a loopback port as a child and
  points every worker at it with ``LW_GATEWAY_BASE_URL``, so the store, the ledger and the
  recorded request spans of all workers are in one place.
- Signals: SIGTERM/SIGINT are forwarded once to every worker (each drains as a single gateway
  does, ``/readyz`` 503 first); a second one is forwarded again (stop now). Workers run in their
  own process group, so a terminal's Ctrl-C reaches them only through the supervisor; when the
  supervisor dies (even by SIGKILL) every child gets SIGTERM from the kernel (Linux
  ``PR_SET_PDEATHSIG``), and a worker also notices a changed parent and drains by itself.
- A worker that exits while the supervisor is not stopping is replaced (after a pause when it
  lived less than :data:`_QUICK_EXIT_S`). One that fails before it was ever ready at start-up
  stops the whole command with exit code 1 (a configuration error would only repeat).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = [
    "CONTROL_PLANE_ENV",
    "READY_FD_ENV",
    "WORKER_ENV",
    "Supervisor",
    "bound_socket",
    "parse_workers",
    "serves_workers",
    "supervised_control_plane",
    "worker_index",
]

log = logging.getLogger("tollway.workers")

#: Set by the supervisor in a worker's environment: the worker's index (0…N-1).
WORKER_ENV = "TOLLWAY_WORKER_ID"
#: Set by the supervisor: the pipe a worker writes ``"<index> <pid>\n"`` into once it serves.
READY_FD_ENV = "TOLLWAY_WORKER_READY_FD"
#: Set by the supervisor when it runs the embedded control plane: that control plane's URL.
CONTROL_PLANE_ENV = "TOLLWAY_WORKERS_CONTROL_PLANE"
#: Set by the supervisor in the control plane process it starts (its workers relay to it).
SERVES_WORKERS_ENV = "TOLLWAY_WORKERS_SUPERVISED"
#: A worker that exits sooner than this after its start is restarted after a pause.
_QUICK_EXIT_S = 10.0
#: How long the supervisor waits for the control plane it starts to listen.
_CONTROL_PLANE_START_S = 60.0


def parse_workers(value: str | int) -> int:
    """``--workers`` → a count: a positive integer, or ``auto`` (the number of CPU cores).
    Raises :class:`ValueError` with a message saying what is accepted."""
    text = str(value).strip().lower()
    if text == "auto":
        return os.cpu_count() or 1
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"--workers must be a positive whole number or 'auto', not {value!r}")


def worker_index(env: Mapping[str, str] | None = None) -> int | None:
    """This process's worker index when a supervisor started it, else None."""
    raw = (os.environ if env is None else env).get(WORKER_ENV, "")
    return int(raw) if raw.isdigit() else None


def supervised_control_plane(env: Mapping[str, str] | None = None) -> str | None:
    """In a worker whose supervisor runs the embedded control plane: that control plane's
    URL (a loopback address), else None."""
    url = (os.environ if env is None else env).get(CONTROL_PLANE_ENV, "").strip()
    return url if url and worker_index(env) is not None else None


def serves_workers(env: Mapping[str, str] | None = None) -> bool:
    """True in the control plane process a ``serve --workers N`` supervisor started: its
    requests come relayed by the workers (see :func:`supervised_control_plane`)."""
    return (os.environ if env is None else env).get(SERVES_WORKERS_ENV) == "1"


def bound_socket(addr: str, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``addr`` (``host:port``, from :func:`tollway._server.bind_address`),
    not listening yet. ``reuse_port``: with ``SO_REUSEPORT``, for the workers of
    ``serve --workers N``, which each bind the port; a single process never sets it, so a second
    gateway started on its port fails instead of taking half its connections. Raises
    :class:`OSError` when the port is taken or this platform has no ``SO_REUSEPORT``."""
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - Linux has it
        raise OSError("this platform has no SO_REUSEPORT; run --workers 1")
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(
        host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the kernel send SIGTERM to the child when the
    supervisor dies (even by SIGKILL), so no worker or control plane outlives it. The libc
    handle is loaded here, before any fork: the child only makes the one ``prctl`` call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


_PREEXEC = _parent_death_signal()


@attrs.define
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    ready: bool = False


@attrs.define
class Supervisor:
    """Runs ``count`` workers serving ``addr`` until SIGTERM/SIGINT (see the module doc).

    ``env`` is the environment every child gets (the supervisor adds its own variables) and
    ``state_args`` the ``--config``/``--data-dir`` options it was given, passed on to every
    child; ``control_plane`` says whether to start the embedded control plane as a child;
    ``on_ready(bind)`` is called once, when every worker serves for the first time.
    """

    count: int
    addr: str
    env: dict[str, str]
    control_plane: bool
    state_args: list[str] = attrs.field(factory=list)
    on_ready: Callable[[str], None] | None = None
    workers: dict[int, _Worker] = attrs.field(factory=dict)
    _stop_signals: int = 0
    _forwarded: int = 0
    _cp: subprocess.Popen[bytes] | None = None
    _cp_port: int = 0
    _ready_r: int = -1
    _ready_w: int = -1
    _pending: bytes = b""
    _restart_at: dict[int, float] = attrs.field(factory=dict)
    _metrics_dir: str = ""

    def run(self) -> int:
        """Serve; the exit code (0 after a drain, 1 when start-up failed). Raises
        :class:`OSError` when the port cannot be bound."""
        holder = bound_socket(self.addr, reuse_port=True)
        host, _, _ = self.addr.rpartition(":")
        bind = f"{host}:{holder.getsockname()[1]}"
        self._metrics_dir = metrics_dir = tempfile.mkdtemp(prefix="tollway-metrics-")
        self.env.update({"SERVER_ADDR": bind, "PROMETHEUS_MULTIPROC_DIR": metrics_dir})
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            if self.control_plane and not self._start_control_plane():
                return 1
            for index in range(self.count):
                self._spawn(index)
            return self._loop(holder, bind)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            holder.close()
            self._stop_all()
            os.close(self._ready_r)
            os.close(self._ready_w)
            shutil.rmtree(metrics_dir, ignore_errors=True)

    # --- children ---------------------------------------------------------------------------

    def _start_control_plane(self) -> bool:
        env = {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env[SERVES_WORKERS_ENV] = "1"
        argv = [sys.executable, "-m", "tollway", "control-plane", "--host", "127.0.0.1"]
        argv += ["--port", str(self._cp_port), *self.state_args]
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, process_group=0, preexec_fn=_PREEXEC
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + _CONTROL_PLANE_START_S
        line = b""
        while time.monotonic() < deadline and not self._stop_signals:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        match = re.search(rb"listening on (http://\S+)", line)
        if match is None:
            _end(proc, 5)
            if not self._stop_signals:
                log.error(
                    "workers_control_plane_failed: the embedded control plane did not start "
                    "(its error is above); nothing was served"
                )
            return False
        # Keep reading its stdout so it never blocks on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        url = match.group(1).decode()
        self._cp = proc
        self._cp_port = int(url.rpartition(":")[2])
        self.env["LW_GATEWAY_BASE_URL"] = url
        self.env[CONTROL_PLANE_ENV] = url
        log.info("workers_control_plane_started url=%s pid=%d", url, proc.pid)
        return True

    def _spawn(self, index: int) -> None:
        env = {**self.env, WORKER_ENV: str(index), READY_FD_ENV: str(self._ready_w)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", *self.state_args],
            env=env,
            pass_fds=(self._ready_w,),
            process_group=0,
            preexec_fn=_PREEXEC,
        )
        self.workers[index] = _Worker(index, proc, time.monotonic())
        log.info("worker_started worker=%d pid=%d", index, proc.pid)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signals += 1

    # --- the loop ---------------------------------------------------------------------------

    def _loop(self, holder: socket.socket, bind: str) -> int:
        all_ready = False
        while True:
            if self._stop_signals > self._forwarded:
                if self._forwarded == 0:
                    log.info("workers_draining workers=%d", len(self.workers))
                self._forwarded = self._stop_signals
                for w in self.workers.values():
                    _signal(w.proc, signal.SIGTERM)
            self._read_ready()
            if not all_ready and all(w.ready for w in self.workers.values()):
                all_ready = True
                if self.on_ready is not None and not self._forwarded:
                    self.on_ready(bind)
            for index, w in list(self.workers.items()):
                code = w.proc.poll()
                if code is None:
                    continue
                del self.workers[index]
                _mark_dead(w.proc.pid, self._metrics_dir)
                if self._forwarded:
                    log.info("worker_stopped worker=%d pid=%d code=%d", index, w.proc.pid, code)
                    continue
                if not all_ready and not w.ready:
                    log.error(
                        "worker_failed_to_start worker=%d pid=%d code=%d: stopping (its error "
                        "is above)",
                        index,
                        w.proc.pid,
                        code,
                    )
                    self._stop_signals += 1
                    self._forwarded = self._stop_signals
                    for other in self.workers.values():
                        _signal(other.proc, signal.SIGTERM)
                    self._wait_workers()
                    return 1
                lived = time.monotonic() - w.started
                pause = 1.0 if lived < _QUICK_EXIT_S else 0.0
                log.warning(
                    "worker_exited worker=%d pid=%d code=%d lived_s=%.1f: starting a new one",
                    index,
                    w.proc.pid,
                    code,
                    lived,
                )
                self._restart_at[index] = time.monotonic() + pause
            if self._forwarded:
                if not self.workers:
                    return 0
            else:
                now = time.monotonic()
                for index, at in list(self._restart_at.items()):
                    if now >= at:
                        del self._restart_at[index]
                        self._spawn(index)
                if self._cp is not None and self._cp.poll() is not None:
                    log.warning(
                        "workers_control_plane_exited code=%d: starting it again on port %d",
                        self._cp.returncode,
                        self._cp_port,
                    )
                    self._cp = None
                    if not self._start_control_plane():
                        self._stop_signals += 1
            try:
                select.select([self._ready_r], [], [], 0.1)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; a signal may still
                pass

    def _read_ready(self) -> None:
        try:
            self._pending += os.read(self._ready_r, 4096)
        except BlockingIOError:
            return
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                continue
            w = self.workers.get(int(parts[0]))
            if w is not None and str(w.proc.pid).encode() == parts[1]:
                w.ready = True

    def _wait_workers(self) -> None:
        """Wait for the (signalled) workers to finish their drain; SIGKILL after a minute."""
        for w in self.workers.values():
            _wait(w.proc, 60)
        self.workers.clear()

    def _stop_all(self) -> None:
        if self.workers and not self._forwarded:
            for w in self.workers.values():
                _signal(w.proc, signal.SIGTERM)
        self._wait_workers()
        if self._cp is not None:
            _end(self._cp, 10)
            self._cp = None


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:  # pragma: no cover - exited in between
            pass


def _end(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    _signal(proc, signal.SIGTERM)
    _wait(proc, timeout)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Drop a dead worker's live gauges from the shared metrics (its counters stay summed)."""
    try:
        from tollway.metrics import worker_exited
    except ImportError:  # pragma: no cover - prometheus-client not installed
        return
    worker_exited(pid, metrics_dir)
