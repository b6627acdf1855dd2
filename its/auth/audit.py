"""The audit log: who did what, to what, with which outcome, from where.

Written in the same transaction as the change it records (an acknowledgement and its audit entry
commit together), except for failures, which are recorded in a transaction of their own because
the refused action rolls back. Entries are never updated or deleted by the platform.

Actions (``action`` column): ``signin``, ``signin.link``, ``signout``, ``key.use``,
``key.create``, ``key.revoke``, ``user.add``, ``user.disable``, ``user.enable``,
``user.passwd``, ``user.role``, ``alert.ack``, ``access.denied``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import and_, func, insert, select
from sqlalchemy.engine import Connection

from its.contract import iso
from its.db import schema

Outcome = Literal["ok", "failed", "denied"]
MAX_LIMIT = 1000


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str | None
    action: str
    target: str | None
    outcome: str
    detail: dict[str, Any] | None
    client: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
            "client": self.client,
        }


def _clip(value: str | None, n: int) -> str | None:
    """Audit what was sent, cut to the column (a 10 kB username must not fail the entry)."""
    if value is None:
        return None
    value = value.replace("\x00", "\\0")
    return value if len(value) <= n else value[: n - 1] + "…"


def record(
    conn: Connection,
    action: str,
    *,
    actor: str | None,
    target: str | None = None,
    outcome: Outcome = "ok",
    detail: dict[str, Any] | None = None,
    client: str | None = None,
    at: datetime | None = None,
) -> None:
    conn.execute(
        insert(schema.audit_log).values(
            at=at or datetime.now(UTC),
            actor=_clip(actor, 128),
            action=action,
            target=_clip(target, 200),
            outcome=outcome,
            detail=detail,
            client=_clip(client, 64),
        )
    )


def query(
    conn: Connection,
    *,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries newest first, filtered by time, actor and action (a prefix such as ``key.``
    matches every key action)."""
    t = schema.audit_log
    cond = []
    if since is not None:
        cond.append(t.c.at >= since)
    if actor:
        cond.append(t.c.actor == actor)
    if action:
        prefix = action.endswith(".")
        cond.append(
            t.c.action.startswith(action, autoescape=True) if prefix else t.c.action == action
        )
    stmt = select(t).where(and_(True, *cond)).order_by(t.c.at.desc(), t.c.id.desc())
    rows = conn.execute(stmt.limit(max(1, min(limit, MAX_LIMIT)))).all()
    return [AuditEntry(**r._mapping) for r in rows]


def count_failures(conn: Connection, action: str, target: str, since: datetime) -> int:
    """Failed attempts of ``action`` on ``target`` since a time (the sign-in throttle)."""
    t = schema.audit_log
    target = _clip(target, 200)
    return conn.execute(
        select(func.count())
        .select_from(t)
        .where(t.c.action == action, t.c.target == target, t.c.outcome == "failed", t.c.at >= since)
    ).scalar_one()
