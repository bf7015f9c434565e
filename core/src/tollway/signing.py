"""The internal gateway ↔ control-plane request signature (SPEC §3).

canonical = ``METHOD\\nPATH\\nUNIX_TS\\nhex(sha256(body))`` (PATH without the query string);
signature = ``hex(HMAC-SHA256(LW_GATEWAY_INTERNAL_SECRET, canonical))``, sent in
``X-LangWatch-Gateway-Signature`` with ``X-LangWatch-Gateway-Timestamp``; accepted within ±300 s.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WINDOW_SECONDS",
    "SignatureError",
    "canonical",
    "sign",
    "signed_headers",
    "verify",
]

SIGNATURE_HEADER = "X-LangWatch-Gateway-Signature"
TIMESTAMP_HEADER = "X-LangWatch-Gateway-Timestamp"
WINDOW_SECONDS = 300


class SignatureError(Exception):
    """The request's signature is missing, stale or wrong (the message says which)."""


def canonical(method: str, path: str, timestamp: int | str, body: bytes) -> bytes:
    """The string that is signed. ``path`` loses its query string."""
    path = path.split("?", 1)[0]
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path}\n{timestamp}\n{digest}".encode()


def sign(secret: bytes, method: str, path: str, timestamp: int | str, body: bytes) -> str:
    """``hex(HMAC-SHA256(secret, canonical))``."""
    return hmac.new(secret, canonical(method, path, timestamp, body), hashlib.sha256).hexdigest()


def signed_headers(
    secret: bytes, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The two headers to send with a signed request."""
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, method, path, ts, body)}


def verify(
    secret: bytes,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> None:
    """Raise :class:`SignatureError` unless the headers carry a fresh, valid signature."""
    ts_raw = headers.get(TIMESTAMP_HEADER)
    sig = headers.get(SIGNATURE_HEADER)
    if not ts_raw or not sig:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    try:
        ts = int(ts_raw)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a UNIX timestamp") from None
    current = time.time() if now is None else now
    if abs(current - ts) > WINDOW_SECONDS:
        raise SignatureError(
            f"timestamp is {int(current - ts)} s off; clocks must agree within {WINDOW_SECONDS} s"
        )
    expected = sign(secret, method, path, ts, body)
    if not hmac.compare_digest(expected, sig.strip().lower()):
        raise SignatureError("signature mismatch (check LW_GATEWAY_INTERNAL_SECRET on both sides)")
