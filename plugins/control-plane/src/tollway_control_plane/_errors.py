"""The store's errors; :mod:`tollway_control_plane.store` draws their tree."""

from __future__ import annotations

__all__ = ["Conflict", "KeyRejected", "NotFound", "StoreError", "ValidationError"]


class StoreError(Exception):
    """A store operation was refused; the message says what to do."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class ValidationError(StoreError):
    """Bad input. ``problems``: one ``path: message`` line each."""

    status = 422

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class KeyRejected(StoreError):
    """A presented secret does not resolve to a usable key (``code`` says why)."""

    status = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
