"""The console's blueprint and what every page shares: sign-in, sessions, CSRF, the service.

Every page needs a session (else: the sign-in page); every POST needs the session's CSRF token
and an ``Origin`` (or ``Referer``) of this console. Reads and writes go through
``state().service.call`` as the signed-in principal: the admin API's and the CLI's one path,
with its permission checks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response, g, redirect, render_template, request, url_for

from tollway_control_plane._crypto import CredentialError
from tollway_control_plane.access import project_ids
from tollway_control_plane.auth import (
    Forbidden,
    Principal,
    authenticate,
    permission_for,
    principal_by_token_id,
)
from tollway_control_plane.console.sessions import (
    COOKIE,
    LoginThrottle,
    SessionStore,
    request_is_https,
    same_origin,
)
from tollway_control_plane.protocol import BodyTooLarge, read_body, state
from tollway_control_plane.relay import client_address
from tollway_control_plane.store import DatabaseError, NotFound, StoreError, ValidationError

__all__ = ["PREFIX", "blueprint", "call", "can", "form", "projects", "render", "sessions"]

log = logging.getLogger("tollway_control_plane.console")

PREFIX = "/console"
#: A console form is small (a key's config JSON is the biggest field).
MAX_FORM_BYTES = 256 * 1024
_PUBLIC = {"tollway_console.login", "tollway_console.static"}
_TOKEN_ENDED = (
    "Your session ended: the API token it was signed in with has been revoked or has expired. "
    "Sign in with another token."
)

blueprint = Blueprint(
    "tollway_console",
    __name__,
    url_prefix=PREFIX,
    template_folder="templates",
    static_folder="static",
)

_SECURITY_HEADERS = {
    # Everything is served from here: no inline script, no CDN, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def sessions() -> SessionStore:
    """This control plane's console sessions."""
    extras = state().extras
    found = extras.get("console_sessions")
    if not isinstance(found, SessionStore):
        found = extras["console_sessions"] = SessionStore()
    return found


def _throttle() -> LoginThrottle:
    extras = state().extras
    found = extras.get("console_login_throttle")
    if not isinstance(found, LoginThrottle):
        found = extras["console_login_throttle"] = LoginThrottle()
    return found


def _https() -> bool:
    return request_is_https(request.scheme, request.headers.get("x-forwarded-proto"))


def _origin_ok() -> bool:
    scheme = "https" if _https() else "http"
    return same_origin(
        request.headers.get("origin"), request.headers.get("referer"), scheme, request.host
    )


def projects(principal: Principal) -> list[str] | None:
    """The projects whose requests ``principal`` may see (``None``: all): the admin API's
    rule (:func:`tollway_control_plane.access.project_ids`), so a team token sees its team's
    projects here exactly as at ``/api/admin/requests``. Reads the store: call it in a worker
    thread."""
    return project_ids(state().service, principal)


def can(operation: str) -> bool:
    """Whether the signed-in principal may run ``operation`` (``keys.create``): pages show a
    write button only then (the service checks again on the POST)."""
    principal: Principal | None = g.get("principal")
    return principal is not None and principal.can(permission_for(operation))


async def form() -> dict[str, str]:
    """The POSTed form (already read and CSRF-checked by :func:`_guard`)."""
    data: dict[str, str] = g.get("console_form") or {}
    return data


async def _read_form() -> dict[str, str] | None:
    """The urlencoded body as a dict (``None``: too big or not a form)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return None
    from urllib.parse import parse_qsl

    try:
        raw = await read_body(MAX_FORM_BYTES)
    except BodyTooLarge:
        return None
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    return dict(pairs)


async def render(template: str, http_status: int = 200, **context: Any) -> Response:
    body = await render_template(f"console/{template}", **context)
    return Response(body, status=http_status, content_type="text/html; charset=utf-8")


async def _error_page(status: int, message: str, problems: list[str] | None = None) -> Response:
    return await render("error.html", status, status=status, message=message, problems=problems)


async def call(name: str, id: str | None = None, body: Any = None) -> Any:
    """Run service operation ``name`` as the signed-in principal (in a worker thread)."""
    principal: Principal = g.principal
    return await asyncio.to_thread(state().service.call, name, id, body, principal=principal)


def _next_path(value: str | None, principal: Principal) -> str:
    """Where to go after signing in: a console path only (never another site); by default the
    overview, or the keys for a token that may not read requests."""
    if value and "\\" not in value:
        parts = urlsplit(value)
        inside = parts.path == PREFIX or parts.path.startswith(f"{PREFIX}/")
        if not parts.scheme and not parts.netloc and inside and ".." not in parts.path:
            return value
    if principal.can(permission_for("requests.list")):
        return url_for("tollway_console.overview")
    return url_for("tollway_console.keys")


async def _current_principal(signed_in: Principal) -> Principal | None:
    """Who the session stands for now: the admin token's super-user, or its API token looked up
    again by id (about a second's cache, so a page costs no query) — ``None`` once that token is
    revoked or expired."""
    if signed_in.token_id is not None:
        store = state().store
        return await asyncio.to_thread(principal_by_token_id, store, signed_in.token_id)
    return signed_in if signed_in.superuser else None


@blueprint.before_request
async def _guard() -> Response | None:
    if request.endpoint in _PUBLIC:
        if request.method == "POST" and not _origin_ok():
            return await _error_page(403, "this form was not sent from this console; reload it")
        return None
    session = sessions().get(request.cookies.get(COOKIE))
    if session is None:
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        login = url_for("tollway_console.login", next=target) if target else None
        return redirect(login or url_for("tollway_console.login"), 303)  # type: ignore[return-value]
    principal = await _current_principal(session.principal)
    if principal is None:  # its API token was revoked or expired: the session ends with it
        sessions().end(session.id)
        log.info("console_session_ended principal=%s reason=token", session.principal.name)
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        login = url_for("tollway_console.login", ended="token", next=target or None)
        response: Response = redirect(login, 303)  # type: ignore[assignment]
        response.delete_cookie(COOKIE, path=PREFIX)
        return response
    g.principal = principal
    g.console_session = session
    if request.method == "POST":
        if not _origin_ok():
            return await _error_page(
                403, "refused: this form was not sent from a page of this console"
            )
        data = await _read_form()
        if data is None or not session.csrf_ok(data.get("csrf")):
            return await _error_page(
                403, "refused: the form's CSRF token is missing or stale; reload the page"
            )
        g.console_form = data
    return None


@blueprint.after_request
async def _headers(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@blueprint.context_processor
def _context() -> dict[str, Any]:
    session = g.get("console_session")
    return {
        "principal": g.get("principal"),
        "csrf_token": session.csrf if session is not None else "",
        "can": can,
    }


@blueprint.errorhandler(Forbidden)
async def _forbidden(exc: Forbidden) -> Response:
    return await _error_page(403, exc.message)


@blueprint.errorhandler(NotFound)
async def _not_found(exc: NotFound) -> Response:
    return await _error_page(404, exc.message)


@blueprint.errorhandler(ValidationError)
async def _invalid(exc: ValidationError) -> Response:
    return await _error_page(422, exc.message, exc.problems)


@blueprint.errorhandler(StoreError)
async def _store_error(exc: StoreError) -> Response:
    return await _error_page(exc.status, exc.message)


@blueprint.errorhandler(DatabaseError)
async def _database_error(exc: DatabaseError) -> Response:
    return await _error_page(503, f"the store is not answering: {exc}")


@blueprint.errorhandler(CredentialError)
async def _credential_error(exc: CredentialError) -> Response:
    return await _error_page(503, str(exc))


# --- sign in / out ----------------------------------------------------------------------------


@blueprint.route("/login", methods=["GET", "POST"])
async def login() -> Response:
    cp = state()
    off = cp.admin_token is None
    if request.method == "GET":
        ended = request.args.get("ended") == "token"
        return await render(
            "login.html",
            next=request.args.get("next", ""),
            off=off,
            error=_TOKEN_ENDED if ended else None,
        )
    data = await _read_form() or {}
    address = client_address()  # the browser's, also through a worker's relay
    throttle = _throttle()
    if throttle.blocked(address):
        log.warning("console_login_throttled remote=%s", address)
        return await render(
            "login.html",
            429,
            next=data.get("next", ""),
            off=off,
            error="Too many failed sign-ins from this address: wait a minute, then try again.",
        )
    presented = data.get("token", "").strip()
    principal = (
        await asyncio.to_thread(authenticate, cp.admin_token, presented, store=cp.store)
        if presented
        else None
    )
    if principal is None:
        throttle.failed(address)
        log.info("console_login_refused remote=%s", address)
        return await render(
            "login.html",
            401,
            next=data.get("next", ""),
            off=off,
            error="That token was not accepted: paste TOLLWAY_ADMIN_TOKEN or an API token.",
        )
    throttle.succeeded(address)
    sessions().end(request.cookies.get(COOKIE))  # a sign-in always starts a new session
    session = sessions().create(principal)
    log.info("console_login principal=%s", principal.name)
    response: Response = redirect(_next_path(data.get("next"), principal), 303)  # type: ignore[assignment]
    response.set_cookie(
        COOKIE,
        session.id,
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=_https(),
    )
    return response


@blueprint.post("/logout")
async def logout() -> Response:
    sessions().end(request.cookies.get(COOKIE))
    response: Response = redirect(url_for("tollway_console.login"), 303)  # type: ignore[assignment]
    response.delete_cookie(COOKIE, path=PREFIX)
    return response
