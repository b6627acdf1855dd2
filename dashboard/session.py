"""The signed-in person behind the current Dash request.

:class:`its.api.pages.SessionGate` resolves the session before Dash sees a request and puts the
:class:`~its.auth.identity.Identity` in the request's state; here a callback (or the layout
function) reads it back through Dash's own request object for the FastAPI backend
(``app.backend.request_adapter()``), so no cookie parsing or database lookup happens twice.
"""

from __future__ import annotations

from dash import Dash

from its.api.pages import IDENTITY_STATE
from its.api.security import CSRF_COOKIE
from its.auth.identity import Identity


def current_identity(app: Dash) -> Identity | None:
    """The request's identity; None outside a request (e.g. Dash validating the layout)."""
    try:
        state = app.backend.request_adapter().context
    except RuntimeError:
        return None
    return getattr(state, IDENTITY_STATE, None)


def csrf_token(app: Dash) -> str:
    """The session's CSRF token (its cookie), for the sign-out form's hidden field."""
    try:
        return app.backend.request_adapter().cookies.get(CSRF_COOKIE, "")
    except RuntimeError:
        return ""
