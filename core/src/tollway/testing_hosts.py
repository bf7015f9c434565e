"""Test helpers for deployments of several hosts: network namespaces, a Redis Cluster, a
standalone control plane, and a TCP load balancer — real processes, as :mod:`tollway.testing`.

A multi-host test builds them like this::

    from tollway.testing_hosts import Hosts, TcpBalancer, start_control_plane, start_redis_cluster

    hosts = Hosts.create(3)             # 3 network namespaces on a bridge (root only), or
    hosts = Hosts.loopback(3)           # everything on 127.0.0.1 (hosts.reason says why)
    redis = start_redis_cluster(tmp / "redis", host=hosts.bridge_ip)    # 3 masters + 3 replicas
    cp = start_control_plane(tmp / "cp-a", env=..., host=hosts.bridge_ip)
    lb = TcpBalancer(hosts.bridge_ip, [cp.address, ...]).start()
    gw = start_gateway(..., host=hosts[0].ip, exec_prefix=hosts[0].exec_prefix)
    ...
    lb.stop(); redis.stop(); hosts.remove()

Nothing here is imported by the gateway itself. Namespaces need root and ``ip`` (iproute2);
the Redis Cluster needs ``redis-server`` and ``redis-cli`` (7.0 or later) on ``PATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from tollway.testing import stop

__all__ = [
    "ControlPlaneProcess",
    "Host",
    "Hosts",
    "RedisClusterProcess",
    "RedisNode",
    "TcpBalancer",
    "start_control_plane",
    "start_redis_cluster",
    "wait_for",
]


def wait_for(predicate: Any, within: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true (returned), at most ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)


def _run(*argv: str, timeout: float = 20) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise OSError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout


# --- network namespaces ----------------------------------------------------------------------


@attrs.frozen
class Host:
    """One test host: a network namespace (``name``; empty on loopback) and its address."""

    name: str
    ip: str

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        """Run a command on this host: ``(*exec_prefix, *argv)``."""
        return ("ip", "netns", "exec", self.name) if self.name else ()


@attrs.define
class Hosts:
    """Test hosts joined by a bridge in the root namespace, whose address (:attr:`bridge_ip`)
    is where the hosts reach services run in the root namespace.

    :meth:`create` makes network namespaces with veth pairs (root and iproute2 needed);
    :meth:`loopback` is the fallback: every host is 127.0.0.1, and :attr:`reason` says why."""

    hosts: list[Host]
    bridge_ip: str
    #: The hosts' network (what the gateway's ``GATEWAY_OUTBOUND_ALLOW_CIDRS`` must allow).
    network: str
    bridge: str = ""
    #: Why these are loopback hosts rather than namespaces ("" for namespaces).
    reason: str = ""

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def isolated(self) -> bool:
        """Whether the hosts are separate network namespaces."""
        return not self.reason

    @classmethod
    def loopback(cls, count: int, reason: str = "") -> Hosts:
        """``count`` hosts that are all this machine's loopback."""
        return cls(
            [Host("", "127.0.0.1") for _ in range(count)],
            "127.0.0.1",
            "127.0.0.0/8",
            reason=reason or "asked for loopback hosts",
        )

    @staticmethod
    def unavailable() -> str | None:
        """Why namespaces cannot be made here, or ``None``."""
        if sys.platform != "linux":
            return f"network namespaces are Linux-only (this is {sys.platform})"
        if os.geteuid() != 0:
            return "network namespaces need root (run the test as root)"
        if shutil.which("ip") is None:
            return "`ip` (iproute2) is not installed"
        return None

    @classmethod
    def create(cls, count: int) -> Hosts:
        """``count`` namespaces, each with a veth pair to a fresh bridge on a free
        ``10.77.X.0/24`` (the bridge is ``.1``, host ``i`` is ``.(11 + i)``). Names are unique
        per call; :meth:`remove` deletes everything (also after a partial failure here).
        Raises :class:`OSError` when something cannot be made."""
        reason = cls.unavailable()
        if reason:
            raise OSError(reason)
        tag = secrets.token_hex(3)
        used = _run("ip", "-o", "-4", "addr", "show")
        free = [n for n in range(1, 255) if f" 10.77.{n}." not in used]
        if not free:
            raise OSError("no free 10.77.X.0/24 network for the test hosts")
        net = ipaddress.ip_network(f"10.77.{random.choice(free)}.0/24")
        base = net.network_address
        bridge_ip = str(base + 1)
        made = cls([], bridge_ip, str(net), bridge=f"twb{tag}")
        try:
            _run("ip", "link", "add", made.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{bridge_ip}/24", "dev", made.bridge)
            _run("ip", "link", "set", made.bridge, "up")
            for i in range(count):
                host = Host(f"tw{tag}h{i}", str(base + 11 + i))
                outer, inner = f"twv{tag}{i}", f"twi{tag}{i}"
                _run("ip", "netns", "add", host.name)
                made.hosts.append(host)
                _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
                _run("ip", "link", "set", outer, "master", made.bridge)
                _run("ip", "link", "set", outer, "up")
                _run("ip", "link", "set", inner, "netns", host.name)
                inside = ("ip", "netns", "exec", host.name, "ip")
                _run(*inside, "link", "set", "lo", "up")
                _run(*inside, "addr", "add", f"{host.ip}/24", "dev", inner)
                _run(*inside, "link", "set", inner, "up")
        except BaseException:
            made.remove()
            raise
        return made

    def remove(self) -> None:
        """Delete the namespaces (their veth ends go with them) and the bridge."""
        for host in self.hosts:
            if host.name:
                subprocess.run(["ip", "netns", "del", host.name], capture_output=True, timeout=20)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=20)
        self.hosts = []
        self.bridge = ""


# --- a Redis Cluster -------------------------------------------------------------------------


@attrs.define
class RedisNode:
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path


@attrs.define
class RedisClusterProcess:
    """A Redis Cluster of ``redis-server --cluster-enabled yes`` processes on ``host``."""

    host: str
    nodes: list[RedisNode]

    @property
    def url(self) -> str:
        """A seed node's URL, for ``GATEWAY_REDIS_URL`` (with ``GATEWAY_REDIS_CLUSTER=true``)."""
        return f"redis://{self.host}:{self.nodes[0].port}"

    def cli(self, port: int, *args: str) -> str:
        """``redis-cli -h host -p port ARGS`` (its output; raises on failure)."""
        return _run("redis-cli", "-h", self.host, "-p", str(port), *args, timeout=10)

    def alive(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.proc.poll() is None]

    def info(self, port: int | None = None) -> dict[str, str]:
        """``CLUSTER INFO`` of a node (default: the first one alive)."""
        text = self.cli(port or self.alive()[0].port, "cluster", "info")
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def slot_of(self, key: str) -> int:
        return int(self.cli(self.alive()[0].port, "cluster", "keyslot", key).strip())

    def master_of_slot(self, slot: int, port: int | None = None) -> int | None:
        """The port of the healthy master serving ``slot``, as a node (default: the first one
        alive) sees it, or ``None``."""
        text = self.cli(port or self.alive()[0].port, "cluster", "nodes")
        for line in text.splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            if "master" not in flags or "fail" in flags or "fail?" in flags:
                continue
            for spec in fields[8:]:
                lo, _, hi = spec.partition("-")
                if spec[0] != "[" and int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        return None

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``."""
        (node,) = [n for n in self.nodes if n.port == port]
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)

    def wait_failover(self, slot: int, old_master: int, within: float = 20) -> int:
        """Wait until every node alive says ``cluster_state:ok`` with ``slot`` served by a
        master other than ``old_master``; return that master's port."""

        def promoted() -> int | None:
            owners = {self.master_of_slot(slot, n.port) for n in self.alive()}
            if len(owners) != 1 or None in owners or old_master in owners:
                return None
            if any(self.info(n.port).get("cluster_state") != "ok" for n in self.alive()):
                return None
            return owners.pop()

        port: int = wait_for(promoted, within, f"a replica promoted for slot {slot}", 0.1)
        return port

    def stop(self) -> None:
        for node in self.nodes:
            stop(node.proc, timeout=5)


def _cluster_port() -> int:
    """A port free on every interface whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", p))
        except OSError:
            continue
        return port
    raise OSError("no free port pair for a Redis Cluster node")


def start_redis_cluster(
    tmp: Path,
    *,
    host: str = "127.0.0.1",
    masters: int = 3,
    replicas_per_master: int = 1,
    node_timeout_ms: int = 1000,
) -> RedisClusterProcess:
    """Start ``masters * (1 + replicas_per_master)`` cluster nodes listening on ``host`` (data
    in ``tmp``, no persistence) and join them with ``redis-cli --cluster create``; return
    once every node reports ``cluster_state:ok``.

    ``node_timeout_ms`` is ``cluster-node-timeout``: a master unreachable that long is marked
    failed and one of its replicas takes over (any replica may, however stale)."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            raise OSError(f"`{tool}` is not installed")
    cluster = RedisClusterProcess(host, [])
    try:
        for _ in range(masters * (1 + replicas_per_master)):
            port = _cluster_port()
            node_dir = tmp / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            argv = [
                "redis-server", "--port", str(port), "--bind", host,
                "--protected-mode", "no", "--dir", str(node_dir),
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-replica-validity-factor", "0",
                "--save", "", "--appendonly", "no", "--logfile", str(node_dir / "redis.log"),
            ]  # fmt: skip
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cluster.nodes.append(RedisNode(port, proc, node_dir))
        for node in cluster.nodes:
            wait_for(lambda n=node: _pong(cluster, n), 10, f"redis-server on {host}:{node.port}")
        _run(
            "redis-cli", "--cluster", "create",
            *(f"{host}:{n.port}" for n in cluster.nodes),
            "--cluster-replicas", str(replicas_per_master), "--cluster-yes",
            timeout=60,
        )  # fmt: skip
        total = str(len(cluster.nodes))

        def formed() -> bool:
            infos = [cluster.info(n.port) for n in cluster.nodes]
            return all(
                i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == total
                for i in infos
            )

        wait_for(formed, 30, "the Redis Cluster to form", 0.1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _pong(cluster: RedisClusterProcess, node: RedisNode) -> bool:
    if node.proc.poll() is not None:
        raise AssertionError(f"redis-server on port {node.port} exited: see {node.dir}")
    try:
        return cluster.cli(node.port, "ping").strip() == "PONG"
    except OSError:
        return False


# --- a standalone control plane --------------------------------------------------------------


@attrs.define
class ControlPlaneProcess:
    """A running ``tollway control-plane``."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return host, int(port)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_control_plane(
    data_dir: Path,
    env: Mapping[str, str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 30,
) -> ControlPlaneProcess:
    """``tollway control-plane --host HOST --port PORT`` (``0``: any free port) with ``env``
    (its store: ``TOLLWAY_DATABASE_URL``, or the SQLite file in its data dir — ``env``'s
    ``TOLLWAY_DATA_DIR``, by default ``data_dir``), logging to ``data_dir/control-plane.log``;
    ready once it printed its address and ``/api/health`` answers 200."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "control-plane.log"
    argv = [sys.executable, "-m", "tollway", "control-plane", "--host", host, "--port", str(port)]
    full_env = {"TOLLWAY_DATA_DIR": str(data_dir), **env}
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, env=full_env, stdout=fh, stderr=subprocess.STDOUT)
    cp = ControlPlaneProcess(proc, "", log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"control plane exited {proc.returncode}:\n{cp.logs()}")
        match = re.search(r"listening on (http://\S+)", cp.logs())
        if not match:
            return False
        cp.url = match.group(1)
        try:
            with urllib.request.urlopen(f"{cp.url}/api/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(ready, timeout, "the control plane to start")
    except BaseException:
        stop(proc)
        raise
    return cp


# --- a TCP load balancer ---------------------------------------------------------------------


class TcpBalancer:
    """A TCP load balancer in a thread of the test process: each connection goes to the first
    backend (in order) that accepts it within a second, as a Service or HAProxy in front of
    control-plane replicas would. When a backend dies its connections close, and the clients'
    next connections reach the next backend."""

    def __init__(self, host: str, backends: Sequence[tuple[str, int]]) -> None:
        self.host = host
        self.backends = list(backends)
        self.port = 0
        #: Connections made to each backend.
        self.connections: dict[tuple[str, int], int] = {b: 0 for b in self.backends}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TcpBalancer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, self.host, 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._loop.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for backend in self.backends:
            try:
                async with asyncio.timeout(1):
                    up_reader, up_writer = await asyncio.open_connection(*backend)
            except (OSError, TimeoutError):
                continue
            self.connections[backend] += 1
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or an error, then close ``writer`` (the other direction ends too)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
