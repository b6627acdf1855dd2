"""``GET /api/v1/export``, ``its export`` and ``its.client`` on SQLite and PostgreSQL.

Every format reads back to exactly the rows ``/aggregates`` answers for the same window (with the
slices made tiny, so that a window is many slices and a Parquet file many row groups), a window
beyond the point limit streams, raw readings come back as stored, bad requests are 4xx before
any byte, and the CLI and the client give the same rows.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import threading
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text
from sqlalchemy.engine import Engine, make_url
from typer.testing import CliRunner

from its.api import params
from its.api.app import create_app
from its.cli_export import BucketChoice, Level
from its.config import Settings
from its.contract import iso
from its.db import migrate, rollup, schema
from its.db.engine import make_engine
from its.network import Network, Station
from its.service import export
from tests.conftest import PG_ADMIN_URL, add_key, wait_for
from tests.traffic_helpers import seed

T0 = datetime(2026, 11, 2, 16, 35, tzinfo=UTC)  # crosses local midnight in Jakarta (17:00 UTC)
MINUTES = 50
# a window whose edges cut 5-minute buckets, hours and the local day
START, END = T0 + timedelta(seconds=450), T0 + timedelta(minutes=MINUTES - 7, seconds=30)
CASES = [
    ("station", "5m", None),
    ("segment", "15m", None),
    ("corridor", "1h", None),
    ("station", "1d", None),
    ("segment", "5m", ["SDR-N-03", "GTS-E-01"]),
]


def _speed(st: Station, t: datetime) -> float | None:
    n = int(t.timestamp()) // 30
    if zlib.crc32(st.station_id.encode()) % 5 == 0 and n % 4 == 0:
        return None  # gaps: pct_observed below 100
    return 20.0 + (len(st.station_id) * 7 + n) % 60


def _seed(engine: Engine, network: Network) -> None:
    """Readings for a quarter of the stations, rolled up; then more not rolled up yet (answered
    from the raw rows)."""
    seed(engine, network, T0, MINUTES, _speed, stations=network.stations[::4], count=11)
    rollup.catch_up(engine, network.timezone)
    seed(engine, network, T0 + timedelta(minutes=MINUTES - 15), 15, _speed,
         stations=network.stations[2::8], count=7)  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, network: Network
) -> Iterator[Engine]:
    """A database of this module's own on each backend, seeded once: the tests here only read
    it (the one that deletes rows uses the ``engine`` fixture)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('export') / 'its.db'}")
        migrate.upgrade_and_seed(engine, network)
        _seed(engine, network)
        yield engine
        engine.dispose()
        return
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"its_test_export_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(make_url(PG_ADMIN_URL).set(database=name).render_as_string(False))
    try:
        migrate.upgrade_and_seed(engine, network)
        _seed(engine, network)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def key(seeded: Engine) -> str:
    return add_key(seeded, "read")


@pytest.fixture
def client(seeded: Engine, network: Network, settings: Settings, key: str) -> TestClient:
    return TestClient(
        create_app(settings, engine=seeded, network=network), headers={"X-API-Key": key}
    )


@pytest.fixture
def tiny_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of a few points and Parquet row groups of a few rows: every window is many."""
    monkeypatch.setattr(export, "SLICE_POINTS", 37)
    monkeypatch.setattr(export, "SLICE_READINGS", 50)
    monkeypatch.setattr(export, "READINGS_SLICE_BOUNDS", (timedelta(seconds=30), timedelta(days=1)))
    monkeypatch.setattr(export, "FETCH_ROWS", 64)
    from its import formats

    monkeypatch.setattr(formats, "PARQUET_ROW_GROUP_ROWS", 50)


# --------------------------------------------------------------------------- reading back


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _read(fmt: str, body: bytes) -> list[dict[str, Any]]:
    """An export's rows as ``/aggregates`` writes its rows: times ISO text, numbers numbers."""
    if fmt == "csv":
        text = body.decode()
        assert "\r" not in text
        return [
            {k: v if k in ("id", "station_id", "status") else _number(v) for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text))
        ]
    if fmt == "ndjson":
        return [orjson.loads(line) for line in body.splitlines()]
    table = pq.read_table(io.BytesIO(body))
    return [
        {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}
        for row in table.to_pylist()
    ]


def _params(level: str, bucket: str | None, ids: list[str] | None, **more: Any) -> list:
    p: list[tuple[str, Any]] = [("level", level), ("start", START.isoformat())]
    p += [("end", END.isoformat())] + ([("bucket", bucket)] if bucket else [])
    return p + [("id", i) for i in ids or []] + list(more.items())


# --------------------------------------------------------------------------- aggregates


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_every_format_reads_back_to_the_rows_of_aggregates(
    client: TestClient, fmt: str, tiny_slices: None
) -> None:
    for level, bucket, ids in CASES:
        expected = client.get("/api/v1/aggregates", params=_params(level, bucket, ids))
        assert expected.status_code == 200, expected.text
        rows = expected.json()["rows"]
        assert rows, (level, bucket)
        got = client.get("/api/v1/export", params=_params(level, bucket, ids, format=fmt))
        assert got.status_code == 200, got.text
        assert _read(fmt, got.content) == rows, (level, bucket, fmt)
        if fmt == "parquet" and len(rows) > 100:
            meta = pq.ParquetFile(io.BytesIO(got.content)).metadata
            assert meta.num_row_groups > 1, (level, bucket)


def test_headers_name_the_file_and_its_type(client: TestClient) -> None:
    media = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson",
             "parquet": "application/vnd.apache.parquet"}  # fmt: skip
    for fmt, content_type in media.items():
        r = client.get("/api/v1/export", params=_params("corridor", "1h", None, format=fmt))
        assert r.headers["content-type"] == content_type
        assert r.headers["content-disposition"] == (
            f'attachment; filename="its-corridor-1h-20261102T164230Z-20261102T171830Z.{fmt}"'
        )
    r = client.get("/api/v1/export", params=_params("readings", None, None))
    assert (
        'filename="its-readings-20261102T164230Z-20261102T171830Z.csv"'
        in (r.headers["content-disposition"])
    )


def test_a_window_beyond_the_point_limit_streams(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, seeded: Engine, network: Network
) -> None:
    monkeypatch.setattr(params, "MAX_POINTS", 150)
    p = _params("station", "5m", None)
    refused = client.get("/api/v1/aggregates", params=p)
    assert refused.status_code == 400 and "more than the limit of 150" in refused.text
    rows = _read("ndjson", client.get("/api/v1/export", params=p + [("format", "ndjson")]).content)
    with seeded.connect() as conn:
        direct = export.aggregate_chunks(conn, network, "station", START, END, 300)
        expected = [r for chunk in direct for r in chunk.rows]
    assert len(rows) == len(expected) > 150
    assert [(r["id"], r["bucket_start"]) for r in rows] == [(r[0], iso(r[1])) for r in expected]


def test_the_whole_accepted_range_skips_empty_stretches(client: TestClient) -> None:
    """1970 .. 2200 in 5-minute buckets is 24 million buckets; the export reads the data's."""
    whole = [("start", "1970-01-01T00:00:00Z"), ("end", "2199-12-31T23:55:00Z")]
    r = client.get("/api/v1/export", params=[("level", "corridor"), ("bucket", "5m"), *whole,
                                             ("format", "ndjson")])  # fmt: skip
    assert r.status_code == 200
    rows = _read("ndjson", r.content)
    first, last = rows[0]["bucket_start"], rows[-1]["bucket_start"]
    assert (first, last) == ("2026-11-02T16:35:00Z", "2026-11-02T17:20:00Z")
    aggregates = client.get("/api/v1/aggregates", params=[("level", "corridor"), ("bucket", "5m"),
                            ("start", first), ("end", "2026-11-02T17:25:00Z")])  # fmt: skip
    assert rows == aggregates.json()["rows"]


def test_roll_ups_answer_after_the_raw_rows_are_gone(
    engine: Engine, network: Network, settings: Settings, api_auth_headers: dict[str, str]
) -> None:
    """Retention deletes raw rows and keeps the roll-ups: the export still finds the data."""
    _seed(engine, network)
    rollup.catch_up(engine, network.timezone)
    client = TestClient(
        create_app(settings, engine=engine, network=network), headers=api_auth_headers
    )
    p = [("level", "segment"), ("bucket", "1h"), ("start", "2026-11-02T00:00:00Z"),
         ("end", "2026-11-03T00:00:00Z"), ("format", "ndjson")]  # fmt: skip
    before = _read("ndjson", client.get("/api/v1/export", params=p).content)
    with engine.begin() as conn:
        conn.execute(delete(schema.readings))
    assert _read("ndjson", client.get("/api/v1/export", params=p).content) == before != []


# --------------------------------------------------------------------------- raw readings


def _stored(engine: Engine, ids: list[str] | None = None) -> list[dict[str, Any]]:
    r = schema.readings
    q = (
        select(r)
        .where(r.c.interval_start >= START, r.c.interval_start < END)
        .order_by(r.c.interval_start, r.c.station_id, r.c.lane)
    )
    if ids:
        q = q.where(r.c.station_id.in_(ids))
    with engine.connect() as conn:
        return [
            {k: iso(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
            for row in conn.execute(q)
        ]


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_raw_readings_come_back_as_stored(
    client: TestClient, seeded: Engine, network: Network, fmt: str, tiny_slices: None
) -> None:
    r = client.get("/api/v1/export", params=_params("readings", None, None, format=fmt))
    assert r.status_code == 200, r.text
    stored = _stored(seeded)
    assert len(stored) > 1000
    assert _read(fmt, r.content) == stored
    ids = [network.stations[0].station_id, network.stations[5].station_id]
    r = client.get("/api/v1/export", params=_params("readings", None, ids, format=fmt))
    assert _read(fmt, r.content) == _stored(seeded, ids) != []


def test_an_empty_window_is_a_header_only_file(client: TestClient) -> None:
    p = [("level", "readings"), ("start", "2020-01-01T00:00:00Z"), ("end", "2020-01-02T00:00:00Z")]
    assert client.get("/api/v1/export", params=p).text == (
        "station_id,lane,interval_start,period_s,count,occupancy,speed_kph,status,received_at\n"
    )
    empty = client.get("/api/v1/export", params=p + [("format", "parquet")]).content
    assert pq.read_table(io.BytesIO(empty)).num_rows == 0


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ({"level": "readings", "bucket": "5m"}, 400, "bucket does not apply to level=readings"),
        ({"level": "segment", "id": "NOPE"}, 404, "unknown segment id(s): NOPE"),
        ({"level": "readings", "id": "SDR-N-03"}, 404, "unknown station id(s): SDR-N-03"),
        ({"format": "xlsx"}, 422, "csv"),
        ({"level": "lane"}, 422, "readings"),
        ({"bucket": "7m"}, 422, "5m"),
        ({"start": "2026-11-02T18:00:00Z", "end": "2026-11-02T17:00:00Z"}, 400, "must be before"),
        ({"start": "1969-12-31T23:00:00Z", "end": "1970-01-01T01:00:00Z"}, 400, "outside"),
        ({"end": "2200-01-01T00:00:00Z"}, 400, "outside the accepted range"),
        ({"start": "0001-01-01T00:00:00+07:00"}, 400, "outside the accepted range"),
        ({"start": "yesterday"}, 422, "ISO 8601"),
        ({"id": "a\x00b"}, 422, "control characters"),
        ({"id": "x" * 129}, 422, "at most 128"),
        ({"id": [f"S{i}" for i in range(201)]}, 422, "at most 200"),
    ],
)
def test_bad_requests_are_4xx_before_any_byte(
    client: TestClient, query: dict, status: int, words: str
) -> None:
    r = client.get("/api/v1/export", params=query)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert "content-disposition" not in r.headers
    assert words in r.text


def test_export_needs_an_identity(
    seeded: Engine, network: Network, settings: Settings, key: str
) -> None:
    app = create_app(settings, engine=seeded, network=network)
    anonymous = TestClient(app).get("/api/v1/export", params=_params("station", "5m", None))
    assert anonymous.status_code == 401
    reader = TestClient(app, headers={"X-API-Key": key})  # scope read
    assert reader.get("/api/v1/export", params=_params("station", "5m", None)).status_code == 200


# --------------------------------------------------------------------------- its export


def test_cli_choices_are_the_apis() -> None:
    assert [c.value for c in Level] == [c.value for c in params.ExportLevel]
    assert [c.value for c in BucketChoice] == [c.value for c in params.Bucket]


def test_cli_writes_the_file_the_api_streams(
    client: TestClient,
    seeded: Engine,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    tiny_slices: None,
) -> None:
    from its.cli import app as cli
    from its.config import get_settings

    monkeypatch.setenv("ITS_DATABASE_URL", seeded.url.render_as_string(hide_password=False))
    # typer's error box on one line: typer reads TERMINAL_WIDTH once, when first imported (by an
    # earlier test in a full run), so the width it keeps is set directly as well
    monkeypatch.setenv("TERMINAL_WIDTH", "400")
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 400)
    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        window = ["--start", START.isoformat(), "--end", END.isoformat()]
        for level, bucket, fmt in [("segment", "15m", "csv"), ("readings", None, "parquet")]:
            out = tmp_path / f"out.{fmt}"
            args = ["export", "--level", level, *window, "-o", str(out), "--no-progress"]
            result = CliRunner().invoke(cli, args + (["--bucket", bucket] if bucket else []))
            assert result.exit_code == 0, result.output
            assert f"to {out}" in result.output
            api = client.get(
                "/api/v1/export", params=_params(level, bucket, None, format=fmt)
            ).content
            assert _read(fmt, out.read_bytes()) == _read(fmt, api) != []
            if fmt == "csv":
                assert out.read_bytes() == api
        # standard output, format given; and a refusal that names the problem
        args = ["export", "--level", "corridor", "--bucket", "1h", *window, "--format", "ndjson"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert [orjson.loads(line) for line in lines] == client.get(
            "/api/v1/aggregates", params=_params("corridor", "1h", None)
        ).json()["rows"]
        result = CliRunner().invoke(cli, ["export", "--level", "segment", "--id", "NOPE"])
        assert result.exit_code == 2, result.output
        assert "unknown segment id(s): NOPE" in _unboxed(result.output), result.output
        result = CliRunner().invoke(cli, ["export", "--start", "1969-01-01T00:00:00Z"])
        assert result.exit_code == 2, result.output
        assert "outside the accepted range" in _unboxed(result.output), result.output
    finally:
        get_settings.cache_clear()


def _unboxed(output: str) -> str:
    """typer's error box as plain words: however wide the terminal, a message wrapped over the
    box's lines reads as one sentence."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", output).split())


# --------------------------------------------------------------------------- its.client


@pytest.fixture
def served(seeded: Engine, network: Network, settings: Settings) -> Iterator[str]:
    """The API on a real HTTP server (uvicorn on a free port) in this process."""
    import uvicorn

    app = create_app(settings, engine=seeded, network=network)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_client_returns_dataframes(served: str, key: str, network: Network) -> None:
    import pandas as pd

    from its.client import APIError, Client

    with Client(served, api_key=key) as api:
        rows = api.aggregates("segment", "15m", START, END)
        assert isinstance(rows, pd.DataFrame) and len(rows) > 0
        assert isinstance(rows["bucket_start"].dtype, pd.DatetimeTZDtype)
        assert str(rows["bucket_start"].dtype.tz) == "UTC"
        exported = api.export("segment", "15m", START, END)
        assert isinstance(exported, pd.DataFrame)
        pd.testing.assert_frame_equal(
            exported.reset_index(drop=True),
            rows.astype(exported.dtypes.to_dict()),
            check_dtype=False,
        )
        csv_rows = api.export("segment", "15m", START, END, format="csv")
        pd.testing.assert_frame_equal(csv_rows, rows, check_dtype=False)
        net = api.network()
        assert set(net["segment_id"]) == {s.segment_id for s in network.segments}
        assert isinstance(api.alerts(state="all"), pd.DataFrame)
        with pytest.raises(APIError) as refused:
            api.export("segment", "15m", START, END, ids=["NOPE"])
        assert refused.value.status == 404 and "NOPE" in str(refused.value.detail)
    with Client(served) as nobody, pytest.raises(APIError) as refused:
        nobody.network()
    assert refused.value.status == 401


def _held_export(base: str, key: str, query: str) -> socket.socket:
    """An export request whose client reads nothing: a tiny receive window, so the server is
    held mid-stream once the kernel's buffers are full (the export is larger than they are)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = base.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    sock.sendall(f"GET /api/v1/export?{query} HTTP/1.1\r\nHost: {host}\r\n"
                 f"X-API-Key: {key}\r\n\r\n".encode())  # fmt: skip
    assert sock.recv(64).startswith(b"HTTP/1.1 200")
    return sock


def test_exports_beyond_the_concurrency_limit_get_429(
    pg_engine: Engine, network: Network, tmp_path: Any
) -> None:
    """One slot: a second export while the first streams is refused; the slot comes back when
    the first client goes away mid-stream (no leak: the read transaction and its server-side
    cursor end too), and after a complete export."""
    import httpx2 as httpx
    import uvicorn

    seed(pg_engine, network, T0, 60, _speed)  # ~35,000 readings: 6 MB of NDJSON
    key = add_key(pg_engine, "read")
    settings = Settings(_env_file=None, data_dir=tmp_path, export_max_concurrent=1)
    app = create_app(settings, engine=pg_engine, network=network)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        window = f"start={T0:%Y-%m-%dT%H:%M:%SZ}&end={T0 + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"
        query = f"level=readings&format=ndjson&{window}"
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
            held = _held_export(base, key, query)
            second = http.get(f"/api/v1/export?{query}")
            assert second.status_code == 429 and second.headers["retry-after"] == "30"
            assert "ITS_EXPORT_MAX_CONCURRENT" in second.json()["detail"]
            held.close()  # the client goes away mid-stream
            wait_for(lambda: http.get(f"/api/v1/export?{query}").status_code == 200,
                     what="the abandoned export's slot")  # fmt: skip
            complete = http.get(f"/api/v1/export?{query}")
            assert complete.status_code == 200 and complete.content.count(b"\n") > 30_000
    finally:
        server.should_exit = True
        thread.join(10)


def test_pandas_reads_an_export_url(served: str, key: str) -> None:
    """The docs' pandas example: the export URL straight into read_parquet / read_csv."""
    import pandas as pd

    url = f"{served}/api/v1/export?level=segment&bucket=15m&start={START:%Y-%m-%dT%H:%M:%SZ}"
    url += f"&end={END:%Y-%m-%dT%H:%M:%SZ}"
    frame = pd.read_parquet(url + "&format=parquet", storage_options={"X-API-Key": key})
    text = pd.read_csv(url, storage_options={"X-API-Key": key}, parse_dates=["bucket_start"])
    assert len(frame) == len(text) > 0
    assert list(frame["id"]) == list(text["id"])
    assert (frame["bucket_start"] == text["bucket_start"]).all()


def test_client_without_pandas_returns_dicts_and_saves_files(
    served: str, seeded: Engine, key: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from its.client import Client

    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # `import pandas` fails
    with Client(served, api_key=key) as api:
        rows = api.aggregates("corridor", "1h", START, END)
        assert isinstance(rows, list) and rows and rows[0]["bucket_start"].endswith("Z")
        assert api.export("corridor", "1h", START, END) == rows
        saved = api.export("readings", start=START, end=END, path=tmp_path / "r.parquet")
        assert _read("parquet", saved.read_bytes()) == _stored(seeded)
        with pytest.raises(ValueError, match="needs pandas"):
            api.export("corridor", "1h", START, END, format="parquet")
        assert isinstance(api.network(), list) and isinstance(api.alerts(), list)
