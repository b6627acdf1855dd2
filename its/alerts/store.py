"""Alerts in the database: the lifecycle the evaluator drives and the views operators use.

An alert has two independent axes: active/cleared (the evaluator decides) and
unacknowledged/acknowledged (an operator decides). There is at most one ACTIVE alert per
(rule, target) — a partial unique index enforces it — so a condition that persists updates
``last_seen`` and ``count`` of its row instead of flooding the list; once cleared the row is
history and a new episode gets a new row. Every change writes an ``alert_events`` row (audit).

Functions take a Connection and never commit: callers wrap them in ``engine.begin()`` so an
alert change commits together with the rule state that caused it (the evaluator) or on its own
(the API's acknowledge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection, Row

from its.contract import iso
from its.db import schema
from its.errors import ConflictError, NotFoundError, QueryError

SEVERITIES = ("critical", "major", "minor", "warning", "info")
TARGET_KINDS = (
    "segment",
    "station",
    "feed",
    "gateway",
)  # feed: feed-stalled; gateway: its stations
STATES = ("active", "cleared", "unacknowledged", "all")
MAX_LIMIT = 1000

State = Literal["active", "cleared", "unacknowledged", "all"]
Event = Literal["raised", "repeated", "severity", "cleared", "acknowledged"]


@dataclass(frozen=True)
class AlertRecord:
    """One alert episode as stored; ``to_dict`` is its JSON form (API, MQTT, dashboard)."""

    id: int
    rule: str
    target_kind: str
    target_id: str
    severity: str
    active: bool
    message: str
    raised_at: datetime
    last_seen: datetime
    cleared_at: datetime | None
    count: int
    acked_at: datetime | None
    acked_by: str | None
    ack_comment: str | None
    details: dict[str, Any] = field(default_factory=dict)
    assignee: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.acked_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "target_kind": self.target_kind,
            "target_id": self.target_id,
            "severity": self.severity,
            "active": self.active,
            "message": self.message,
            "raised_at": iso(self.raised_at),
            "last_seen": iso(self.last_seen),
            "cleared_at": iso(self.cleared_at),
            "count": self.count,
            "acked_at": iso(self.acked_at),
            "acked_by": self.acked_by,
            "ack_comment": self.ack_comment,
            "assignee": self.assignee,
            "details": self.details,
        }


@dataclass(frozen=True)
class Change:
    """What a lifecycle call did: the alert after the change and the event it recorded."""

    alert: AlertRecord
    event: Event


def _record(row: Row[Any]) -> AlertRecord:
    m = row._mapping
    return AlertRecord(
        id=m["id"],
        rule=m["rule"],
        target_kind=m["target_kind"],
        target_id=m["target_id"],
        severity=m["severity"],
        active=bool(m["active"]),
        message=m["message"],
        raised_at=m["raised_at"],
        last_seen=m["last_seen"],
        cleared_at=m["cleared_at"],
        count=m["count"],
        acked_at=m["acked_at"],
        acked_by=m["acked_by"],
        ack_comment=m["ack_comment"],
        details=dict(m["details"] or {}),
        assignee=m["assignee"],
    )


def _event(
    conn: Connection,
    alert_id: int,
    event: Event,
    at: datetime,
    *,
    actor: str | None = None,
    comment: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        insert(schema.alert_events).values(
            alert_id=alert_id, at=at, event=event, actor=actor, comment=comment, details=details
        )
    )


# --------------------------------------------------------------------------- views


def list_alerts(
    conn: Connection, *, state: State = "active", limit: int = 100
) -> list[AlertRecord]:
    """Alerts newest first: ``active``, ``cleared``, ``unacknowledged`` (active or not) or ``all``."""
    if state not in STATES:
        raise QueryError(f"unknown alert state {state!r}; use one of {', '.join(STATES)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    a = schema.alerts
    stmt = select(a).order_by(a.c.raised_at.desc(), a.c.id.desc()).limit(limit)
    if state == "active":
        stmt = stmt.where(a.c.active.is_(True))
    elif state == "cleared":
        stmt = stmt.where(a.c.active.is_(False))
    elif state == "unacknowledged":
        stmt = stmt.where(a.c.acked_at.is_(None))
    return [_record(r) for r in conn.execute(stmt)]


def get_alert(conn: Connection, alert_id: int) -> AlertRecord:
    row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFoundError(f"alert {alert_id} does not exist")
    return _record(row)


def alert_history(conn: Connection, alert_id: int) -> list[dict[str, Any]]:
    """The audit trail of one alert, oldest first (NotFoundError for an unknown id)."""
    get_alert(conn, alert_id)
    e = schema.alert_events
    rows = conn.execute(select(e).where(e.c.alert_id == alert_id).order_by(e.c.id))
    return [
        {
            "at": iso(r.at),
            "event": r.event,
            "actor": r.actor,
            "comment": r.comment,
            "details": r.details,
        }
        for r in rows
    ]


def active_alerts(conn: Connection, rule: str | None = None) -> dict[tuple[str, str], AlertRecord]:
    """Active alerts keyed by (rule, target_id): what the evaluator reconciles against."""
    a = schema.alerts
    stmt = select(a).where(a.c.active.is_(True))
    if rule is not None:
        stmt = stmt.where(a.c.rule == rule)
    return {(r.rule, r.target_id): _record(r) for r in conn.execute(stmt)}


# --------------------------------------------------------------------------- operator actions


def acknowledge(
    conn: Connection,
    alert_id: int,
    *,
    operator: str,
    comment: str | None = None,
    now: datetime | None = None,
) -> AlertRecord:
    """Record who acknowledged an alert, when, and why; an alert is acknowledged once.

    The guarded UPDATE (``acked_at IS NULL``) makes two operators clicking at once safe: the second
    gets :class:`ConflictError`. Acknowledging does not clear: the condition decides that.
    """
    operator = (operator or "").strip()
    if not operator:
        raise QueryError("acknowledging needs the operator's name")
    if len(operator) > 128:
        raise QueryError("operator name longer than 128 characters")
    comment = (comment.strip() or None) if comment else None
    at = now or datetime.now(UTC)
    a = schema.alerts
    done = conn.execute(
        update(a)
        .where(and_(a.c.id == alert_id, a.c.acked_at.is_(None)))
        .values(acked_at=at, acked_by=operator, ack_comment=comment)
        .execution_options(preserve_rowcount=True)
    )
    if done.rowcount != 1:
        current = get_alert(conn, alert_id)  # NotFoundError when missing
        raise ConflictError(
            f"alert {alert_id} was already acknowledged by {current.acked_by} "
            f"at {iso(current.acked_at)}"
        )
    _event(conn, alert_id, "acknowledged", at, actor=operator, comment=comment)
    return get_alert(conn, alert_id)


# --------------------------------------------------------------------------- evaluator lifecycle


def _active_row(conn: Connection, rule: str, target_id: str) -> Row[Any] | None:
    a = schema.alerts
    return conn.execute(
        select(a).where(a.c.rule == rule, a.c.target_id == target_id, a.c.active.is_(True))
    ).first()


def raise_or_repeat(
    conn: Connection,
    rule: str,
    target: str,
    severity: str,
    message: str,
    details: dict[str, Any],
    at: datetime,
    *,
    target_kind: str = "segment",
    keep: Sequence[str] = (),
) -> Change:
    """Raise a new alert, or update the active one of (rule, target): never a second active row.

    A repeat bumps ``count`` and ``last_seen`` and takes the newest message and details; a change
    of severity is recorded as its own ``severity`` event so escalations are audited. ``keep``
    names detail keys that a repeat carries over from the active row when ``details`` lacks them
    (evidence added later by :func:`annotate`, such as what the alert suppressed).
    """
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; use one of {SEVERITIES}")
    if target_kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind {target_kind!r}; use one of {TARGET_KINDS}")
    a = schema.alerts
    row = _active_row(conn, rule, target)
    if row is None:
        alert_id = conn.execute(
            insert(a)
            .values(
                rule=rule,
                target_kind=target_kind,
                target_id=target,
                severity=severity,
                active=True,
                message=message,
                details=details,
                raised_at=at,
                last_seen=at,
                count=1,
            )
            .returning(a.c.id)
        ).scalar_one()
        _event(conn, alert_id, "raised", at, details={"severity": severity, **details})
        return Change(get_alert(conn, alert_id), "raised")
    event: Event = "repeated" if row.severity == severity else "severity"
    carried = {k: row.details[k] for k in keep if k in row.details and k not in details}
    details = {**details, **carried}
    conn.execute(
        update(a)
        .where(a.c.id == row.id)
        .values(
            severity=severity,
            message=message,
            details=details,
            last_seen=max(at, row.last_seen),
            count=a.c.count + 1,
        )
    )
    extra = {"from": row.severity, "to": severity} if event == "severity" else {}
    _event(conn, row.id, event, at, details={**extra, **details})
    return Change(get_alert(conn, row.id), event)


def clear(
    conn: Connection, rule: str, target: str, at: datetime, details: dict[str, Any] | None = None
) -> Change | None:
    """Clear the active alert of (rule, target), if any; its acknowledgement stays in history."""
    row = _active_row(conn, rule, target)
    if row is None:
        return None
    a = schema.alerts
    conn.execute(
        update(a).where(a.c.id == row.id).values(active=False, cleared_at=max(at, row.raised_at))
    )
    _event(conn, row.id, "cleared", at, details=details)
    return Change(get_alert(conn, row.id), "cleared")


def annotate(conn: Connection, rule: str, target: str, patch: dict[str, Any]) -> bool:
    """Merge ``patch`` into the details of the active alert of (rule, target), without an event.

    For evidence gathered after the alert's own decision (what it suppressed): not a change of
    the alert's state, so nothing is published and the count stays. False when none is active.
    """
    row = _active_row(conn, rule, target)
    if row is None:
        return False
    a = schema.alerts
    conn.execute(update(a).where(a.c.id == row.id).values(details={**row.details, **patch}))
    return True


def alerts_where(conn: Connection, *where: Any, limit: int = 100) -> list[AlertRecord]:
    """Alerts matching SQL conditions on ``schema.alerts``, newest first (for views over one
    target's history, such as a station's fault history)."""
    a = schema.alerts
    stmt = select(a).where(*where).order_by(a.c.raised_at.desc(), a.c.id.desc()).limit(limit)
    return [_record(r) for r in conn.execute(stmt)]
