"""`its import`: NDJSON in the wire contract and CSV, plain or gzip, validated as ingest
validates (the same dead letters and reasons), exactly once on re-runs, rolled up to the same
answers as the raw rows. On SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from ingest.pipeline import Message, Pipeline
from its.config import Settings
from its.contract import iso, observation_dict
from its.db import rollup, schema
from its.errors import ImportFileError
from its.importer.load import Importer, provenance
from its.network import Network
from tests.test_rollups import _same
from tests.traffic_helpers import observation

START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
START = START.replace(minute=START.minute - START.minute % 5)


def _settings(tmp_path: Path, topic_prefix: str = "its/v1", **kw: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, topic_prefix=topic_prefix, **kw)


def _observations(network: Network, minutes: int = 20) -> list[dict[str, Any]]:
    out = []
    for k, st in enumerate(network.stations[::10]):
        for i in range(minutes * 2):
            t = START + timedelta(seconds=30 * i)
            obs = observation(st, t, 20.0 + (k * 7 + i) % 60, count=5 + (k + i) % 9)
            out.append(observation_dict(obs))
    return out


def _load(engine: Engine, settings: Settings, *paths: Path, **kw: Any) -> Any:
    importer = Importer(engine, settings, **kw)
    return importer.run(importer.sources(paths))


def _dead(engine: Engine) -> list[tuple[str, str, str]]:
    d = schema.dead_letters
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(select(d.c.topic, d.c.reason, d.c.payload).order_by(d.c.id))
        ]


def _readings(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.readings)).scalar_one()


def _ingest_reason(engine: Engine, settings: Settings, topic: str, payload: bytes) -> str:
    """The reason ingest gives the same message (validated only, nothing written)."""
    from ingest.pipeline import Batch

    batch = Batch()
    Pipeline(engine, settings).collect(Message(topic, payload), batch, datetime.now(UTC))
    assert len(batch.dead) == 1
    return batch.dead[0].reason


def test_ndjson_all_line_forms_dead_letters_and_rerun(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, retention_raw_days=90)
    observations = _observations(network)
    p = settings.topic_prefix
    lines: list[bytes] = []
    for i, obs in enumerate(observations):
        topic = f"{p}/stations/{obs['station_id']}/obs"
        match i % 4:
            case 0:  # a bare observation
                lines.append(orjson.dumps(obs))
            case 1:  # a message as MQTT carried it
                lines.append(orjson.dumps({"topic": topic, "payload": obs}))
            case 2:  # as `mosquitto_sub -F %J` records it; the payload may be text too
                wrapped = {"tst": iso(START), "topic": topic, "qos": 1, "retain": 0}
                lines.append(orjson.dumps({**wrapped, "payload": orjson.dumps(obs).decode()}))
            case 3:  # a gateway's array
                lines.append(orjson.dumps([obs]))
    bad_payload = {**observations[0], "lanes": [{"lane": 1, "occupancy": 1.5}]}
    old = {**observations[0], "interval_start": iso(START - timedelta(days=91))}
    bad = [
        b"{not json",
        orjson.dumps({**observations[0], "station_id": "NOPE-1"}),
        orjson.dumps({"topic": f"{p}/stations/X/obs", "payload": bad_payload}),
        orjson.dumps(
            {
                "topic": f"{p}/stations/{observations[-1]['station_id']}/obs",
                "payload": observations[0],
            }
        ),
        orjson.dumps([observations[2], bad_payload]),
        orjson.dumps(old),
        orjson.dumps({"topic": 7, "payload": {}}),
        b"42",
    ]
    path = tmp_path / "history.ndjson"
    path.write_bytes(b"\n".join(lines[:10] + bad + [b"", b"   "] + lines[10:]) + b"\n")

    stats = _load(engine, settings, path)
    readings = sum(len(o["lanes"]) for o in observations) + len(observations[2]["lanes"])
    assert stats.stored == _readings(engine) == readings - len(observations[2]["lanes"])
    assert stats.duplicates == len(observations[2]["lanes"])  # the gateway line repeats one
    assert stats.lines == len(lines) + len(bad)  # blank lines are no lines
    dead = _dead(engine)
    assert stats.dead_letters == len(dead) == 8
    first_bad = 11  # line numbers count from 1, blank lines included
    assert [t for t, _r, _p in dead] == [
        provenance(path.resolve(), first_bad + i) for i in range(8)
    ]
    reasons = [r for _t, r, _p in dead]
    # ingest's own reasons, word for word
    assert reasons[0] == _ingest_reason(engine, settings, f"{p}/stations/A/obs", bad[0])
    assert reasons[1] == "unknown station 'NOPE-1'"
    assert reasons[2] == _ingest_reason(
        engine, settings, f"{p}/stations/X/obs", orjson.dumps(bad_payload)
    )
    assert "does not match the topic" in reasons[3]
    assert reasons[4].startswith(
        "1 of 2 gateway items rejected (payload: those items): [1] lanes.0"
    )
    assert "older than the raw retention (ITS_RETENTION_RAW_DAYS=90" in reasons[5]
    assert stats.too_old == 1 and "1 lines older than the raw retention" in stats.summary()
    assert reasons[6] == "import line: topic must be a string"
    assert reasons[7] == "observation must be a JSON object"
    assert orjson.loads(dead[4][2]) == [bad_payload]  # as ingest keeps a gateway's bad items

    # again: nothing stored twice, no dead letter recorded twice
    again = _load(engine, settings, path)
    assert again.stored == 0 and again.duplicates == readings
    assert again.dead_letters == 0 and again.dead_letters_known == 8
    assert _readings(engine) == stats.stored and len(_dead(engine)) == 8
    # --accept-old loads the old reading (history for the roll-ups)
    assert _load(engine, settings, path, accept_old=True).stored == len(old["lanes"])


def test_csv_gzip_and_roll_ups_equal_raw(engine: Engine, network: Network, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    observations = _observations(network, minutes=40)
    path = tmp_path / "history.csv.gz"
    st = observations[0]["station_id"]
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("station_id,interval_start,lane,period_s,count,occupancy,speed_kph,status\r\n")
        for obs in observations:
            for lane in obs["lanes"]:
                cells = [lane["count"], lane["occupancy"], lane["speed_kph"]]
                values = ["" if v is None else str(v) for v in cells]
                f.write(
                    f"{obs['station_id']},{obs['interval_start']},{lane['lane']},"
                    f"{obs['period_s']},{','.join(values)},{obs['status']}\r\n"
                )
        f.write(f"{st},{iso(START)},x,30,1,0.1,,ok\r\n")
        f.write(f"{st},{iso(START)},9,30,1,0.1,,ok\r\n")
        f.write(f"{st},{iso(START)},1,30,1,0.1\r\n")
        f.write(f"{st},{iso(START)},1,30,1,nan,,ok\r\n")
        f.write(f'{st},"{iso(START)}",1,30,-1,0.1,,ok\r\n')
    stats = _load(engine, settings, path)
    lanes = sum(len(o["lanes"]) for o in observations)
    assert stats.stored == lanes and stats.readings == lanes
    reasons = [r for _t, r, _p in _dead(engine)]
    assert reasons[0] == "lane: 'x' is not an integer"
    assert "got lane(s) [9]" in reasons[1]
    assert reasons[2] == "CSV row has 6 cells; the header has 8"
    assert reasons[3].startswith("lanes.0.occupancy")
    assert reasons[4].startswith("lanes.0.count")
    # single-loop stations have no speed: an empty cell is a missing value, never 0
    with engine.connect() as conn:
        r = schema.readings
        nulls = conn.execute(select(func.count()).where(r.c.speed_kph.is_(None))).scalar_one()
    assert nulls == sum(1 for o in observations for la in o["lanes"] if la["speed_kph"] is None)

    assert rollup.pending(engine.connect()) > 0
    from its.service import traffic

    window = (START - timedelta(minutes=2, seconds=30), START + timedelta(minutes=41))
    with engine.connect() as conn:
        raw = {
            (lvl, b): traffic.aggregate(conn, network, lvl, *window, b, source="raw")
            for lvl in ("station", "segment", "corridor")
            for b in (300, 900, 3600)
        }
    rollup.catch_up(engine, network.timezone)
    assert rollup.pending(engine.connect()) == 0
    with engine.connect() as conn:
        rolled = {key: traffic.aggregate(conn, network, key[0], *window, key[1]) for key in raw}
    _same(rolled, raw)
    assert len(raw[("segment", 300)]) > 8


def test_files_that_cannot_be_read_fail_before_anything_is_written(
    engine: Engine, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    good = tmp_path / "a.csv"
    good.write_text("station_id,lane,interval_start,period_s,count\n")
    odd = tmp_path / "a.txt"
    odd.write_text("{}\n")
    with pytest.raises(ImportFileError, match="cannot tell the format"):
        _load(engine, settings, good, odd)
    typo = tmp_path / "b.csv"
    typo.write_text("station_id,lane,interval_start,period,count\nJKT-SDR-N-001,1,x,30,1\n")
    good.write_text(
        f"station_id,lane,interval_start,period_s,count\nJKT-SDR-N-001,1,{iso(START)},30,1\n"
    )
    with pytest.raises(ImportFileError, match="missing period_s; unknown 'period'"):
        _load(engine, settings, good, typo)
    assert _readings(engine) == 0  # the good file first: nothing of it was written either
    empty = tmp_path / "c.csv.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(ImportFileError, match="no CSV header"):
        _load(engine, settings, empty)
    assert _load(engine, settings, good).stored == 1


def test_an_overlong_line_is_a_dead_letter_and_reading_goes_on(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, mqtt_max_payload_bytes=1024, dead_letter_max_bytes=64)
    obs = _observations(network, minutes=1)
    path = tmp_path / "big.ndjson"
    path.write_bytes(
        orjson.dumps(obs[0]) + b"\n" + b"x" * 200_000 + b"\n" + orjson.dumps(obs[1]) + b"\n"
    )
    stats = _load(engine, settings, path)
    assert stats.stored == len(obs[0]["lanes"]) + len(obs[1]["lanes"])
    ((_topic, reason, payload),) = _dead(engine)
    assert reason.startswith("line of 200,000 bytes exceeds the limit of 66,560 bytes")
    assert payload == "x" * 64


def test_cli_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: Network) -> None:
    from its.cli import app
    from its.config import get_settings
    from its.db.engine import make_engine

    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ITS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    path = tmp_path / "h.ndjson"
    obs = _observations(network, minutes=5)
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in obs) + b"\n{\n")
    try:
        result = CliRunner().invoke(app, ["import", str(path)])
        assert result.exit_code == 0, result.output
        lanes = sum(len(o["lanes"]) for o in obs)
        assert f"{lanes:,} readings stored, 0 duplicates, 1 dead letters" in result.output
        assert "rolled up" in result.output
        engine = make_engine(f"sqlite:///{tmp_path / 'its.db'}")
        assert _readings(engine) == lanes and rollup.pending(engine.connect()) == 0
        engine.dispose()
        bad = CliRunner().invoke(app, ["import", str(path), "--format", "xml"])
        assert bad.exit_code == 2 and "unknown format 'xml'" in bad.output
    finally:
        get_settings.cache_clear()
