"""Console pages: model providers (credentials are write-only: only their masked hint is ever
shown), routing policies (the provider order is editable) and budgets (spend-vs-limit bars)."""

from __future__ import annotations

from typing import Any

from quart import Response, redirect, url_for

from tollway_control_plane._values import PROVIDER_TYPES
from tollway_control_plane.console._web import blueprint, call, form, render
from tollway_control_plane.console.charts import meter, meter_state
from tollway_control_plane.store import ValidationError

__all__: list[str] = []


async def _providers_page(
    status: int = 200, *, values: dict[str, str] | None = None, errors: list[str] | None = None
) -> Response:
    providers = await call("providers.list")
    return await render(
        "providers.html",
        status,
        providers=providers,
        types=PROVIDER_TYPES,
        values=values or {},
        errors=errors or [],
    )


@blueprint.get("/providers")
async def providers() -> Response:
    return await _providers_page()


@blueprint.post("/providers")
async def providers_create() -> Response:
    data = await form()
    fields = ("name", "type", "scope", "base_url", "models")
    # The credential is never echoed back into the form, even when the create fails.
    values = {f: data.get(f, "") for f in fields}
    body: dict[str, Any] = {k: v.strip() for k, v in values.items() if v.strip()}
    if "models" in body:
        body["models"] = [m.strip() for m in body["models"].split(",") if m.strip()]
    if data.get("api_key", "").strip():
        body["api_key"] = data["api_key"].strip()
    try:
        await call("providers.create", None, body)
    except ValidationError as exc:
        return await _providers_page(422, values=values, errors=exc.problems or [exc.message])
    return redirect(url_for("tollway_console.providers"), 303)  # type: ignore[return-value]


def _entry_text(entry: dict[str, Any]) -> str:
    pid = str(entry["provider_id"])
    return f"{pid}:{entry['model']}" if entry.get("model") else pid


@blueprint.get("/policies")
async def policies() -> Response:
    found = await call("policies.list")
    names = {p["id"]: p["name"] for p in await call("providers.list")}
    return await render("policies.html", policies=found, provider_names=names)


@blueprint.post("/policies/<policy_id>/move")
async def policy_move(policy_id: str) -> Response:
    """Move one entry of the policy's provider order up or down (one ``policies.update``)."""
    data = await form()
    policy = await call("policies.get", policy_id)
    entries = [_entry_text(e) for e in policy["entries"]]
    try:
        index = int(data.get("index", ""))
    except ValueError:
        raise ValidationError("index: must be an entry's position") from None
    other = index + (-1 if data.get("direction") == "up" else 1)
    if not (0 <= index < len(entries) and 0 <= other < len(entries)):
        raise ValidationError(f"index: no entry can move {data.get('direction')} from {index}")
    entries[index], entries[other] = entries[other], entries[index]
    await call("policies.update", policy_id, {"providers": entries})
    return redirect(url_for("tollway_console.policies") + f"#{policy_id}", 303)  # type: ignore[return-value]


@blueprint.get("/budgets")
async def budgets() -> Response:
    rows = []
    for b in await call("budgets.list"):
        spent, limit = int(b["spend_micro_usd"]), int(b["limit_micro_usd"])
        label = f"{b['spend_usd']} of {b['limit_usd']} USD this {b['window']}"
        rows.append(
            {
                **b,
                "state": meter_state(spent, limit),
                "percent": 100.0 if limit <= 0 else 100.0 * spent / limit,
                "bar": meter(spent, limit, label),
            }
        )
    return await render("budgets.html", budgets=rows)


@blueprint.post("/budgets/<budget_id>/reset")
async def budget_reset(budget_id: str) -> Response:
    await call("budgets.reset", budget_id)
    return redirect(url_for("tollway_console.budgets"), 303)  # type: ignore[return-value]
