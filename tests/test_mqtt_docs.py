"""A client written from docs/mqtt.md alone lands exactly once in PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from its.config import MqttEndpoint, Settings
from its.db import schema
from tests.conftest import wait_for
from tests.test_ingest_e2e import start_ingest

DOC = Path(__file__).parents[1] / "docs" / "mqtt.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/mqtt.md should have exactly one python example"
    return blocks[0]


def _readings(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            select(
                schema.readings.c.lane,
                func.count(),
                func.count(schema.readings.c.speed_kph),
            ).group_by(schema.readings.c.lane)
        ).all()


def test_documented_client_lands_exactly_once(
    settings: Settings, mosquitto: MqttEndpoint, pg_engine: Engine, tmp_path: Path
) -> None:
    run = start_ingest(settings, mosquitto, pg_engine)
    script = tmp_path / "station.py"
    script.write_text(_example())
    env = {
        **os.environ,
        "MQTT_HOST": mosquitto.host,
        "MQTT_PORT": str(mosquitto.port),
        "TOPIC_PREFIX": settings.topic_prefix,
    }
    try:
        for _ in range(2):  # the second run resends the same intervals with new values
            done = subprocess.run(
                [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            assert "published 5 observations" in done.stdout
            wait_for(
                lambda: sum(n for _, n, _ in _readings(pg_engine)) >= 20, what="20 lane readings"
            )

        def states() -> list[str]:
            with pg_engine.connect() as conn:
                return conn.execute(select(schema.station_status.c.state)).scalars().all()

        # the station's clean goodbye may be written in a batch after its last readings
        wait_for(lambda: states() == ["offline"], what="the station's offline state")
        with pg_engine.connect() as conn:
            dead = conn.execute(select(func.count()).select_from(schema.dead_letters)).scalar()
    finally:
        run.stop.set()
        run.thread.join(15)
    by_lane = {lane: (n, with_speed) for lane, n, with_speed in _readings(pg_engine)}
    intervals = {lane: n for lane, (n, _) in by_lane.items()}
    # two runs may straddle a 30 s boundary: each interval is stored once whatever was resent
    assert set(intervals) == {1, 2, 3, 4}
    assert len(set(intervals.values())) == 1 and 5 <= intervals[1] <= 6
    assert by_lane[4][1] == 0  # lane 4's null speeds stayed null
    assert dead == 0
