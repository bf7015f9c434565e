"""Small server-rendered SVG charts (no script, no inline style: the console's CSP allows
neither). Every text in them is escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

__all__ = ["hourly_bars", "latency_split", "meter", "meter_state"]

#: A budget at or over this share of its limit is shown as a warning.
WARNING_SHARE = 0.8


def hourly_bars(hourly: Sequence[Mapping[str, Any]], width: int = 720, height: int = 140) -> Markup:
    """Requests per hour, stacked ok/error bars, with the first/last hour labelled."""
    top, bottom = 10, 20
    plot = height - top - bottom
    peak = max((int(h["ok"]) + int(h["error"]) for h in hourly), default=0) or 1
    step = width / max(1, len(hourly))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Requests per hour, last 24 hours (peak {peak})">',
        f'<line class="axis" x1="0" y1="{top + plot}" x2="{width}" y2="{top + plot}"/>',
    ]
    for i, h in enumerate(hourly):
        x = i * step + 1
        ok, err = int(h["ok"]), int(h["error"])
        ok_h = plot * ok / peak
        err_h = plot * err / peak
        label = escape(f"{h['hour'][11:13]}:00 UTC — {ok} ok, {err} errors")
        if ok:
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{top + plot - ok_h:.1f}" '
                f'width="{step - 2:.1f}" height="{ok_h:.1f}"><title>{label}</title></rect>'
            )
        if err:
            parts.append(
                f'<rect class="bar-error" x="{x:.1f}" y="{top + plot - ok_h - err_h:.1f}" '
                f'width="{step - 2:.1f}" height="{err_h:.1f}"><title>{label}</title></rect>'
            )
    if hourly:
        first, last = hourly[0]["hour"][11:13], hourly[-1]["hour"][11:13]
        parts.append(f'<text x="0" y="{height - 5}">{escape(first)}:00</text>')
        parts.append(
            f'<text x="{width}" y="{height - 5}" text-anchor="end">{escape(last)}:00 UTC</text>'
        )
        parts.append(f'<text x="{width}" y="{top}" text-anchor="end">peak {peak}/h</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def meter_state(spent: int, limit: int) -> str:
    """``ok``, ``warning`` (at or over 80 % of the limit) or ``breached``."""
    if limit <= 0 or spent >= limit:
        return "breached" if spent >= limit else "ok"
    return "warning" if spent >= WARNING_SHARE * limit else "ok"


def meter(spent: int, limit: int, label: str, width: int = 360, height: int = 18) -> Markup:
    """A spend-vs-limit bar (micro-USD amounts): filled to the share spent, coloured by state,
    a tick at the warning share."""
    state = meter_state(spent, limit)
    share = 1.0 if limit <= 0 else min(1.0, spent / limit)
    tick = WARNING_SHARE * width
    return Markup(
        f'<svg class="chart meter" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}">'
        f'<rect class="meter-bg" x="0" y="0" width="{width}" height="{height}" rx="3"/>'
        f'<rect class="meter-{state}" x="0" y="0" width="{share * width:.1f}" '
        f'height="{height}" rx="3"/>'
        f'<line class="axis" x1="{tick:.1f}" y1="0" x2="{tick:.1f}" y2="{height}"/>'
        f"<title>{escape(label)}</title></svg>"
    )


def latency_split(record: Mapping[str, Any], width: int = 560, height: int = 22) -> dict[str, Any]:
    """A request's duration split into gateway overhead and upstream time (what the span
    records), with a bar; ``svg`` is ``None`` when the span has no split."""
    total = float(record.get("duration_ms") or 0)
    gateway = record.get("gateway_overhead_ms")
    upstream = record.get("upstream_ms")
    if not isinstance(gateway, int | float) or not isinstance(upstream, int | float):
        return {"total_ms": total, "gateway_ms": gateway, "upstream_ms": upstream, "svg": None}
    whole = max(total, float(gateway) + float(upstream), 0.001)
    g_w = width * float(gateway) / whole
    u_w = width * float(upstream) / whole
    label = f"gateway {gateway:.1f} ms, upstream {upstream:.1f} ms of {total:.1f} ms"
    svg = Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}">'
        f'<rect class="meter-bg" x="0" y="0" width="{width}" height="{height}"/>'
        f'<rect class="seg-gateway" x="0" y="0" width="{g_w:.1f}" height="{height}">'
        f"<title>gateway {gateway:.1f} ms</title></rect>"
        f'<rect class="seg-upstream" x="{g_w:.1f}" y="0" width="{u_w:.1f}" height="{height}">'
        f"<title>upstream {upstream:.1f} ms</title></rect></svg>"
    )
    return {"total_ms": total, "gateway_ms": gateway, "upstream_ms": upstream, "svg": svg}
