"""Provider credentials at rest: AES-256-GCM with a key derived from the pepper.

key = HKDF-SHA256(LW_VIRTUAL_KEY_PEPPER, length 32, no salt, info ``tollway provider
credentials``); stored value = base64(12-byte random nonce ‖ ciphertext ‖ tag), with the
provider id as associated data so a ciphertext cannot be moved to another row. Changing the
pepper makes stored credentials (and key hashes) unreadable: it must stay the same for the life
of the store.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["CredentialBox", "CredentialError", "mask_secret"]

_INFO = b"tollway provider credentials"


class CredentialError(Exception):
    """A stored credential cannot be decrypted (wrong pepper, or the row was altered)."""


class CredentialBox:
    """Encrypts and decrypts provider credentials with a key derived from the pepper."""

    def __init__(self, pepper: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(pepper)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "CredentialBox(<key hidden>)"

    def encrypt(self, plaintext: str, associated: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), associated.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, stored: str, associated: str) -> str:
        try:
            raw = base64.b64decode(stored)
            plain = self._aead.decrypt(raw[:12], raw[12:], associated.encode())
        except (InvalidTag, ValueError) as exc:
            raise CredentialError(
                f"the stored credential of {associated} cannot be decrypted: the pepper "
                "(LW_VIRTUAL_KEY_PEPPER) differs from the one it was stored with, or the row "
                "was altered; set the original pepper or update the provider's --api-key"
            ) from exc
        return plain.decode("utf-8")


def mask_secret(secret: str) -> str:
    """What may be shown of a credential after creation: ``sk-…abcd`` (never more)."""
    if len(secret) >= 12:
        return f"{secret[:3]}…{secret[-4:]}"
    return "…" + "*" * 4
