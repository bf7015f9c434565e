"""The CLI's remote mode: the same operations as :class:`~tollway_control_plane.service.Service`,
over the admin REST API of a running control plane (``TOLLWAY_ADMIN_URL`` +
``TOLLWAY_ADMIN_TOKEN``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tollway_control_plane.admin import PREFIX
from tollway_control_plane.service import operation
from tollway_control_plane.store import Conflict, NotFound, StoreError, ValidationError

__all__ = ["RemoteService"]


class RemoteService:
    """Runs operations on a remote control plane."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url + PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"RemoteService({self.url})"

    def close(self) -> None:
        self._http.close()

    def call(self, name: str, id: str | None = None, body: Any = None) -> Any:
        op = operation(name)
        path = op.path.replace("{id}", quote(id or "", safe=""))
        return self.request(op.method, path, json=body if op.body else None)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One admin API request (``path`` under ``/api/admin``); its JSON answer, or the
        store error the answer's status and envelope mean."""
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise StoreError(
                f"cannot reach the control plane at {self.url} ({type(exc).__name__}: {exc}); "
                "check TOLLWAY_ADMIN_URL"
            ) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code < 400:
            return data
        err = data.get("error", {}) if isinstance(data, dict) else {}
        message = err.get("message") or f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code == 422:
            raise ValidationError(err.get("problems") or [message])
        if response.status_code == 404:
            raise NotFound(message)
        if response.status_code == 409:
            raise Conflict(message)
        error = StoreError(message)
        error.status = response.status_code
        raise error
