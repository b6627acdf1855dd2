"""The ingest message loop, fed directly (no broker), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ingest.pipeline import Message, Pipeline
from its.config import Settings
from its.db import schema
from tests.ingest_helpers import dumps, obs

P = "its/v1"


def _count(engine: Engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _reasons(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(schema.dead_letters.c.reason).order_by(schema.dead_letters.c.id))
            .scalars()
            .all()
        )


def _pipeline(engine: Engine, **kw) -> Pipeline:
    return Pipeline(engine, Settings(_env_file=None, topic_prefix=P, **kw))


def test_readings_land_once_and_nulls_stay_null(engine: Engine) -> None:
    msgs = [Message(f"{P}/stations/JKT-SDR-N-001/obs", dumps(obs(i=i))) for i in range(10)]
    stats = _pipeline(engine).run(msgs + msgs[:5])  # five resent duplicates
    assert stats.readings_inserted == 40 and stats.duplicates == 20
    assert _count(engine, schema.readings) == 40
    with engine.connect() as conn:
        lane2 = conn.execute(
            select(schema.readings.c.speed_kph).where(schema.readings.c.lane == 2)
        ).scalars()
        assert set(lane2) == {None}


def test_every_bad_message_is_dead_lettered_with_its_reason(engine: Engine) -> None:
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    bad = [
        (f"{P}/stations/JKT-SDR-N-001/obs", b"{oops", "invalid JSON"),
        (f"{P}/stations/JKT-SDR-N-001/obs", dumps(obs(period_s="30")), "period_s"),
        (
            f"{P}/stations/JKT-SDR-N-001/obs",
            dumps(obs(lanes=[{"lane": 1, "occupancy": 1.5}])),
            "occupancy",
        ),
        (f"{P}/stations/NOPE-1/obs", dumps(obs("NOPE-1")), "unknown station"),
        (f"{P}/stations/JKT-SDR-N-002/obs", dumps(obs()), "does not match"),
        (f"{P}/stations/JKT-SDR-N-001/obs", dumps(obs(n_lanes=6)), "has 4 lanes"),
        (f"{P}/stations/JKT-SDR-N-001/obs", dumps(obs(interval_start=future)), "future"),
        (f"{P}/stations/JKT-SDR-N-001/obs", b"\xff\xfe\x00", "invalid JSON"),
        (f"{P}/somewhere/else", dumps(obs()), "not part of"),
    ]
    good = Message(f"{P}/stations/JKT-SDR-N-001/obs", dumps(obs(i=1)))
    stats = _pipeline(engine).run([Message(t, p) for t, p, _ in bad] + [good])
    reasons = _reasons(engine)
    assert len(reasons) == len(bad) == stats.dead_letters
    for (_, _, expected), reason in zip(bad, reasons, strict=True):
        assert expected in reason
    assert _count(engine, schema.readings) == 4  # ingest went on


def test_gateway_array_keeps_good_entries(engine: Engine) -> None:
    batch = [obs(i=0), obs("JKT-GTS-E-001", i=0, n_lanes=3), obs(lanes=[{"lane": 1, "count": -3}])]
    stats = _pipeline(engine).run([Message(f"{P}/gateways/gw-7/obs", dumps(batch))])
    assert stats.readings_inserted == 7
    assert _reasons(engine) == [
        "1 of 3 gateway items rejected (payload: those items): "
        "[2] lanes.0.count: Input should be greater than or equal to 0"
    ]
    with engine.connect() as conn:
        kept = conn.execute(select(schema.dead_letters.c.payload)).scalar_one()
    assert orjson.loads(kept) == [batch[2]]  # just the bad item, not the whole array again


def test_station_state_is_recorded(engine: Engine) -> None:
    topic = f"{P}/stations/JKT-SDR-N-001/state"
    _pipeline(engine).run(
        [Message(topic, b'{"state": "online"}'), Message(topic, b'{"state": "offline"}')]
    )
    with engine.connect() as conn:
        assert conn.execute(select(schema.station_status.c.state)).scalar_one() == "offline"


def test_acks_only_after_commit_and_batches_bounded(engine: Engine) -> None:
    acked: list[int] = []
    seen_rows_at_ack: list[int] = []

    def ack(i: int):
        def _ack() -> None:
            acked.append(i)
            seen_rows_at_ack.append(_count(engine, schema.readings))

        return _ack

    msgs = [Message(f"{P}/stations/JKT-SDR-N-001/obs", dumps(obs(i=i)), ack(i)) for i in range(10)]
    stats = _pipeline(engine, ingest_batch_size=8).run(msgs)
    assert acked == list(range(10))
    assert stats.batches == 5  # 4 rows a message: a batch of 8 rows is two messages
    # each ack happened after its rows were committed and visible to another connection
    assert all(seen >= 4 * (i + 1) for i, seen in enumerate(seen_rows_at_ack))


def test_write_errors_are_retried_not_acked(engine: Engine) -> None:
    pipeline = _pipeline(engine)
    pipeline._retry_delays = (0.0,)
    calls = {"n": 0}
    real = pipeline._write

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] < 3:
            from sqlalchemy.exc import OperationalError

            raise OperationalError("INSERT", {}, Exception("database is restarting"))
        return real(batch)

    pipeline._write = flaky
    acked: list[bool] = []
    msg = Message(f"{P}/stations/JKT-SDR-N-001/obs", dumps(obs()), lambda: acked.append(True))
    stats = pipeline.run([msg])
    assert calls["n"] == 3 and stats.write_errors == 2
    assert acked == [True] and _count(engine, schema.readings) == 4


def test_an_idle_source_gets_its_batch_written_and_acked_at_once(engine: Engine) -> None:
    """``None`` (nothing arrived for a tick) writes the batch without waiting for its time, so a
    broker that holds back messages until the previous ones are acked is not left waiting."""
    acked: list[int] = []
    seen: list[tuple[int, int]] = []

    def source(first: int):  # noqa: ANN202 - three messages, then an idle tick
        for i in range(first, first + 3):
            topic = f"{P}/stations/JKT-SDR-N-001/obs"
            yield Message(topic, dumps(obs(i=i)), ack=lambda i=i: acked.append(i))
        yield None
        seen.append((_count(engine, schema.readings), len(acked)))

    _pipeline(engine, ingest_batch_seconds=60).run(source(0))
    assert seen == [(12, 3)]  # written and acked before the source was asked again

    seen.clear()
    _pipeline(engine, ingest_batch_seconds=60, ingest_idle_flush_s=0).run(source(10))
    assert seen == [(12, 3)]  # idle flushing off: nothing new written or acked until the end
    assert _count(engine, schema.readings) == 24 and acked == [0, 1, 2, 10, 11, 12]
