"""The start-up netcheck: DNS resolution and a TCP connect to every upstream host (SPEC §8).

DNS, egress and NetworkPolicy mistakes then show at deploy time — ``/startupz`` stays 503 and
names the failure — instead of as ``502 connect_error`` on the first customer request. Failures
are reported with the reference gateway's lines::

    dns resolution failed: lookup api.openai.com: no such host
    tcp dial failed: dial tcp 203.0.113.7:443: connect: connection refused
    tcp dial failed: dial tcp 203.0.113.7:443: i/o timeout

Hosts are checked concurrently, each bounded by ``SERVER_NETCHECK_TIMEOUT_SECONDS``; a failed
check is run again every ``SERVER_NETCHECK_RETRY_SECONDS`` until it passes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Iterable

import attrs

__all__ = ["NetTarget", "Netcheck", "check_host", "parse_hostport"]

log = logging.getLogger("tollway.netcheck")


@attrs.frozen
class NetTarget:
    host: str
    port: int
    #: Why it is checked: ``provider sim-openai``, ``proxy of provider x``, …
    why: str = ""

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_hostport(text: str, default_port: int = 443) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
        return host, int(port) if port else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


def _dns_reason(exc: socket.gaierror) -> str:
    if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
        return "no such host"  # Go's wording for NXDOMAIN
    if exc.errno == socket.EAI_AGAIN:
        return "temporary failure in name resolution (server misbehaving)"
    return str(exc.strerror or exc).lower()


def _dial_reason(exc: OSError) -> str:
    """Go's wording: ``connect: connection refused``, ``i/o timeout``."""
    if exc.errno == errno.ETIMEDOUT:
        return "i/o timeout"
    if exc.errno is not None:
        return f"connect: {os.strerror(exc.errno).lower()}"
    return str(exc).lower() or type(exc).__name__


async def check_host(host: str, port: int, bound: float) -> str | None:
    """DNS-resolve ``host`` and open (then close) a TCP connection to one of its addresses,
    all within ``bound`` seconds. ``None`` when it worked, else the reference's line."""
    loop = asyncio.get_running_loop()
    dialing: str | None = None
    failure: str | None = None
    try:
        async with asyncio.timeout(bound):
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                return f"dns resolution failed: lookup {host}: {_dns_reason(exc)}"
            seen: list[tuple[str, int]] = []
            for info in infos:
                address = (str(info[4][0]), int(info[4][1]))
                if address not in seen:
                    seen.append(address)
            if not seen:
                return f"dns resolution failed: lookup {host}: no such host"
            for ip, p in seen:
                dialing = f"{f'[{ip}]' if ':' in ip else ip}:{p}"
                try:
                    _, writer = await asyncio.open_connection(ip, p)
                except OSError as exc:
                    failure = failure or f"tcp dial failed: dial tcp {dialing}: {_dial_reason(exc)}"
                    continue
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
                return None
            return failure
    except TimeoutError:
        if dialing is None:
            return f"dns resolution failed: lookup {host}: i/o timeout"
        return failure or f"tcp dial failed: dial tcp {dialing}: i/o timeout"


@attrs.define(eq=False)
class Netcheck:
    """The netcheck of one gateway: run it with :meth:`run` (until it passes)."""

    targets: list[NetTarget]
    timeout: float = 5.0
    retry: float = 5.0
    #: ``pending`` → ``ok`` | ``failed`` (retried) ; ``skipped`` when there is nothing to check.
    status: str = "pending"
    #: host:port → the failure line of the last run.
    failures: dict[str, str] = attrs.field(factory=dict)
    runs: int = 0

    @classmethod
    def of(cls, targets: Iterable[NetTarget], timeout: float, retry: float) -> Netcheck:
        unique: dict[tuple[str, int], NetTarget] = {}
        for t in targets:
            unique.setdefault((t.host.lower(), t.port), t)
        found = list(unique.values())
        return cls(found, timeout, retry, "pending" if found else "skipped")

    @property
    def passed(self) -> bool:
        return self.status in ("ok", "skipped")

    def report(self) -> dict[str, str]:
        """For ``/startupz``: host:port → ``ok`` / ``pending`` / the failure line."""
        out: dict[str, str] = {}
        for t in self.targets:
            if t.label in self.failures:
                out[t.label] = f"error: {self.failures[t.label]}"
            else:
                out[t.label] = "ok" if self.status in ("ok", "failed") else self.status
        return out

    async def run_once(self) -> bool:
        results = await asyncio.gather(
            *(check_host(t.host, t.port, self.timeout) for t in self.targets)
        )
        self.runs += 1
        self.failures = {}
        for target, failure in zip(self.targets, results, strict=True):
            if failure is None:
                continue
            self.failures[target.label] = failure
            # The reference's line, as is, so the troubleshooting page's greps find it.
            log.error(
                failure,
                extra={
                    "event": "netcheck_failed",
                    "host": target.host,
                    "port": target.port,
                    "why": target.why,
                },
            )
        self.status = "failed" if self.failures else "ok"
        return not self.failures

    async def run(self) -> None:
        """Check until every target passes (retrying every :attr:`retry` seconds)."""
        if self.status == "skipped":
            return
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if await self.run_once():
                log.info(
                    "netcheck_passed hosts=%s elapsed_ms=%d",
                    ",".join(t.label for t in self.targets),
                    (loop.time() - started) * 1000,
                )
                return
            await asyncio.sleep(self.retry)
