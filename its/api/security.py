"""Who may call the API: an API key (programs) or the dashboard's session cookie (people).

Two documented schemes (see ``/docs``): ``X-API-Key: <key_id>.<secret>`` and the ``its_session``
cookie. Every route under ``/api/v1`` depends on :func:`authorize`, which the router declares once,
so a new route is covered without anyone remembering to: a safe method (GET/HEAD) needs ``read``,
any other method ``operate``; a route that needs more adds ``require(...)``. A cookie-authenticated
write must also echo the CSRF token: header ``X-CSRFToken`` equal to the ``_csrf_token`` cookie
and to the token issued with the session (double submit, bound to the session).

401 means no usable identity (none, unknown, expired, revoked), 403 a known identity without the
permission, or a missing/wrong CSRF token; both answer JSON ``{"detail": ...}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader

from its.api.deps import EngineDep, SettingsDep
from its.auth import audit, keys, sessions, tokens
from its.auth.identity import Identity
from its.auth.roles import Permission
from its.errors import AuthenticationError, PermissionDenied

SESSION_COOKIE = "its_session"
CSRF_COOKIE = "_csrf_token"  # the names Dash's renderer uses for its X-CSRFToken header
CSRF_HEADER = "X-CSRFToken"
API_KEY_HEADER = "X-API-Key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    auto_error=False,
    description="An API key `<key_id>.<secret>` from `its keys create` (scope read or operate).",
)
session_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    scheme_name="Session",
    auto_error=False,
    description="The dashboard's session cookie (sign in at /login). Writes with it also need "
    f"the `{CSRF_HEADER}` header equal to the `{CSRF_COOKIE}` cookie.",
)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": f'APIKey header="{API_KEY_HEADER}"'}


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, detail=reason, headers=UNAUTHORIZED_HEADERS)


def current_identity(
    request: Request,
    engine: EngineDep,
    api_key: Annotated[str | None, Security(api_key_scheme)] = None,
    session_token: Annotated[str | None, Security(session_scheme)] = None,
) -> Identity | None:
    """The identity a request presents, or None when it presents none; 401 for a bad one."""
    client = client_address(request)
    if api_key is not None:
        try:
            with engine.begin() as conn:
                return Identity.of_key(keys.authenticate_key(conn, api_key, client=client))
        except AuthenticationError as exc:
            with engine.begin() as conn:
                key_id = api_key.partition(".")[0][:32]
                audit.record(conn, "key.use", actor=None, target=key_id, outcome="failed",
                             detail={"reason": str(exc)}, client=client)  # fmt: skip
            raise unauthorized(str(exc)) from None
    if session_token is not None:
        with engine.begin() as conn:
            session = sessions.find_session(conn, session_token)
        if session is None:
            raise unauthorized("your session has ended: sign in again at /login")
        return Identity.of_session(session)
    return None


def csrf_ok(request: Request, identity: Identity) -> bool:
    """Double submit bound to the session: header == cookie == the session's token."""
    header = request.headers.get(CSRF_HEADER)
    cookie = request.cookies.get(CSRF_COOKIE)
    session = identity.session
    return bool(session and tokens.same(header, cookie) and session.csrf_ok(header))


def authorize(
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    identity: Annotated[Identity | None, Depends(current_identity)],
) -> Identity:
    """Router-wide check: reads need ``read``, anything else ``operate`` (and CSRF for cookies)."""
    write = request.method not in SAFE_METHODS
    if identity is None:
        if not write and settings.auth_anonymous_read:
            return Identity.anonymous()
        raise unauthorized(
            f"sign in (session cookie) or send an API key in the {API_KEY_HEADER} header"
        )
    if write and identity.via == "session" and not csrf_ok(request, identity):
        _denied(engine, request, identity, "CSRF token missing or wrong")
        raise HTTPException(
            403, detail=f"CSRF token missing or wrong: send the {CSRF_HEADER} header "
            f"equal to the {CSRF_COOKIE} cookie",
        )  # fmt: skip
    _check(engine, request, identity, Permission.operate if write else Permission.read)
    return identity


def _check(engine: EngineDep, request: Request, identity: Identity, need: Permission) -> None:
    if identity.via == "anonymous" and not identity.can(need):
        raise unauthorized(f"this needs {need.value}: sign in or send an API key")
    try:
        identity.require(need)
    except PermissionDenied as exc:
        _denied(engine, request, identity, str(exc))
        raise HTTPException(403, detail=str(exc)) from None


def _denied(engine: EngineDep, request: Request, identity: Identity, reason: str) -> None:
    with engine.begin() as conn:
        audit.record(
            conn,
            "access.denied",
            actor=identity.actor,
            target=f"{request.method} {request.url.path}",
            outcome="denied",
            detail={"reason": reason, **identity.audit_detail},
            client=client_address(request),
        )


Caller = Annotated[Identity, Depends(authorize)]


def require(permission: Permission):  # noqa: ANN201 - a FastAPI dependency
    """A dependency that also needs ``permission`` (on top of :func:`authorize`)."""

    def check(request: Request, engine: EngineDep, identity: Caller) -> Identity:
        _check(engine, request, identity, permission)
        return identity

    return Depends(check)
