"""The web process's Prometheus metrics: request latency per route, and ``GET /metrics``.

Latency is labelled with the route's template (``/api/v1/stations/{station_id}``), never the
path a client sent: a scanner requesting a million odd paths adds one series (``other``), not a
million. ``/metrics`` itself is not timed.

Who may read ``/metrics``: it tells an attacker what runs, how busy it is and which sensors are
failing, so by default it needs an API key (any scope, ``its keys create --name prometheus``),
as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (Prometheus's ``authorization``
setting, which can read the key from a file). No exemption for loopback: behind a reverse proxy
every request comes from loopback. ``ITS_METRICS_PUBLIC=true`` serves it to anyone, for a web
port that only a monitoring network can reach. See docs/observability.md.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from its.api.deps import EngineDep, SettingsDep
from its.api.security import API_KEY_HEADER, UNAUTHORIZED_HEADERS, client_address
from its.auth import keys
from its.errors import AuthenticationError

METRICS_PATH = "/metrics"
UNMATCHED = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

router = APIRouter(tags=["health"])


class WebMetrics:
    """The web process's request metrics, on the app's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "its_http_request_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.responses = Counter(
            "its_http_responses",
            "HTTP responses by method, route template and status class (2xx, 4xx, 5xx...).",
            ["method", "route", "status"],
            registry=registry,
        )


class RequestMetricsMiddleware:
    """Times each HTTP request and counts its status class, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            self.metrics.responses.labels(method, route, f"{status // 100}xx").inc()


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The full template of the route that answered (``/api/v1/alerts/{alert_id}``), or
    ``other``. Routing leaves the matched route in ``scope["route"]``; in a router included
    with a prefix that route's own template lacks the prefix, so the prefix is taken from the
    path: what precedes the route's own part once its parameters are filled in."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not template:
        return UNMATCHED
    path: str = scope["path"]
    try:
        convertors = route.param_convertors
        own = template.format(
            **{k: convertors[k].to_string(v) for k, v in scope.get("path_params", {}).items()}
        )
    except (AttributeError, KeyError, ValueError, IndexError, AssertionError):
        return template
    return path[: len(path) - len(own)] + template if path.endswith(own) else template


def install(app: FastAPI, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Give ``app`` a metrics registry (``registry``, or a new one), request metrics and
    ``GET /metrics``; returns the registry, for ``its up`` to add ingest's and alerts'."""
    registry = registry or CollectorRegistry()
    app.state.metrics_registry = registry
    app.add_middleware(RequestMetricsMiddleware, metrics=WebMetrics(registry))
    app.include_router(router)
    return registry


def _presented_key(request: Request) -> str | None:
    key = request.headers.get(API_KEY_HEADER)
    if key:
        return key
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


@router.get(METRICS_PATH, include_in_schema=False)
def metrics(request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    """Prometheus text format: an API key needed unless ITS_METRICS_PUBLIC is true."""
    if not settings.metrics_public:
        presented = _presented_key(request)
        if presented is None:
            raise HTTPException(
                401,
                detail=f"/metrics needs an API key: send {API_KEY_HEADER}: <key> or "
                "Authorization: Bearer <key> (or set ITS_METRICS_PUBLIC=true)",
                headers=UNAUTHORIZED_HEADERS,
            )
        try:
            with engine.begin() as conn:
                keys.authenticate_key(conn, presented, client=client_address(request))
        except AuthenticationError as exc:
            raise HTTPException(401, detail=str(exc), headers=UNAUTHORIZED_HEADERS) from None
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
