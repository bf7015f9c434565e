"""Virtual key format, minting, hashing and comparison (SPEC §3).

A Tollway virtual key is 40 characters::

    lw_vk_live_01J9Z8X4T7Q2M5N8P3R6S9V2W41GW
    └─prefix──┘└─────────ULID───────────┘└─┘
     11 chars          26 chars          checksum, 3 chars

The prefix is ``lw_vk_live_`` or ``lw_vk_test_``; the ULID and the checksum use the Crockford
base32 alphabet in upper case. The checksum is the low 15 bits of ``zlib.crc32`` of the first
37 characters, as three 5-bit digits, most significant first: a typo or a truncated paste is
refused without a store lookup, and secret scanners can validate a match. The reference
product's 37-character form (prefix + ULID, no checksum) is accepted too.

Only ``hex(HMAC-SHA256(pepper, secret))`` is ever stored; :func:`keys_equal` compares in
constant time. Error messages never repeat a presented key beyond its first 18 characters (the
display prefix, which is not secret).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import zlib

from ulid import ULID

__all__ = [
    "CROCKFORD",
    "DISPLAY_PREFIX_LENGTH",
    "KEY_LENGTH",
    "LEGACY_KEY_LENGTH",
    "PREFIXES",
    "KeyFormatError",
    "KeyHasher",
    "check_key_format",
    "checksum",
    "display_prefix",
    "hash_key",
    "keys_equal",
    "mint_key",
]

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""The Crockford base32 alphabet (no I, L, O, U)."""

PREFIXES = ("lw_vk_live_", "lw_vk_test_")
"""Every key starts with one of these (the environment is ``live`` or ``test``)."""

KEY_LENGTH = 40
"""Length of a Tollway key: 11-char prefix + 26-char ULID + 3-char checksum."""

LEGACY_KEY_LENGTH = 37
"""Length of the reference product's keys (prefix + ULID, no checksum), still accepted."""

DISPLAY_PREFIX_LENGTH = 18
"""Characters of a key that may be shown in listings, logs and error messages."""

_PREFIX_LENGTH = 11
_BODY_LENGTH = _PREFIX_LENGTH + 26  # 37: what the checksum covers
_SHAPE = (
    f"a Tollway virtual key is {KEY_LENGTH} characters starting lw_vk_live_ or lw_vk_test_, "
    "followed by upper-case letters and digits"
)


class KeyFormatError(ValueError):
    """A presented key is refused before any lookup: it cannot be a Tollway virtual key.

    ``code`` is ``missing_key``, ``malformed_key`` or ``bad_checksum``; the message says what to
    fix and never contains more of the presented key than its first 18 characters (it is also
    ``message``).
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)

    def __reduce__(self) -> tuple[type[KeyFormatError], tuple[str, str]]:
        """Pickle through the constructor arguments."""
        return (type(self), (self.code, str(self)))


def checksum(first37: str) -> str:
    """The 3-char Crockford checksum of a key's first 37 characters (low 15 bits of CRC-32)."""
    crc = zlib.crc32(first37.encode("ascii")) & 0x7FFF
    return CROCKFORD[crc >> 10] + CROCKFORD[(crc >> 5) & 31] + CROCKFORD[crc & 31]


def mint_key(env: str = "live") -> str:
    """A new 40-char secret for environment ``live`` or ``test``.

    The ULID is built from the time and 80 fresh bits from ``os.urandom`` — never
    ``ULID()``: python-ulid is monotonic within a millisecond (the next ULID is the previous
    plus one), so a key id or a second key minted in the same millisecond would give the
    secret away.
    """
    if env not in ("live", "test"):
        raise ValueError(f"a key environment is 'live' or 'test', not {env!r}")
    millis = int(time.time() * 1000).to_bytes(6, "big")
    body = f"lw_vk_{env}_{ULID.from_bytes(millis + os.urandom(10))}"
    return body + checksum(body)


def display_prefix(secret: str) -> str:
    """The part of a key that may be displayed: its first 18 characters."""
    return secret[:DISPLAY_PREFIX_LENGTH]


def _shown(presented: str) -> str:
    """What an error message may quote of a presented key: the display prefix, if it is ours."""
    if presented.startswith("lw_vk_"):
        return f" (it starts {presented[:DISPLAY_PREFIX_LENGTH]!r})"
    return ""


def _malformed(presented: str) -> KeyFormatError:
    """The most helpful ``malformed_key`` error for a key of the wrong shape."""
    n = len(presented)
    stripped = presented.strip()
    if not stripped:
        return KeyFormatError("missing_key", _missing_message())
    if stripped != presented:
        return KeyFormatError(
            "malformed_key",
            "the key has spaces or line breaks around it; send it without them "
            "(check how the environment variable or config value was written)",
        )
    if presented.startswith("$"):
        return KeyFormatError(
            "malformed_key",
            "the key looks like an unexpanded environment variable reference; make sure the "
            "variable is set where the client runs",
        )
    lower = presented.lower()
    if lower.startswith("bearer "):
        return KeyFormatError(
            "malformed_key",
            "the key starts with 'Bearer ' — the scheme was sent twice; send the key alone "
            "in x-api-key, or 'Authorization: Bearer <key>' once",
        )
    if lower.startswith("sk-ant-"):
        return KeyFormatError(
            "malformed_key",
            f"that looks like an Anthropic API key; this gateway takes a Tollway virtual key "
            f"instead ({_SHAPE})",
        )
    if lower.startswith("sk-"):
        return KeyFormatError(
            "malformed_key",
            f"that looks like an OpenAI API key; this gateway takes a Tollway virtual key "
            f"instead ({_SHAPE})",
        )
    if not presented.startswith("lw_vk_"):
        return KeyFormatError(
            "malformed_key",
            f"the key is {n} characters and is not a Tollway virtual key; {_SHAPE}",
        )
    shown = _shown(presented)
    if not presented.startswith(PREFIXES):
        return KeyFormatError(
            "malformed_key",
            f"the key{shown} has the wrong prefix; {_SHAPE}",
        )
    if n < LEGACY_KEY_LENGTH:
        return KeyFormatError(
            "malformed_key",
            f"the key{shown} is {n} characters; {_SHAPE} — did you paste only the prefix? "
            "Use the whole secret (shown once, when the key is created or rotated)",
        )
    if n not in (KEY_LENGTH, LEGACY_KEY_LENGTH):
        return KeyFormatError(
            "malformed_key",
            f"the key{shown} is {n} characters; {_SHAPE} — it may have been cut or have "
            "extra characters stuck to it",
        )
    rest = presented[_PREFIX_LENGTH:]
    if rest.strip(CROCKFORD):
        if rest.upper().strip(CROCKFORD) == "":
            why = "contains lower-case letters; keys are case-sensitive, copy it exactly"
        else:
            why = (
                "contains characters that never appear in a key (after the prefix only digits "
                "and the letters A-Z except I, L, O and U)"
            )
        return KeyFormatError("malformed_key", f"the key{shown} {why}")
    # rest[0] > "7": the 26-char ULID would not fit in 128 bits.
    return KeyFormatError(
        "malformed_key",
        f"the key{shown} is not a valid key (the 26 characters after the prefix are not a valid "
        "id); copy the whole key again",
    )


def _missing_message() -> str:
    """The message for a request that carried no key at all."""
    return (
        "no API key was sent; send a Tollway virtual key (lw_vk_live_… or lw_vk_test_…) as "
        "'Authorization: Bearer <key>' or in the x-api-key header"
    )


def check_key_format(presented: str | None) -> str:
    """Return ``presented`` if it is a well-formed key (40-char or legacy 37-char), else raise.

    Raises :class:`KeyFormatError` with code ``missing_key`` (None or empty), ``malformed_key``
    (wrong prefix, length, characters, case) or ``bad_checksum`` (a 40-char key whose last three
    characters do not match: mistyped or altered). Lower case is refused: keys are case-sensitive.
    """
    if not presented:
        raise KeyFormatError("missing_key", _missing_message())
    n = len(presented)
    if (
        n in (KEY_LENGTH, LEGACY_KEY_LENGTH)
        and presented.startswith(PREFIXES)
        and not presented[_PREFIX_LENGTH:].strip(CROCKFORD)
        and presented[_PREFIX_LENGTH] <= "7"
    ):
        if n == LEGACY_KEY_LENGTH or checksum(presented[:_BODY_LENGTH]) == presented[_BODY_LENGTH:]:
            return presented
        raise KeyFormatError(
            "bad_checksum",
            f"the key{_shown(presented)} has the right shape but its checksum does not match, so "
            "it was mistyped or altered; copy the whole key again from where it was created",
        )
    raise _malformed(presented)


def hash_key(pepper: bytes, secret: str) -> str:
    """The stored form of a key: ``hex(HMAC-SHA256(pepper, secret))``."""
    return hmac.digest(pepper, secret.encode("utf-8"), "sha256").hex()


class KeyHasher:
    """:func:`hash_key` for one pepper, for a hot path: ``KeyHasher(pepper)(secret) ==
    hash_key(pepper, secret)``.

    The HMAC keyed with the pepper is set up once and copied for each secret, which skips
    OpenSSL's digest look-up and key set-up per call (about half the cost of
    :func:`hash_key`). It keeps no secret: only the pepper's keyed HMAC state.
    """

    __slots__ = ("_keyed",)

    def __init__(self, pepper: bytes) -> None:
        """Key the HMAC-SHA256 with ``pepper`` once."""
        self._keyed = hmac.new(pepper, digestmod=hashlib.sha256)

    def __call__(self, secret: str) -> str:
        """``hex(HMAC-SHA256(pepper, secret))``."""
        mac = self._keyed.copy()
        mac.update(secret.encode("utf-8"))
        return mac.hexdigest()


def keys_equal(a: str, b: str) -> bool:
    """Constant-time equality of two secrets or hashes (``hmac.compare_digest``)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
