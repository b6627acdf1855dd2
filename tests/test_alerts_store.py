"""The alert store on every backend: one active row per (rule, target), acknowledgement, views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from its.alerts import state as rule_state
from its.alerts import store
from its.db import schema
from its.db.migrate import downgrade, upgrade
from its.errors import ConflictError, NotFoundError, QueryError

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def events(engine: Engine, alert_id: int) -> list[str]:
    with engine.connect() as conn:
        return [e["event"] for e in store.alert_history(conn, alert_id)]


def test_raise_twice_gives_one_active_alert_with_count_2(engine: Engine) -> None:
    with engine.begin() as conn:
        first = store.raise_or_repeat(
            conn, "congestion", "SEG-1", "minor", "slow", {"ratio": 0.4}, T0
        )
        again = store.raise_or_repeat(
            conn,
            "congestion",
            "SEG-1",
            "minor",
            "slower",
            {"ratio": 0.3},
            T0 + timedelta(minutes=5),
        )
    assert first.event == "raised" and again.event == "repeated"
    with engine.connect() as conn:
        active = store.list_alerts(conn, state="active")
    assert len(active) == 1
    a = active[0]
    assert (a.id, a.count, a.rule, a.target_id, a.target_kind) == (
        first.alert.id,
        2,
        "congestion",
        "SEG-1",
        "segment",
    )
    assert a.raised_at == T0 and a.last_seen == T0 + timedelta(minutes=5)
    assert a.message == "slower" and a.details == {"ratio": 0.3}
    assert events(engine, a.id) == ["raised", "repeated"]


def test_severity_change_is_its_own_event(engine: Engine) -> None:
    with engine.begin() as conn:
        store.raise_or_repeat(conn, "congestion", "SEG-1", "minor", "slow", {}, T0)
        ch = store.raise_or_repeat(conn, "congestion", "SEG-1", "major", "jammed", {}, T0)
    assert ch.event == "severity" and ch.alert.severity == "major"
    assert events(engine, ch.alert.id) == ["raised", "severity"]


def test_the_database_refuses_a_second_active_alert(engine: Engine) -> None:
    row = {
        "rule": "congestion",
        "target_kind": "segment",
        "target_id": "SEG-1",
        "severity": "minor",
        "active": True,
        "message": "m",
        "details": {},
        "raised_at": T0,
        "last_seen": T0,
        "count": 1,
    }
    with engine.begin() as conn:
        conn.execute(insert(schema.alerts).values(**row))
        conn.execute(insert(schema.alerts).values(**{**row, "active": False}))  # history: fine
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(schema.alerts).values(**row))


def test_clear_then_raise_opens_a_new_episode(engine: Engine) -> None:
    with engine.begin() as conn:
        first = store.raise_or_repeat(conn, "congestion", "SEG-1", "minor", "m", {}, T0)
        cleared = store.clear(conn, "congestion", "SEG-1", T0 + timedelta(minutes=20))
        assert store.clear(conn, "congestion", "SEG-1", T0 + timedelta(minutes=25)) is None
        second = store.raise_or_repeat(
            conn, "congestion", "SEG-1", "minor", "m", {}, T0 + timedelta(minutes=30)
        )
    assert cleared is not None and cleared.event == "cleared"
    assert not cleared.alert.active and cleared.alert.cleared_at == T0 + timedelta(minutes=20)
    assert second.event == "raised" and second.alert.id != first.alert.id
    with engine.connect() as conn:
        assert [a.id for a in store.list_alerts(conn, state="active")] == [second.alert.id]
        assert [a.id for a in store.list_alerts(conn, state="cleared")] == [first.alert.id]


def test_acknowledge_records_who_when_comment_and_an_event(engine: Engine) -> None:
    with engine.begin() as conn:
        alert = store.raise_or_repeat(conn, "congestion", "SEG-1", "minor", "m", {}, T0).alert
    ack_time = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    with engine.begin() as conn:
        acked = store.acknowledge(
            conn, alert.id, operator="rina", comment=" police on site ", now=ack_time
        )
    assert (acked.acked_by, acked.acked_at, acked.ack_comment) == (
        "rina",
        ack_time,
        "police on site",
    )
    assert acked.active and acked.acknowledged
    with engine.connect() as conn:
        history = store.alert_history(conn, alert.id)
        fresh = store.get_alert(conn, alert.id)
    assert fresh == acked
    assert history[-1]["event"] == "acknowledged"
    assert history[-1]["actor"] == "rina" and history[-1]["comment"] == "police on site"
    assert acked.to_dict()["acked_at"] == "2026-11-22T09:30:00Z"


def test_ack_twice_conflicts_and_missing_is_not_found(engine: Engine) -> None:
    with engine.begin() as conn:
        alert = store.raise_or_repeat(conn, "congestion", "SEG-1", "minor", "m", {}, T0).alert
        store.acknowledge(conn, alert.id, operator="rina")
    with pytest.raises(ConflictError, match="already acknowledged by rina"), engine.begin() as c:
        store.acknowledge(c, alert.id, operator="budi")
    with pytest.raises(NotFoundError), engine.begin() as conn:
        store.acknowledge(conn, alert.id + 999, operator="budi")
    with pytest.raises(NotFoundError), engine.connect() as conn:
        store.get_alert(conn, alert.id + 999)
    with pytest.raises(QueryError, match="operator"), engine.begin() as conn:
        store.acknowledge(conn, alert.id, operator="  ")
    with engine.connect() as conn:
        assert store.get_alert(conn, alert.id).acked_by == "rina"
        assert [e["event"] for e in store.alert_history(conn, alert.id)] == [
            "raised",
            "acknowledged",
        ]


def test_an_acknowledged_alert_that_clears_stays_acknowledged(engine: Engine) -> None:
    with engine.begin() as conn:
        alert = store.raise_or_repeat(conn, "congestion", "SEG-1", "minor", "m", {}, T0).alert
        store.acknowledge(conn, alert.id, operator="rina", comment="seen")
        store.clear(conn, "congestion", "SEG-1", T0 + timedelta(minutes=30))
    with engine.connect() as conn:
        a = store.get_alert(conn, alert.id)
        assert not a.active and a.acked_by == "rina" and a.ack_comment == "seen"
        assert store.list_alerts(conn, state="unacknowledged") == []
        assert [x.id for x in store.list_alerts(conn, state="cleared")] == [alert.id]


def test_list_newest_first_and_by_state(engine: Engine) -> None:
    ids = []
    with engine.begin() as conn:
        for i in range(4):
            ch = store.raise_or_repeat(
                conn,
                "station-offline",
                f"ST-{i}",
                "major",
                "offline",
                {},
                T0 + timedelta(minutes=i),
                target_kind="station",
            )
            ids.append(ch.alert.id)
        store.clear(conn, "station-offline", "ST-1", T0 + timedelta(minutes=10))
        store.acknowledge(conn, ids[2], operator="rina")
    with engine.connect() as conn:
        assert [a.id for a in store.list_alerts(conn, state="all")] == ids[::-1]
        assert [a.id for a in store.list_alerts(conn)] == [ids[3], ids[2], ids[0]]
        assert [a.id for a in store.list_alerts(conn, state="cleared")] == [ids[1]]
        assert [a.id for a in store.list_alerts(conn, state="unacknowledged")] == [
            ids[3],
            ids[1],
            ids[0],
        ]
        assert [a.id for a in store.list_alerts(conn, state="all", limit=2)] == [ids[3], ids[2]]
        with pytest.raises(QueryError, match="unknown alert state"):
            store.list_alerts(conn, state="open")  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="limit"):
            store.list_alerts(conn, limit=0)


def test_bad_severity_or_kind_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="severity"), engine.begin() as conn:
        store.raise_or_repeat(conn, "congestion", "SEG-1", "urgent", "m", {}, T0)
    with pytest.raises(ValueError, match="target kind"), engine.begin() as conn:
        store.raise_or_repeat(conn, "congestion", "SEG-1", "minor", "m", {}, T0, target_kind="x")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.alerts)).scalar() == 0


def test_rule_state_and_progress_persist(engine: Engine) -> None:
    with engine.begin() as conn:
        assert rule_state.load_progress(conn) is None
        rule_state.save(conn, "congestion", "SEG-1", {"window": ["bad"]}, T0)
        rule_state.save(conn, "congestion", "SEG-1", {"window": ["bad", "bad"]}, T0)
        rule_state.save_progress(conn, T0 + timedelta(minutes=5), T0)
    with engine.connect() as conn:
        assert rule_state.load(conn, "congestion") == {"SEG-1": {"window": ["bad", "bad"]}}
        assert rule_state.load_progress(conn) == T0 + timedelta(minutes=5)


def test_migration_0002_downgrades_and_upgrades(sqlite_engine: Engine) -> None:
    downgrade(sqlite_engine, "0001")
    names = set(inspect(sqlite_engine).get_table_names())
    assert "alerts" not in names and "readings" in names
    upgrade(sqlite_engine)
    with sqlite_engine.begin() as conn:
        assert store.list_alerts(conn, state="all") == []
