"""The API's app factory: ``create_app(settings)`` builds a FastAPI app with ``/api/v1``,
OpenAPI at ``/docs`` and ``/healthz``. The web process (``its web``) adds the Dash dashboard at
``/`` to the same app.

Nothing connects or reads the environment at import time; the engine and the road network are
made here (or passed in by tests and ``its up``) and kept on ``app.state``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from its.api import metrics
from its.api.health import router as health_router
from its.api.pages import router as pages_router
from its.api.routes import api_router
from its.auth.passwords import Passwords
from its.config import Settings, get_settings
from its.errors import ConflictError, NotFoundError, QueryError
from its.network import Network

DESCRIPTION = """
Traffic aggregates for analysts: live segment state as GeoJSON, detector stations and their time
series, flow / speed / occupancy aggregates per station, segment or corridor, and alerts.

Definitions (PeMS conventions, metric units): flow in vehicles per hour; speed the flow-weighted
harmonic mean of lane speeds, single loops estimated from occupancy with a 6.7 m effective vehicle
length; occupancy a fraction 0..1; `pct_observed` the share of expected lane intervals that
arrived. Times are UTC (ISO 8601); a time without a zone is read as UTC.

Authentication: programs send an API key, `X-API-Key: <key_id>.<secret>` (made with
`its keys create`, scope `read` or `operate`); the dashboard's session cookie works too, with the
`X-CSRFToken` header on writes. 401: no usable identity; 403: the identity may not do this.
"""

_STATUS = {NotFoundError: 404, ConflictError: 409, QueryError: 400}


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    network: Network | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The API app; pass ``engine``/``network`` to share them (``its up``, tests), and
    ``metrics_registry`` to serve other components' metrics at its ``/metrics`` too."""
    from its.db.engine import make_engine
    from its.network import load_network

    settings = settings or get_settings()
    app = FastAPI(
        title="ITS monitoring API",
        version="1.0",
        description=DESCRIPTION,
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.resolved_database_url)
    app.state.network = network or load_network(settings.network_file)
    app.state.passwords = Passwords.from_settings(settings)

    for exc_type, status in _STATUS.items():
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(health_router)
    app.include_router(pages_router)
    app.include_router(api_router)
    metrics.install(app, metrics_registry)
    return app


class ErrorResponse(JSONResponse):
    """An error answer written as ASCII JSON: an error may quote what the client sent, and a
    lone surrogate (valid in a JSON string escape, not encodable as UTF-8) must not turn the
    422 that rejects it into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 (``loc`` names the parameter), rendered by :class:`ErrorResponse`."""
    return ErrorResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
    """A JSON 500 that gives nothing away (no traceback, no SQL). This is not a fix for anything:
    Starlette still re-raises the error after sending this answer, so the server logs it with
    its traceback and the test suite, which counts every such error as a 5xx, fails on it."""
    return ErrorResponse({"detail": "internal server error"}, status_code=500)


def _handler(status: int):  # noqa: ANN202 - a Starlette exception handler
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return ErrorResponse({"detail": str(exc)}, status_code=status)

    return handle
