"""``GET /api/v1/alerts`` and ``POST /api/v1/alerts/{id}/ack``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from its.alerts import store
from its.api.deps import ConnDep, TxDep
from its.api.params import AlertId
from its.api.schemas import AckRequest, AlertOut, ErrorOut
from its.api.security import Caller, client_address
from its.auth import audit

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("", response_model=list[AlertOut], summary="Alerts, newest first")
def list_alerts(
    conn: ConnDep,
    state: Literal["active", "cleared", "unacknowledged", "all"] = "active",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    return [a.to_dict() for a in store.list_alerts(conn, state=state, limit=limit)]


@router.get("/{alert_id}", response_model=AlertOut, responses={404: {"model": ErrorOut}})
def get_alert(conn: ConnDep, alert_id: AlertId) -> dict:
    return store.get_alert(conn, alert_id).to_dict()


@router.post(
    "/{alert_id}/ack",
    response_model=AlertOut,
    responses={
        400: {"model": ErrorOut, "description": "A body that is not UTF-8 JSON"},
        404: {"model": ErrorOut},
        409: {"model": ErrorOut},
        413: {"model": ErrorOut, "description": "A body over ITS_HTTP_MAX_BODY_BYTES"},
    },
    summary="Acknowledge an alert as the caller (who, when, comment)",
)
def acknowledge(
    tx: TxDep, caller: Caller, request: Request, alert_id: AlertId, body: AckRequest
) -> dict:
    """Records the caller (the signed-in user, or the API key's owner, else ``key:<name>``), the
    time and the comment, an entry in the alert's history and one in the audit log. Needs the
    ``operate`` permission. Acknowledging an acknowledged alert is a 409 naming who did it first."""
    rec = store.acknowledge(tx, alert_id, operator=caller.actor, comment=body.comment)
    audit.record(
        tx,
        "alert.ack",
        actor=caller.actor,
        target=f"alert:{alert_id}",
        detail={**caller.audit_detail, "comment": rec.ack_comment},
        client=client_address(request),
    )
    return rec.to_dict()
