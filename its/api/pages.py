"""Sign-in for people: ``/login`` (a plain HTML form), ``/logout``, ``/signin/<token>`` (one-time
links), and :class:`SessionGate`, the middleware that keeps the dashboard behind a session.

The login form is protected against cross-site posting by a double-submit token: ``GET /login``
sets a random ``_csrf_token`` cookie and puts the same value in a hidden field; ``POST /login``
accepts only when both agree. A successful sign-in starts a server-side session (cookie
``its_session``, HttpOnly, SameSite=Lax) and replaces ``_csrf_token`` with the session's own CSRF
token, which Dash's renderer sends back as ``X-CSRFToken`` on every callback.
"""

from __future__ import annotations

import asyncio
import html
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from its.api.deps import EngineDep, SettingsDep
from its.api.security import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    client_address,
)
from its.auth import audit, sessions, tokens, users
from its.auth.identity import Identity
from its.config import Settings
from its.errors import AuthenticationError

router = APIRouter(include_in_schema=False)
IDENTITY_STATE = "its_identity"  # key in the ASGI scope's state where the gate puts the Identity

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in — ITS operator</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; background: #111827; color: #e5e7eb; display: flex;
  align-items: center; justify-content: center; min-height: 100vh; margin: 0; }}
form {{ background: #1f2937; padding: 2rem 2.5rem; border-radius: 8px; width: 20rem; }}
h1 {{ font-size: 1.3rem; margin-top: 0; }}
label {{ display: block; margin: 0.8rem 0 0.3rem; font-size: 0.9rem; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: 0.5rem;
  border-radius: 4px; border: 1px solid #4b5563; background: #111827; color: #e5e7eb; }}
button {{ margin-top: 1.2rem; width: 100%; padding: 0.6rem; border: 0; border-radius: 4px;
  background: #2563eb; color: white; font-size: 1rem; cursor: pointer; }}
.error {{ background: #7f1d1d; padding: 0.5rem; border-radius: 4px; font-size: 0.9rem; }}
.note {{ font-size: 0.8rem; color: #9ca3af; margin-top: 1rem; }}
</style></head>
<body><form method="post" action="/login" id="login-form">
<h1>ITS operator sign-in</h1>
{error}
<input type="hidden" name="csrf_token" value="{csrf}">
<input type="hidden" name="next" value="{next}">
<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="login-submit">Sign in</button>
<p class="note">No account? An administrator creates one with <code>its users add</code>.</p>
</form></body></html>
"""


def _safe_next(target: str | None) -> str:
    """Only a local path: ``next=//evil.example`` must not send people elsewhere."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def _login_page(csrf: str, next_path: str, error: str | None, status: int = 200) -> HTMLResponse:
    err = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
    body = PAGE.format(error=err, csrf=html.escape(csrf), next=html.escape(next_path))
    resp = HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    return resp


def _set_csrf_cookie(resp: Response, value: str, settings: Settings) -> None:
    # Readable by the page (Dash's renderer copies it into X-CSRFToken), Strict: never sent
    # from another site.
    resp.set_cookie(
        CSRF_COOKIE, value, httponly=False, samesite="strict", secure=settings.cookie_secure
    )


def _start(
    request: Request, engine: Engine, settings: Settings, user: users.User, next_path: str
) -> Response:
    """Start a session for ``user``: cookies set, redirect to ``next_path`` (local only)."""
    with engine.begin() as conn:
        new = sessions.start_session(
            conn,
            user,
            lifetime=timedelta(seconds=settings.session_lifetime_s),
            client=client_address(request),
        )
    resp = RedirectResponse(_safe_next(next_path), status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        new.token,
        max_age=settings.session_lifetime_s,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
    )
    _set_csrf_cookie(resp, new.csrf_token, settings)
    return resp


@router.get("/login")
def login_form(
    request: Request,
    settings: SettingsDep,
    next: str = "/",  # noqa: A002
    expired: bool = False,
) -> HTMLResponse:
    csrf = request.cookies.get(CSRF_COOKIE) or ""
    if not (20 <= len(csrf) <= 100):
        csrf = tokens.new_token()
    note = "That sign-in link was already used or has expired." if expired else None
    resp = _login_page(csrf, _safe_next(next), note)
    _set_csrf_cookie(resp, csrf, settings)
    return resp


@router.post("/login")
def login(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002
) -> Response:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not tokens.same(csrf_token, cookie):
        fresh = tokens.new_token()
        resp = _login_page(fresh, _safe_next(next), "The form expired: please sign in again.", 403)
        _set_csrf_cookie(resp, fresh, settings)
        return resp
    try:
        user = users.sign_in(
            engine,
            username.strip().lower(),
            password,
            passwords=request.app.state.passwords,
            max_failures=settings.signin_max_failures,
            window=timedelta(seconds=settings.signin_failure_window_s),
            client=client_address(request),
        )
    except AuthenticationError as exc:
        return _login_page(cookie or "", _safe_next(next), str(exc), 401)
    return _start(request, engine, settings, user, next)


@router.get("/signin/{token}")
def signin_link(request: Request, engine: EngineDep, settings: SettingsDep, token: str) -> Response:
    """A one-time link (``its up`` prints one): signs in and lands on the dashboard."""
    with engine.begin() as conn:
        user = sessions.redeem_signin_link(conn, token)
        audit.record(
            conn,
            "signin.link",
            actor=user.username if user else None,
            target=user.username if user else None,
            outcome="ok" if user else "failed",
            detail=None if user else {"reason": "unknown, used or expired link"},
            client=client_address(request),
        )
    if user is None:
        return RedirectResponse("/login?expired=1", status_code=303)
    return _start(request, engine, settings, user, "/")


@router.post("/logout")
def logout(
    request: Request,
    engine: EngineDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Ends the session (server side) and clears the cookies; needs the CSRF token (form field
    ``csrf_token`` or header ``X-CSRFToken``) so another site cannot sign people out."""
    token = request.cookies.get(SESSION_COOKIE)
    presented = csrf_token or request.headers.get(CSRF_HEADER)
    with engine.begin() as conn:
        session = sessions.find_session(conn, token)
        if session is not None:
            if not (
                tokens.same(presented, request.cookies.get(CSRF_COOKIE))
                and session.csrf_ok(presented)
            ):
                return JSONResponse({"detail": "CSRF token missing or wrong"}, status_code=403)
            sessions.end_session(conn, token)
            audit.record(conn, "signout", actor=session.user.username,
                         target=session.user.username, client=client_address(request))  # fmt: skip
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    resp.delete_cookie(CSRF_COOKIE)
    return resp


class SessionGate:
    """ASGI middleware: the dashboard (``/`` and Dash's ``/_dash-*`` routes) needs a session.

    A page load without one is redirected to ``/login``; a callback or any other request answers
    401 JSON; a POST (Dash callbacks) also needs the CSRF header (403 without). The caller's
    :class:`Identity` goes into the request state (``request.state.its_identity``), where Dash
    callbacks read it through Dash's own request object (dashboard/session.py).
    """

    def __init__(self, app: ASGIApp, *, engine: Engine, prefix: str = "/") -> None:
        self.app = app
        self.engine = engine
        self.prefix = prefix

    def _guarded(self, path: str) -> bool:
        root = self.prefix.rstrip("/")
        return path in (self.prefix, root) or path.startswith(root + "/_dash-")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        token = conn.cookies.get(SESSION_COOKIE)
        session = await asyncio.to_thread(self._lookup, token) if token else None
        if session is None:
            await self._refuse(scope, receive, send, conn)
            return
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            header = conn.headers.get(CSRF_HEADER)
            if not (tokens.same(header, conn.cookies.get(CSRF_COOKIE)) and session.csrf_ok(header)):
                resp = JSONResponse({"detail": "CSRF token missing or wrong"}, status_code=403)
                await resp(scope, receive, send)
                return
        scope.setdefault("state", {})[IDENTITY_STATE] = Identity.of_session(session)
        await self.app(scope, receive, send)

    def _lookup(self, token: str) -> sessions.ActiveSession | None:
        with self.engine.begin() as c:
            return sessions.find_session(c, token)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, conn: HTTPConnection
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401})
            return
        if scope["method"] in ("GET", "HEAD") and not scope["path"].startswith(
            self.prefix.rstrip("/") + "/_dash-"
        ):
            target = "/login?next=" + quote(conn.url.path, safe="/")
            resp: Response = RedirectResponse(target, status_code=303)
        else:
            resp = JSONResponse(
                {"detail": "sign in first: your session is missing or has ended"},
                status_code=401,
            )
        await resp(scope, receive, send)
