"""One router per resource, gathered in :data:`api_router`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from its.api.routes import (
    aggregates,
    alerts,
    audit,
    bottlenecks,
    detectors,
    export,
    measures,
    network,
    stations,
)
from its.api.schemas import ErrorOut
from its.api.security import authorize

# Every route under /api/v1 runs `authorize` (docs/security.md): reads need `read`, other methods
# `operate`; a route needing more adds `require(...)`.
api_router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(authorize)],
    responses={
        401: {
            "model": ErrorOut,
            "description": "No identity, or an unknown, expired or revoked one",
        },
        403: {
            "model": ErrorOut,
            "description": "The identity lacks the role or key scope, or CSRF",
        },
    },
)
for module in (
    network,
    stations,
    aggregates,
    measures,
    export,
    alerts,
    bottlenecks,
    detectors,
    audit,
):
    api_router.include_router(module.router)
