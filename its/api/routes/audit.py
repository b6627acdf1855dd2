"""``GET /api/v1/audit`` (admin) and ``GET /api/v1/me``: the audit log and who is asking."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from its.api.deps import ConnDep
from its.api.params import as_utc
from its.api.schemas import AuditEntryOut, IdentityOut
from its.api.security import Caller, require
from its.auth import audit
from its.auth.roles import Permission
from its.errors import QueryError

router = APIRouter(tags=["security"])


@router.get(
    "/audit",
    response_model=list[AuditEntryOut],
    dependencies=[require(Permission.admin)],
    summary="Audit log, newest first (admin)",
)
def audit_log(
    conn: ConnDep,
    since: Annotated[
        datetime | None, Query(description="ISO 8601 time; only entries at or after it")
    ] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[
        str | None,
        Query(max_length=64, description="exact action, or a prefix ending in '.' (key.)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIMIT)] = 100,
) -> list[dict]:
    if "\x00" in (actor or "") + (action or ""):
        raise QueryError("actor and action cannot contain a NUL character")
    try:
        start = as_utc(since) if since else None
    except OverflowError:
        raise QueryError("since is outside the calendar this API supports") from None
    rows = audit.query(conn, since=start, actor=actor, action=action, limit=limit)
    return [r.to_dict() for r in rows]


@router.get("/me", response_model=IdentityOut, summary="Who the API takes the caller for")
def me(caller: Caller) -> dict:
    return {
        "actor": caller.actor,
        "via": caller.via,
        "role": caller.role,
        "display_name": caller.display_name,
        "permissions": sorted(p.value for p in caller.permissions),
    }
