"""Attach the operator dashboard to the web process's FastAPI app, served at ``/``.

Dash 4 accepts a FastAPI server: it adds its routes (``/``, ``/_dash-*``, ``/assets``) to that app
and a middleware that only handles those paths, so the API under ``/api/v1``, ``/docs``,
``/openapi.json`` and ``/healthz`` is untouched. One thing is switched off on purpose: Dash's
catch-all ``GET /{path}`` route (added at startup, meant for multi-page apps). This dashboard is a
single page, and the catch-all would answer a mistyped API URL such as ``/api/v1/segmnts`` with
the dashboard's HTML and status 200 instead of a JSON 404.

The page is for signed-in people only: :class:`its.api.pages.SessionGate` (added by ``its web``)
keeps ``/`` and ``/_dash-*`` behind a session and hands the callbacks the person's identity
(dashboard/session.py); the layout is a function so it can greet that person.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dash import Dash
from sqlalchemy.engine import Engine

from dashboard import callbacks, layout, session, views
from dashboard.guard import CallbackGuard
from its.config import Settings
from its.network import Network

if TYPE_CHECKING:
    from fastapi import FastAPI

ASSETS = Path(__file__).with_name("assets")


def create_dash(server: FastAPI, *, settings: Settings, engine: Engine, network: Network) -> Dash:
    """Build the dashboard on ``server`` (routes at ``/``) reading through the service layer."""
    d = views.Dashboard(settings=settings, engine=engine, network=network)
    title = f"ITS operator — {network.name}"
    app = Dash(
        "dashboard",
        server=server,
        title=title,
        update_title=None,
        assets_folder=str(ASSETS),
        serve_locally=True,
        suppress_callback_exceptions=True,
    )
    app.backend._setup_catchall = _no_catchall  # type: ignore[method-assign]  # see module doc

    def page() -> object:
        """The page for the person asking (``Signed in as ...``, the sign-out form's token)."""
        who = session.current_identity(app)
        user = layout.user_box(
            who.display_name if who else None, who.role if who else None, session.csrf_token(app)
        )
        return layout.build_layout(title=title, refresh_seconds=settings.refresh_seconds, user=user)

    app.layout = page
    callbacks.register_callbacks(app, d)
    # added after Dash's own middleware, so it runs first: a malformed callback is a 400
    server.add_middleware(CallbackGuard, callback_map=app.callback_map)
    return app


def _no_catchall() -> None:
    """Replaces Dash's startup hook that would add ``GET /{path:path}`` (see the module doc)."""
