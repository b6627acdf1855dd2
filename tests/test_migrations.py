"""Migrations create the schema on every backend, seed the network once, and match the models."""

from __future__ import annotations

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from its.cli import app
from its.db import migrate, schema
from its.db.engine import Backend, detect_backend


def test_upgrade_head_matches_models(engine: Engine) -> None:
    migrate.check(engine)  # raises if models and migrations drift apart
    tables = set(inspect(engine).get_table_names())
    assert {"stations", "readings", "dead_letters", "station_status", "segments"} <= tables
    assert detect_backend(engine) in (Backend.SQLITE, Backend.POSTGRESQL)


def test_readings_key_and_columns(engine: Engine) -> None:
    insp = inspect(engine)
    pk = insp.get_pk_constraint("readings")
    assert pk["constrained_columns"] == ["station_id", "lane", "interval_start"]
    cols = {c["name"] for c in insp.get_columns("readings")}
    assert {"count", "occupancy", "speed_kph", "received_at"} <= cols


def test_seed_runs_once(engine: Engine, network) -> None:
    assert migrate.upgrade_and_seed(engine, network) == 0
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(schema.stations)).scalar()
    assert n == len(network.stations)


def test_cli_db_upgrade_on_a_fresh_sqlite_file(tmp_path, monkeypatch) -> None:
    from its.config import get_settings

    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ITS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "loaded 96 stations" in result.output
        again = CliRunner().invoke(app, ["db", "upgrade"])
        assert "already loaded" in again.output
        assert (tmp_path / "its.db").exists()
    finally:
        get_settings.cache_clear()
