"""Regression tests, one per way a sender (or the store) once stopped ingest or bloated it.

Fed directly to the pipeline (no broker) on the real databases; the MQTT paths are in
tests/test_ingest_fuzz.py and tests/test_ingest_workers.py.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from paho.mqtt.client import MQTTMessage
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from ingest.directory import StationDirectory
from ingest.pipeline import Message, Pipeline
from its.config import Settings
from its.db import schema
from tests.ingest_helpers import dumps, obs

P = "its/v1"
OBS = f"{P}/stations/JKT-SDR-N-001/obs"
EDGES = ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-05:00"]


def _count(engine: Engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _dead(engine: Engine) -> list[tuple[str, str, str, str]]:
    t = schema.dead_letters
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.topic, t.c.payload, t.c.payload_encoding, t.c.reason).order_by(t.c.id)
        )
        return [tuple(r) for r in rows]


def _pipeline(engine: Engine, **kw) -> Pipeline:
    return Pipeline(
        engine, Settings(_env_file=None, topic_prefix=P, **kw), retry_delays=(0.0, 0.01)
    )


def _run_giving_up(pipeline: Pipeline, msgs: list[Message]):  # noqa: ANN202 - IngestStats
    """Run, but stop a retry loop after a few attempts, so a poison batch fails the test
    instead of hanging it."""
    return pipeline.run(msgs, stop=lambda: pipeline.stats.write_errors > 3)


@pytest.mark.parametrize("stamp", EDGES)
def test_calendar_edge_timestamps_are_dead_letters_and_ingest_goes_on(
    engine: Engine, stamp: str
) -> None:
    topic_state = f"{P}/stations/JKT-SDR-N-001/state"
    msgs = [
        Message(OBS, dumps(obs(interval_start=stamp))),
        Message(f"{P}/gateways/gw-1/obs", dumps([obs(i=1), obs(interval_start=stamp)])),
        Message(topic_state, orjson.dumps({"state": "offline", "at": stamp})),
        Message(OBS, dumps(obs(i=2))),
    ]
    stats = _run_giving_up(_pipeline(engine), msgs)
    reasons = [r for *_, r in _dead(engine)]
    assert len(reasons) == 3 and all("outside the years 1-9999" in r for r in reasons)
    assert stats.readings_inserted == 8 and stats.write_errors == 0  # the good ones behind it
    assert _count(engine, schema.station_status) == 0


def test_an_unexpected_error_in_one_message_is_an_internal_error_dead_letter(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(StationDirectory):
        """A station list with a bug for one station (what a bug in ingest would look like)."""

        def lanes(self, station_id: str) -> int | None:
            if station_id == "JKT-SDR-N-002":
                raise KeyError("a bug")
            return super().lanes(station_id)

    settings = Settings(_env_file=None, topic_prefix=P)
    pipeline = Pipeline(engine, settings, directory=Broken(engine))
    bad = Message(f"{P}/stations/JKT-SDR-N-002/obs", dumps(obs("JKT-SDR-N-002")))
    stats = pipeline.run([bad, Message(OBS, dumps(obs()))])
    ((topic, _, _, reason),) = _dead(engine)
    assert topic == bad.topic and reason == "internal error: KeyError: 'a bug'"
    assert stats.internal_errors == 1 and stats.readings_inserted == 4
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_station_list_reload_errors_are_retried_keeping_the_last_list(pg_engine: Engine) -> None:
    """Regression: a database error while the station list reloaded stopped ingest."""
    directory = StationDirectory(pg_engine, refresh_s=0.0, retry_delays=(0.0,))
    pipeline = Pipeline(pg_engine, Settings(_env_file=None, topic_prefix=P), directory=directory)
    assert directory.ensure_loaded()
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE stations RENAME TO stations_away"))
    try:
        for i in range(3):  # every lookup tries to reload and fails: the last list serves
            pipeline.handle(Message(OBS, dumps(obs(i=i))))
        pipeline.handle(Message(f"{P}/stations/NOPE-1/obs", dumps(obs("NOPE-1"))))
        assert pipeline.flush()
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text("ALTER TABLE stations_away RENAME TO stations"))
    assert _count(pg_engine, schema.readings) == 12
    assert [r for *_, r in _dead(pg_engine)] == ["unknown station 'NOPE-1'"]


def test_the_first_station_list_load_waits_for_the_store(pg_engine: Engine) -> None:
    directory = StationDirectory(pg_engine, retry_delays=(0.0,))
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE stations RENAME TO stations_away"))
    attempts: list[int] = []

    def stop() -> bool:  # called after each failed attempt: bring the table back on the third
        attempts.append(1)
        if len(attempts) == 3:
            with pg_engine.begin() as conn:
                conn.execute(text("ALTER TABLE stations_away RENAME TO stations"))
        return False

    try:
        assert directory.ensure_loaded(stop)
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text("ALTER TABLE IF EXISTS stations_away RENAME TO stations"))
    assert len(attempts) == 3 and directory.lanes("JKT-SDR-N-001") == 4


def test_a_gateway_array_of_bad_items_is_one_bounded_dead_letter(engine: Engine) -> None:
    """Regression: each bad item stored the whole array again (8,000 items: 8,000 copies)."""
    items = [obs(i=i) for i in range(5)] + [obs(i=i, status="??") for i in range(2000)]
    pipeline = _pipeline(engine, mqtt_max_payload_bytes=2**20)  # ~600 KB of array
    stats = _run_giving_up(pipeline, [Message(f"{P}/gateways/gw-9/obs", dumps(items))])
    ((_, payload, encoding, reason),) = _dead(engine)
    assert stats.readings_inserted == 20 and stats.dead_letters == 1
    assert reason.startswith("2000 of 2005 gateway items rejected (payload: those items): [5] ")
    assert "[14] status" in reason and "[15]" not in reason and "; and 1990 more" in reason
    assert len(reason) <= 2000
    # the kept payload: the bad items only, cut at the dead-letter limit
    assert encoding == "utf-8" and len(payload.encode()) <= 4096
    assert payload.startswith('[{"v":1') and "cut to its first 4,096 of" in reason


def test_state_for_an_unknown_station_is_a_dead_letter(engine: Engine) -> None:
    msgs = [
        Message(f"{P}/stations/NOPE-7/state", b'{"state": "online"}'),
        Message(f"{P}/stations/JKT-SDR-N-001/state", b'{"state": "online"}'),
    ]
    _run_giving_up(_pipeline(engine), msgs)
    assert [r for *_, r in _dead(engine)] == ["unknown station 'NOPE-7'"]
    with engine.connect() as conn:
        assert conn.execute(select(schema.station_status.c.station_id)).scalars().all() == [
            "JKT-SDR-N-001"
        ]


def test_an_oversized_payload_is_dead_lettered_with_a_truncated_copy(engine: Engine) -> None:
    big = dumps(obs(padding="x" * 300_000))
    stats = _run_giving_up(_pipeline(engine), [Message(OBS, big), Message(OBS, dumps(obs()))])
    ((_, payload, encoding, reason),) = _dead(engine)
    assert reason == (
        f"payload of {len(big):,} bytes exceeds the limit of 262,144 bytes "
        f"(ITS_MQTT_MAX_PAYLOAD_BYTES) (payload cut to its first 4,096 of {len(big):,} bytes)"
    )
    assert encoding == "utf-8" and payload.encode() == big[:4096]
    assert stats.readings_inserted == 4

    small = _pipeline(engine, mqtt_max_payload_bytes=100, dead_letter_max_bytes=10)
    _run_giving_up(small, [Message(OBS, "é".encode() * 60)])  # cut inside a character
    _, payload, encoding, reason = _dead(engine)[-1]
    assert "exceeds the limit of 100 bytes" in reason and (payload, encoding) == ("é" * 5, "utf-8")


def test_nul_bytes_huge_ids_deep_nesting_and_huge_numbers_never_fail_the_batch(
    engine: Engine,
) -> None:
    """All in one batch with good messages: a dead letter the store refused (PostgreSQL text
    cannot hold NUL) used to fail the whole batch, which was then retried for ever."""
    bad = [
        Message(f"{P}/stations/JKT\x00SDR/obs", dumps(obs())),  # NUL in the topic
        Message(OBS, b'{"v": 1, "\x00": 1}'),  # raw NUL byte: not JSON, stored as base64
        Message(OBS, dumps(obs(**{"sta\x00tus": "ok"}))),  # NUL in a key, quoted in the reason
        Message(OBS, dumps(obs(status="ok\x00"))),
        Message(OBS, dumps(obs(station_id="A" * 100_000))),
        Message(f"{P}/stations/{'B' * 60_000}/obs", dumps(obs())),
        Message(OBS, b"[" * 5000 + b"]" * 5000),
        Message(OBS, dumps(obs(period_s=2**64 - 1))),
        Message(OBS, dumps(obs(period_s=-(2**63)))),
        Message(OBS, dumps(obs()).replace(b'"period_s":30', b'"period_s":' + b"9" * 5000)),
        Message(OBS, b'{"v": 1, "period_s": 1e400}'),
        Message(OBS, dumps(obs(lanes=[{"lane": 2**63, "count": 1}]))),
        Message(
            f"{P}/stations/JKT-SDR-N-001/state",
            '{"state": "\udcff"}'.encode("utf-8", "surrogatepass"),
        ),
        Message("its/v1/stations/\udcff/obs", dumps(obs())),  # a lone surrogate in the topic
        Message(b"its/v1/stations/\xff\xfe/obs", dumps(obs())),  # topic not UTF-8
    ]
    good = [Message(OBS, dumps(obs(i=i))) for i in range(3)]
    stats = _run_giving_up(_pipeline(engine), bad[:7] + good + bad[7:])
    assert stats.write_errors == 0 and stats.rejected_batches == 0
    assert stats.readings_inserted == 12 and stats.dead_letters == len(bad)
    dead = _dead(engine)
    assert len(dead) == len(bad) and all(reason for *_, reason in dead)
    assert all(len(topic) <= 512 and len(reason) <= 2000 for topic, _, _, reason in dead)
    assert dead[0][0] == "its/v1/stations/JKT\\x00SDR/obs"
    assert dead[1][2] == "base64" and base64.b64decode(dead[1][1]) == bad[1].payload
    assert "sta\\x00tus" in dead[2][3]
    assert dead[-1] == (
        "its/v1/stations/\\xff\\xfe/obs",
        dumps(obs()).decode(),
        "utf-8",
        "topic is not valid UTF-8",
    )


def test_a_row_the_store_refuses_is_isolated_and_dead_lettered(pg_engine: Engine) -> None:
    """A "poison batch": one row the database refuses for good (here a CHECK constraint a DBA
    added) must not make ingest retry the batch for ever. The batch is written again message
    by message; the refused one becomes a dead letter; every message is acked."""
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE readings ADD CONSTRAINT test_poison CHECK (count IS DISTINCT FROM 4242)"
            )
        )
    acked: list[int] = []
    poison = obs(i=3, lanes=[{"lane": 1, "count": 4242}])
    msgs = [
        Message(OBS, dumps(poison if i == 3 else obs(i=i)), lambda i=i: acked.append(i))
        for i in range(6)
    ]
    try:
        stats = _run_giving_up(_pipeline(pg_engine), msgs)
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text("ALTER TABLE readings DROP CONSTRAINT test_poison"))
    assert sorted(acked) == list(range(6))
    assert stats.rejected_batches == 1 and stats.readings_inserted == 20
    ((_, payload, _, reason),) = _dead(pg_engine)
    assert orjson.loads(payload) == poison
    assert reason.startswith("the store refused this message: IntegrityError: ")
    assert "test_poison" in reason


def test_the_mqtt_source_passes_a_topic_that_is_not_utf8_on_raw() -> None:
    """paho's ``topic`` raises on such a topic inside its network thread; the source keeps
    the bytes so the pipeline dead-letters the message instead (Mosquitto refuses these
    topics; other brokers may not)."""
    from ingest.service import to_message

    raw = MQTTMessage(mid=7, topic=b"its/v1/stations/\xff/obs")
    raw.payload = b"{}"
    assert to_message(raw, None) == Message(b"its/v1/stations/\xff/obs", b"{}")
    raw_ok = MQTTMessage(mid=8, topic=b"its/v1/stations/A/obs")
    assert to_message(raw_ok, None).topic == "its/v1/stations/A/obs"


def test_dead_letter_times_are_the_receive_time() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    from its.db.writes import DeadLetter

    row = DeadLetter.bounded("t", b"x" * 10, "why", at, 4).row()
    assert row["received_at"] == at and row["payload"] == "xxxx"
    assert row["reason"] == "why (payload cut to its first 4 of 10 bytes)"


def test_a_nul_in_the_topic_through_the_embedded_broker_is_a_dead_letter(
    settings: Settings, embedded_broker, pg_engine: Engine
) -> None:
    """Mosquitto disconnects a client that publishes such a topic; the embedded broker (what
    `make run` starts) delivers it, and PostgreSQL cannot store a NUL."""
    from tests.conftest import wait_for
    from tests.test_ingest_e2e import publisher, start_ingest

    run = start_ingest(settings, embedded_broker, pg_engine)
    pub = publisher(embedded_broker)
    try:
        prefix = settings.topic_prefix
        pub.publish(f"{prefix}/stations/JKT\x00SDR/obs", dumps(obs()), qos=1).wait_for_publish(5)
        pub.publish(OBS.replace(P, prefix), dumps(obs()), qos=1).wait_for_publish(5)
        wait_for(lambda: _count(pg_engine, schema.readings) == 4, what="the good reading")
        wait_for(lambda: _count(pg_engine, schema.dead_letters) == 1, what="the dead letter")
        assert run.thread.is_alive()
    finally:
        pub.loop_stop()
        pub.disconnect()
        run.stop.set()
        run.thread.join(15)
    ((topic, _, _, reason),) = _dead(pg_engine)
    assert topic == f"{prefix}/stations/JKT\\x00SDR/obs"
    assert reason == "invalid station id 'JKT\\x00SDR' in topic"
    assert run.result["stats"].write_errors == 0


def test_when_even_the_dead_letter_is_refused_it_is_kept_without_its_payload(
    pg_engine: Engine,
) -> None:
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE readings ADD CONSTRAINT test_poison CHECK (count <> 4242)"))
        conn.execute(
            text(
                "ALTER TABLE dead_letters ADD CONSTRAINT test_poison_dl CHECK (payload NOT LIKE '%4242%')"
            )
        )
    acked: list[int] = []
    msgs = [
        Message(OBS, dumps(obs(i=0, lanes=[{"lane": 1, "count": 4242}])), lambda: acked.append(0)),
        Message(OBS, dumps(obs(i=1)), lambda: acked.append(1)),
    ]
    try:
        stats = _run_giving_up(_pipeline(pg_engine), msgs)
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text("ALTER TABLE readings DROP CONSTRAINT test_poison"))
            conn.execute(text("ALTER TABLE dead_letters DROP CONSTRAINT test_poison_dl"))
    assert sorted(acked) == [0, 1] and stats.readings_inserted == 4
    ((_, payload, _, reason),) = _dead(pg_engine)
    assert payload == "" and '"test_poison"' in reason  # the reading's refusal, not its own
