"""Fuzzing ingest: thousands of valid and broken messages, and ingest must store every valid
reading exactly once, turn every broken message into exactly one dead letter with a reason, and
never stop, never fail a batch, never hit its own "internal error" path.

Two runs: a property-based one (hypothesis, derandomized, bounded) feeding the pipeline directly
on PostgreSQL, and a seeded one through the real Mosquitto into a running `its ingest` process.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ingest.directory import StationDirectory
from ingest.mqtt import connect, make_client
from ingest.pipeline import Message, Pipeline
from its.config import MqttEndpoint, Settings
from its.contract import subscriptions
from its.db import schema
from tests.conftest import wait_for
from tests.fuzz_messages import (
    BODY_BREAKS,
    KINDS,
    MAX_PAYLOAD,
    OFFSETS,
    PIPELINE_ONLY_KINDS,
    STATIONS,
    Case,
    broken,
    broken_topic,
    gateway_mix,
    valid,
)
from tests.ingest_helpers import IngestProcess

P = "its/v1"


def _totals(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        readings = conn.execute(select(func.count()).select_from(schema.readings)).scalar()
        dead = conn.execute(select(func.count()).select_from(schema.dead_letters)).scalar()
        last = conn.execute(select(func.max(schema.dead_letters.c.id))).scalar() or 0
    return readings, dead, last


def _stored_keys(engine: Engine, keys: set[tuple[str, int, str]]) -> set[tuple[str, int, str]]:
    """Which of ``keys`` (station, lane, ISO stamp) have a reading, each compared in UTC."""
    if not keys:
        return set()
    by_utc = {
        (s, lane, datetime.fromisoformat(t).astimezone(UTC)): (s, lane, t) for s, lane, t in keys
    }
    times = [t for _, _, t in by_utc]
    r = schema.readings
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.c.station_id, r.c.lane, r.c.interval_start).where(
                r.c.interval_start.between(min(times), max(times))
            )
        ).all()
    return {by_utc[tuple(row)] for row in rows if tuple(row) in by_utc}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
stations = st.sampled_from(sorted(STATIONS))
spec = st.one_of(
    st.tuples(st.just("valid"), stations, st.sampled_from(OFFSETS)),
    st.tuples(st.just("valid"), stations, st.sampled_from(OFFSETS)),
    st.tuples(st.just("resend")),
    st.tuples(st.just("state"), stations, st.sampled_from(["online", "offline"])),
    st.tuples(st.just("broken"), st.sampled_from(KINDS), stations),
    st.tuples(st.just("topic"), st.sampled_from(PIPELINE_ONLY_KINDS)),
    st.tuples(
        st.just("gateway"),
        st.integers(0, 3),
        st.lists(st.sampled_from([*BODY_BREAKS, "not an object"]), max_size=2),
    ),
    st.tuples(
        st.just("bytes"),
        st.sampled_from(
            ["stations/JKT-SDR-N-001/obs", "gateways/g/obs", "stations/JKT-SDR-N-001/state"]
        ),
        st.binary(max_size=64),
    ),
    st.tuples(
        st.just("json"),
        st.sampled_from(["stations/JKT-SDR-N-001/obs", "gateways/g/obs"]),
        json_values,
    ),
    st.tuples(st.just("topic text"), st.text(max_size=40), st.binary(max_size=16)),
)


def test_fuzzed_messages_fed_to_the_pipeline_on_postgresql(pg_engine: Engine) -> None:
    counter = itertools.count(1)
    seen: Counter[str] = Counter()
    cfg = Settings(
        _env_file=None,
        topic_prefix=P,
        mqtt_max_payload_bytes=MAX_PAYLOAD,
        ingest_batch_size=100_000,
        ingest_batch_seconds=60,
    )
    directory = StationDirectory(pg_engine)

    def build(s: tuple, rng: random.Random, last_valid: list[Case]) -> Case | None:
        match s:
            case ("valid", station, offset):
                case = valid(P, station, next(counter), offset, rng)
                last_valid.append(case)
                return case
            case ("resend",):  # a sender resending: nothing new, no dead letter
                return (
                    Case(last_valid[-1].topic, last_valid[-1].payload, "resend")
                    if last_valid
                    else None
                )
            case ("state", station, state):
                return Case(
                    f"{P}/stations/{station}/state",
                    orjson.dumps({"state": state}),
                    "state",
                    state=station,
                )
            case ("broken", kind, station):
                return broken(P, station, next(counter), kind, rng)
            case ("topic", kind):
                return broken_topic(P, kind)
            case ("gateway", n_valid, bad):
                if not n_valid and not bad:
                    return None
                return gateway_mix(P, [next(counter) for _ in range(n_valid)], bad, rng)
            case ("bytes", where, payload):
                return Case(f"{P}/{where}", payload, "random bytes", dead=True)
            case ("json", where, value):
                return Case(f"{P}/{where}", orjson.dumps(value), "random JSON", dead=True)
            case ("topic text", text, payload):
                return Case(f"{P}/{text}", payload, "random topic", dead=True)
        raise AssertionError(s)

    @settings(
        max_examples=100,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(spec, min_size=20, max_size=60), st.integers(0, 2**32))
    def check(specs: list[tuple], seed: int) -> None:
        rng, last_valid = random.Random(seed), []
        cases = [c for c in (build(s, rng, last_valid) for s in specs) if c is not None]
        readings_before, dead_before, last_id = _totals(pg_engine)
        pipeline = Pipeline(pg_engine, cfg, directory=directory, retry_delays=(0.0,))
        stats = pipeline.run(
            [Message(c.topic, c.payload) for c in cases],
            stop=lambda: pipeline.stats.write_errors > 2,  # a poison batch fails, not hangs
        )
        assert (stats.write_errors, stats.rejected_batches, stats.internal_errors) == (0, 0, 0)
        keys = set().union(*(c.readings for c in cases))
        readings, dead, _ = _totals(pg_engine)
        assert readings - readings_before == len(keys)
        assert _stored_keys(pg_engine, keys) == keys
        assert dead - dead_before == sum(c.dead for c in cases), [c.kind for c in cases]
        with pg_engine.connect() as conn:
            reasons = (
                conn.execute(
                    select(schema.dead_letters.c.reason).where(schema.dead_letters.c.id > last_id)
                )
                .scalars()
                .all()
            )
        assert all(reasons) and not any(r.startswith("internal error") for r in reasons)
        seen.update(c.kind for c in cases)
        seen["messages"] += len(cases)

    check()
    print(f"pipeline fuzz: {seen['messages']} messages, {len(seen) - 1} kinds")
    assert seen["messages"] >= 2000


def test_every_known_breakage_is_exactly_one_dead_letter(engine: Engine) -> None:
    """The whole catalogue once, on both backends, in one batch with valid messages."""
    rng = random.Random(1)
    cases = [broken(P, "JKT-GTS-E-001", 10 + i, kind, rng) for i, kind in enumerate(KINDS)]
    cases += [broken_topic(P, kind) for kind in PIPELINE_ONLY_KINDS]
    cases += [valid(P, "JKT-SDR-N-001", i, "+07:00", rng) for i in range(5)]
    cfg = Settings(_env_file=None, topic_prefix=P, mqtt_max_payload_bytes=MAX_PAYLOAD)
    pipeline = Pipeline(engine, cfg, retry_delays=(0.0,))
    stats = pipeline.run(
        [Message(c.topic, c.payload) for c in cases], stop=lambda: pipeline.stats.write_errors > 2
    )
    assert (stats.write_errors, stats.internal_errors, stats.batches) == (0, 0, 1)
    keys = set().union(*(c.readings for c in cases))
    assert stats.readings_inserted == len(keys) > 0
    with engine.connect() as conn:
        dead = conn.execute(
            select(schema.dead_letters.c.topic, schema.dead_letters.c.reason).order_by(
                schema.dead_letters.c.id
            )
        ).all()
    assert len(dead) == len(KINDS) + len(PIPELINE_ONLY_KINDS)
    for case, (_, reason) in zip([c for c in cases if c.dead], dead, strict=True):
        assert reason and not reason.startswith("internal error"), (case.kind, reason)


def test_fuzzed_messages_through_mosquitto_into_a_running_ingest(
    pg_url: str, pg_engine: Engine, mosquitto: MqttEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    rng = random.Random(6)
    counter = itertools.count(100_000)  # apart from the other fuzz run's intervals
    cases: list[Case] = []
    kinds = itertools.cycle(KINDS)
    for _ in range(3000):
        roll = rng.random()
        station = rng.choice(sorted(STATIONS))
        if roll < 0.45:
            cases.append(valid(topic_prefix, station, next(counter), rng.choice(OFFSETS), rng))
        elif roll < 0.5:
            ks = [next(counter) for _ in range(rng.randint(1, 3))]
            bad = rng.sample(sorted(BODY_BREAKS), rng.randint(0, 2))
            cases.append(gateway_mix(topic_prefix, ks, bad, rng))
        elif roll < 0.52:
            payload = orjson.dumps({"state": rng.choice(["online", "offline"])})
            cases.append(Case(f"{topic_prefix}/stations/{station}/state", payload, "state"))
        else:
            cases.append(broken(topic_prefix, station, next(counter), next(kinds), rng))
    # the broker delivers ingest only what its filters match (not .../obs/extra, not alerts)
    filters = subscriptions(topic_prefix)
    unrouted = [c for c in cases if not any(topic_matches_sub(f, c.topic) for f in filters)]
    assert {c.kind for c in unrouted} == {"topic outside the contract", "alerts topic"}
    for c in unrouted:
        c.dead = False
    env = {
        **os.environ,
        "ITS_DATABASE_URL": pg_url,
        "ITS_MQTT_URL": mosquitto.url,
        "ITS_TOPIC_PREFIX": topic_prefix,
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_MQTT_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
        "ITS_INGEST_WORKER_ID": f"fuzz-{uuid.uuid4().hex[:8]}",
    }
    ingest = IngestProcess(env)
    proc, lines = ingest.proc, ingest.lines
    pub = make_client(mosquitto, f"fuzz-pub-{uuid.uuid4().hex[:8]}")
    try:
        wait_for(lambda: any("subscribed" in ln for ln in lines), timeout=30, what="subscribe")
        connect(pub, mosquitto)
        pub.loop_start()
        keys: set[tuple[str, int, str]] = set()
        dead = 0
        # in chunks that Debian's default Mosquitto queues without dropping (1,000 a client)
        for start in range(0, len(cases), 300):
            chunk = cases[start : start + 300]
            infos = [pub.publish(c.topic, c.payload, qos=1) for c in chunk]
            for info in infos:
                info.wait_for_publish(30)
            keys |= set().union(*(c.readings for c in chunk))
            dead += sum(c.dead for c in chunk)
            want = (len(keys), dead)
            wait_for(
                lambda want=want: _totals(pg_engine)[:2] == want,
                timeout=60,
                what=f"{want} (readings, dead letters); ingest log: {''.join(lines[-5:])}",
            )
            assert proc.poll() is None, "".join(lines)
        assert _stored_keys(pg_engine, keys) == keys
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingest.close()
    with pg_engine.connect() as conn:
        reasons = conn.execute(select(schema.dead_letters.c.reason)).scalars().all()
    assert len(reasons) == dead and all(reasons)
    assert not any(r.startswith("internal error") for r in reasons)
    assert "Traceback" not in "".join(lines)
    broken_kinds = {c.kind for c in cases if c.dead} | {c.kind for c in unrouted}
    print(
        f"mosquitto fuzz: {len(cases)} messages: {dead + len(unrouted)} broken in "
        f"{len(broken_kinds)} ways ({len(unrouted)} of them not routed to ingest by the broker), "
        f"{len(keys)} readings, {dead} dead letters"
    )
