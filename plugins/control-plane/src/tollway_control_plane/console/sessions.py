"""Console sessions: a server-side record per login, found by a random cookie.

The record holds the :class:`~tollway_control_plane.auth.Principal` the login resolved (its
token id, never the secret that was typed in) and the session's CSRF token. For an API token
only the id counts: every request looks the token up again (about a second's cache), so a
revoked or expired token ends the session at its next request, and the pages always show what
the token may do now. The cookie is only
the record's random id: HttpOnly, SameSite=Strict, Secure when the request came over HTTPS.
A session ends at logout, after :data:`IDLE_SECONDS` without a request, or after
:data:`MAX_AGE_SECONDS` whatever happens; a restart of the process ends them all (sign in again).
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import attrs

from tollway_control_plane.auth import Principal

__all__ = [
    "COOKIE",
    "IDLE_SECONDS",
    "MAX_AGE_SECONDS",
    "LoginThrottle",
    "Session",
    "SessionStore",
    "request_is_https",
    "same_origin",
]

COOKIE = "tollway_console"
#: A session not used for this long is over.
IDLE_SECONDS = 30 * 60
#: … and none lasts longer than this.
MAX_AGE_SECONDS = 12 * 3600
#: At most this many live sessions (the oldest goes first).
MAX_SESSIONS = 10_000


@attrs.define
class Session:
    id: str
    principal: Principal
    csrf: str
    created: float
    last_seen: float

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented).encode(), self.csrf.encode())


class SessionStore:
    """Live console sessions of this process (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, principal: Principal) -> Session:
        at = self._clock()
        session = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32), at, at)
        with self._lock:
            self._expire(at)
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session ``session_id`` names (its idle clock restarted), or ``None``."""
        if not session_id:
            return None
        at = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if at - session.last_seen > IDLE_SECONDS or at - session.created > MAX_AGE_SECONDS:
                del self._sessions[session_id]
                return None
            session.last_seen = at
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _expire(self, at: float) -> None:
        stale = [
            sid
            for sid, s in self._sessions.items()
            if at - s.last_seen > IDLE_SECONDS or at - s.created > MAX_AGE_SECONDS
        ]
        for sid in stale:
            del self._sessions[sid]


class LoginThrottle:
    """Failed sign-ins per client address: after :data:`MAX_FAILURES` within
    :data:`FAILURE_WINDOW_SECONDS`, further attempts from it are refused until the window
    passes (guessing a token from a browser form stays slow)."""

    MAX_FAILURES = 10
    FAILURE_WINDOW_SECONDS = 60.0
    MAX_ADDRESSES = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, at: float) -> list[float]:
        kept = [t for t in self._failures.get(address, []) if at - t < self.FAILURE_WINDOW_SECONDS]
        if kept:
            self._failures[address] = kept
        else:
            self._failures.pop(address, None)
        return kept

    def blocked(self, address: str) -> bool:
        with self._lock:
            return len(self._recent(address, self._clock())) >= self.MAX_FAILURES

    def failed(self, address: str) -> None:
        at = self._clock()
        with self._lock:
            if address not in self._failures and len(self._failures) >= self.MAX_ADDRESSES:
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(address, []).append(at)
            self._recent(address, at)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def _trust_forwarded_proto() -> bool:
    return os.environ.get("TOLLWAY_CONSOLE_TRUST_PROXY", "").strip().lower() in (
        "1",
        "true",
        "yes",
    )


def request_is_https(scheme: str, forwarded_proto: str | None) -> bool:
    """Whether the browser reached us over HTTPS: the connection's own scheme, or (only with
    ``TOLLWAY_CONSOLE_TRUST_PROXY=true``, behind a TLS-terminating proxy) its
    ``X-Forwarded-Proto``."""
    if scheme == "https":
        return True
    if forwarded_proto and _trust_forwarded_proto():
        return forwarded_proto.split(",")[0].strip().lower() == "https"
    return False


def same_origin(origin: str | None, referer: str | None, scheme: str, host: str) -> bool:
    """Whether a POST came from a page of this console: its ``Origin`` (or, when a browser sent
    none, its ``Referer``) is ``scheme://host``. Neither header: refused."""
    expected = f"{scheme}://{host}".lower()
    if origin and origin != "null":
        return origin.rstrip("/").lower() == expected
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == expected
    return False
