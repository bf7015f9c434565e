"""Console pages: virtual keys — list and search, create (the secret shown once), rotate,
revoke, disable/enable, edit the config JSON (the service's validation errors shown inline)."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, redirect, request, url_for

from tollway_control_plane.console._web import blueprint, call, form, render
from tollway_control_plane.store import ValidationError

__all__ = ["merge_patch"]

#: Fields a key search matches (case-insensitive substring).
_SEARCHED = ("id", "name", "display_prefix", "scope", "status", "env")


def _matches(key: dict[str, Any], query: str) -> bool:
    q = query.lower()
    return any(q in str(key.get(f) or "").lower() for f in _SEARCHED)


def merge_patch(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386, what ``keys.update`` takes for ``config``) that turns
    ``current`` into ``wanted``: a field missing from ``wanted`` becomes ``null`` (cleared),
    at every depth where both sides are objects."""
    patch: dict[str, Any] = dict.fromkeys(k for k in current if k not in wanted)
    for k, v in wanted.items():
        old = current.get(k)
        patch[k] = merge_patch(old, v) if isinstance(v, dict) and isinstance(old, dict) else v
    return patch


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _parse_json(text: str, field: str) -> tuple[Any, str | None]:
    """``text`` as JSON (empty: ``None``), or the error to show next to ``field``."""
    if not text.strip():
        return None, None
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        return None, f"{field}: not valid JSON ({exc})"


async def _list_page(
    status: int = 200, *, values: dict[str, str] | None = None, errors: list[str] | None = None
) -> Response:
    query = request.args.get("q", "").strip()
    keys: list[dict[str, Any]] = await call("keys.list")
    shown = [k for k in keys if _matches(k, query)] if query else keys
    return await render(
        "keys.html",
        status,
        keys=shown,
        total=len(keys),
        q=query,
        values=values or {},
        errors=errors or [],
    )


@blueprint.get("/keys")
async def keys() -> Response:
    return await _list_page()


@blueprint.post("/keys")
async def keys_create() -> Response:
    data = await form()
    values = {f: data.get(f, "") for f in ("name", "scope", "env", "config")}
    body: dict[str, Any] = {"name": values["name"].strip()}
    if values["scope"].strip():
        body["scope"] = values["scope"].strip()
    if values["env"].strip():
        body["env"] = values["env"].strip()
    config, problem = _parse_json(values["config"], "config")
    if problem:
        return await _list_page(422, values=values, errors=[problem])
    if config is not None:
        body["config"] = config
    try:
        created = await call("keys.create", None, body)
    except ValidationError as exc:
        return await _list_page(422, values=values, errors=exc.problems or [exc.message])
    return await render("secret.html", key=created, verb="created")


async def _key_page(
    key_id: str,
    status: int = 200,
    *,
    config_text: str | None = None,
    errors: list[str] | None = None,
) -> Response:
    key = await call("keys.get", key_id)
    return await render(
        "key.html",
        status,
        key=key,
        config_text=_pretty(key["config"]) if config_text is None else config_text,
        errors=errors or [],
    )


@blueprint.get("/keys/<key_id>")
async def key(key_id: str) -> Response:
    return await _key_page(key_id)


@blueprint.post("/keys/<key_id>/config")
async def key_config(key_id: str) -> Response:
    data = await form()
    text = data.get("config", "")
    config, problem = _parse_json(text, "config")
    if problem:
        return await _key_page(key_id, 422, config_text=text, errors=[problem])
    if config is None:
        config = {}
    if not isinstance(config, dict):
        return await _key_page(
            key_id, 422, config_text=text, errors=["config: must be a JSON object"]
        )
    # The update takes a merge patch; the page edits the whole document.
    key = await call("keys.get", key_id)
    current: dict[str, Any] = key["config"]
    if data.get("revision") and data["revision"] != str(key["revision"]):
        return await _key_page(
            key_id,
            409,
            config_text=text,
            errors=[
                f"the key changed since this page was opened (revision {data['revision']} → "
                f"{key['revision']}): copy your edit, reload the page and apply it again"
            ],
        )
    try:
        await call("keys.update", key_id, {"config": merge_patch(current, config)})
    except ValidationError as exc:
        return await _key_page(key_id, 422, config_text=text, errors=exc.problems or [exc.message])
    return redirect(url_for("tollway_console.key", key_id=key_id), 303)  # type: ignore[return-value]


@blueprint.post("/keys/<key_id>/rotate")
async def key_rotate(key_id: str) -> Response:
    rotated = await call("keys.rotate", key_id)
    return await render("secret.html", key=rotated, verb="rotated")


def _status_action(op: str) -> Any:
    async def action(key_id: str) -> Response:
        await call(op, key_id)
        return redirect(url_for("tollway_console.key", key_id=key_id), 303)  # type: ignore[return-value]

    action.__name__ = op.replace(".", "_")
    return action


for _verb in ("revoke", "disable", "enable"):
    blueprint.add_url_rule(
        f"/keys/<key_id>/{_verb}", f"key_{_verb}", _status_action(f"keys.{_verb}"), methods=["POST"]
    )
