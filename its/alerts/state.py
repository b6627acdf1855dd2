"""The rules' persisted memory (``rule_state``): windows, streaks and the evaluator's progress.

It lives in the database, written in the same transaction as the alert changes it explains, so
a restarted (or newly elected) evaluator resumes exactly where the last one committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from its.db import schema

PROGRESS_RULE = "_evaluator"
PROGRESS_TARGET = "progress"


def load(conn: Connection, rule: str) -> dict[str, dict[str, Any]]:
    """Every target's state of one rule."""
    t = schema.rule_state
    return {r.target_id: dict(r.state) for r in conn.execute(select(t).where(t.c.rule == rule))}


def save(conn: Connection, rule: str, target_id: str, state: dict[str, Any], at: datetime) -> None:
    """Insert or replace one target's state."""
    t = schema.rule_state
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(t).values(rule=rule, target_id=target_id, state=state, updated_at=at)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["rule", "target_id"], set_={"state": state, "updated_at": at}
        )
    )


def forget(conn: Connection, rule: str, target_id: str) -> None:
    t = schema.rule_state
    conn.execute(delete(t).where(t.c.rule == rule, t.c.target_id == target_id))


def load_progress(conn: Connection) -> datetime | None:
    """End of the last 5-min bucket the evaluator has evaluated, or None on a fresh database."""
    t = schema.rule_state
    row = conn.execute(
        select(t.c.state).where(t.c.rule == PROGRESS_RULE, t.c.target_id == PROGRESS_TARGET)
    ).first()
    if row is None or "evaluated_until" not in row.state:
        return None
    return datetime.fromisoformat(row.state["evaluated_until"])


def save_progress(conn: Connection, evaluated_until: datetime, at: datetime) -> None:
    save(
        conn,
        PROGRESS_RULE,
        PROGRESS_TARGET,
        {"evaluated_until": evaluated_until.isoformat()},
        at,
    )
