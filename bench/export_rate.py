"""Export rate at city scale: ``GET /api/v1/export`` streaming 24 h of 5-min station data for
2,000 stations (576,000 rows) from a real web process, against the database's own COPY of the
same rows, same run.

    python bench/export_rate.py                           # 2,000 stations, 24 h (slow: minutes)
    python bench/export_rate.py --stations 200 --hours 2  # a quick run

Builds the synthetic network and readings of ``bench/query_scale.py`` (imported, not copied:
``network_geojson`` and ``load_readings``), rolls them up, then starts ``its web`` on that
database as a child process (a fresh one per format) and, per format (CSV, NDJSON, Parquet),
downloads the export over HTTP with an API key, counting rows and sampling the server's resident
memory (``VmRSS``) every 50 ms. Reported per format: rows/s, bytes, and the server's peak RSS
during the export minus its RSS after a small export (1 h of corridors, which loads the code and
warms the pools). Flat memory is a growth that does not depend on the window: ``--check-flat``
first exports a quarter of the window on the same server and reports both.

The reference is what the database alone does for the same rows: on PostgreSQL a plain
``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` of the 5-minute roll-ups with the formulas in SQL;
on SQLite the same SELECT fetched through the DB-API. Progress goes to stderr; one JSON line to
stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pyarrow.parquet as pq
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_scale import load_readings, network_geojson  # noqa: E402

from its.auth import keys  # noqa: E402
from its.auth.roles import Scope  # noqa: E402
from its.db import migrate, rollup  # noqa: E402
from its.db.engine import make_engine  # noqa: E402
from its.network import Network, load_network  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, network_file: Path, data_dir: Path) -> tuple[subprocess.Popen, str]:
    """``its web`` on ``url`` in a child process; returns it and its base URL once it answers."""
    port = _free_port()
    env = {
        **os.environ,
        "ITS_DATABASE_URL": url,
        "ITS_NETWORK_FILE": str(network_file),
        "ITS_DATA_DIR": str(data_dir),
        "ITS_WEB_PORT": str(port),
        "ITS_WEB_HOST": "127.0.0.1",
    }
    env.pop("ITS_MQTT_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from its.cli import app; app()", "web"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"its web exited with {proc.returncode}")
        try:
            httpx.get(f"{base}/healthz", timeout=2)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("its web did not answer within 120 s")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """The peak of a process's resident memory while the block runs (sampled every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


def download(base: str, key: str, params: dict[str, str]) -> tuple[int, int, float]:
    """(rows, bytes, seconds) of one export, read as a client would, kept only to count rows."""
    started = time.perf_counter()
    size = lines = 0
    parquet = io.BytesIO() if params["format"] == "parquet" else None
    with httpx.stream("GET", f"{base}/api/v1/export", params=params,
                      headers={"X-API-Key": key}, timeout=600) as r:  # fmt: skip
        r.raise_for_status()
        for piece in r.iter_bytes():
            size += len(piece)
            if parquet is not None:
                parquet.write(piece)
            else:
                lines += piece.count(b"\n")
    elapsed = time.perf_counter() - started
    if parquet is not None:
        rows = pq.ParquetFile(io.BytesIO(parquet.getvalue())).metadata.num_rows
    else:
        rows = lines - (1 if params["format"] == "csv" else 0)
    return rows, size, elapsed


# --------------------------------------------------------------------------- the reference

REFERENCE_SQL = """
SELECT r.station_id, r.bucket_start,
       r.q_speed / NULLIF(r.qv_measured + r.occ_est * 1000.0 / s.vehicle_length_m, 0) AS speed_kph,
       r.flow_sum / r.intervals AS flow_vph,
       r.occ_sum / NULLIF(r.occ_n, 0) AS occupancy,
       100.0 * r.lane_rows / (s.lanes * 300.0 / r.period_s) AS pct_observed
FROM rollup_5m r JOIN stations s ON s.station_id = r.station_id
WHERE r.bucket_start >= :lo AND r.bucket_start < :hi
ORDER BY r.bucket_start, r.station_id
"""


def reference(engine: Engine, lo: datetime, hi: datetime) -> dict[str, Any]:
    """The same rows straight from the database: COPY on PostgreSQL, a DB-API fetch on SQLite."""
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        sql = REFERENCE_SQL.replace(":lo", f"'{lo.isoformat()}'").replace(
            ":hi", f"'{hi.isoformat()}'"
        )
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            size = rows = 0
            with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
                for block in copy:
                    size += len(block)
                    rows += bytes(block).count(b"\n")
            raw.commit()
        finally:
            raw.close()
        what = "COPY (SELECT ...) TO STDOUT (FORMAT csv)"
    else:
        size = 0
        with engine.connect() as conn:
            fmt = "%Y-%m-%d %H:%M:%S.%f"
            result = conn.execute(
                text(REFERENCE_SQL), {"lo": lo.strftime(fmt), "hi": hi.strftime(fmt)}
            )
            rows = sum(len(part) for part in result.partitions(10_000))
        what = "SELECT ... fetched through sqlite3"
    elapsed = time.perf_counter() - started
    return {"what": what, "rows": rows, "bytes": size, "seconds": round(elapsed, 2),
            "rows_per_s": round(rows / elapsed)}  # fmt: skip


# --------------------------------------------------------------------------- one backend


def _loaded(engine: Engine) -> tuple[datetime, int] | None:
    """(end, readings) of a database this bench loaded before (``--keep``), or None."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT max(interval_start), count(*) FROM readings")).first()
    if not row or row[0] is None:
        return None
    last = row[0] if isinstance(row[0], datetime) else datetime.fromisoformat(row[0])
    end = last.replace(tzinfo=UTC) + timedelta(seconds=30)
    return end, row[1]


def run_backend(
    url: str, network: Network, network_file: Path, tmp: Path, hours: int, check_flat: bool
) -> dict[str, Any]:
    engine = make_engine(url)
    proc = None
    try:
        migrate.upgrade_and_seed(engine, network)
        loaded = _loaded(engine)
        if loaded:
            now, rows = loaded
            t0, load_s = now - timedelta(hours=hours), 0.0
            log(f"reusing {rows} readings up to {now.isoformat()}")
        else:
            now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            t0 = now - timedelta(hours=hours)
            log(f"loading {hours} h of 30-s readings for {len(network.stations)} stations")
            rows, load_s = load_readings(engine, t0, hours)
        started = time.monotonic()
        rollup.catch_up(
            engine, network.timezone, batch=10_000,
            progress=lambda n: log(f"  rolled up {n} keys ({time.monotonic() - started:.0f} s)"),
        )  # fmt: skip
        rollup_s = time.monotonic() - started
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        with engine.begin() as conn:
            key = keys.create_key(conn, "bench", scope=Scope.read, owner=None, actor="bench")[1]
        window = {"start": t0.isoformat(), "end": now.isoformat()}
        quarter = {"start": (now - timedelta(hours=hours / 4)).isoformat(), "end": now.isoformat()}
        small = {"level": "corridor", "bucket": "1h", "start": (now - timedelta(hours=1)).isoformat(),
                 "end": now.isoformat()}  # fmt: skip
        out: dict[str, Any] = {
            "readings": rows, "load_s": round(load_s, 1), "rollup_s": round(rollup_s, 1),
            "formats": {},
        }  # fmt: skip
        for fmt in ("csv", "ndjson", "parquet"):
            # a fresh server per format: RSS never shrinks, so an earlier export's peak would
            # hide this one's
            proc, base = start_server(url, network_file, tmp)
            try:
                download(base, key, {**small, "format": fmt})
                baseline = rss_kib(proc.pid)
                result: dict[str, Any] = {"server_rss_baseline_mib": round(baseline / 1024, 1)}
                spans = [("quarter", quarter)] if check_flat else []
                for name, span in [*spans, ("whole", window)]:
                    params = {"level": "station", "bucket": "5m", "format": fmt, **span}
                    with RssSampler(proc.pid) as rss:
                        n, size, elapsed = download(base, key, params)
                    result[name] = {
                        "rows": n, "bytes": size, "seconds": round(elapsed, 2),
                        "rows_per_s": round(n / elapsed),
                        "server_rss_growth_mib": round((rss.peak - baseline) / 1024, 1),
                    }  # fmt: skip
                out["formats"][fmt] = result
                log(f"  {fmt}: {result}")
            finally:
                proc.terminate()
                proc.wait(30)
            proc = None
        out["reference"] = reference(engine, t0, now)
        log(f"  reference: {out['reference']}")
        csv_rate = out["formats"]["csv"]["whole"]["rows_per_s"]
        out["csv_vs_reference"] = round(csv_rate / out["reference"]["rows_per_s"], 2)
        return out
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--corridors", type=int, default=50)
    ap.add_argument("--lanes", type=int, default=3, choices=range(1, 7))
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--timezone", default="Asia/Jakarta")
    ap.add_argument("--backends", default="postgresql", help="postgresql,sqlite")
    ap.add_argument(
        "--check-flat",
        action="store_true",
        help="first export a quarter of the window on the same server: flat memory is the same "
        "growth for both",
    )
    ap.add_argument(
        "--keep",
        metavar="NAME",
        help="PostgreSQL: load into database NAME and keep it; a later run with the same NAME "
        "reuses its readings (for measuring again without reloading)",
    )
    ap.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="its-export-rate-"))
    network_file = tmp / "network.geojson"
    network_file.write_text(
        json.dumps(network_geojson(args.stations, args.corridors, args.lanes, args.timezone))
    )
    network = load_network(network_file)
    report: dict[str, Any] = {
        "bench": "export_rate", "stations": args.stations, "lanes": args.lanes,
        "hours": args.hours, "export": "level=station&bucket=5m over the whole window",
        "backends": {},
    }  # fmt: skip
    for backend in args.backends.split(","):
        log(f"== {backend}")
        if backend == "postgresql":
            admin = make_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
            db = args.keep or f"its_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                exists = conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :db"), {"db": db}
                ).first()
                if not exists:
                    conn.execute(text(f'CREATE DATABASE "{db}"'))
            try:
                url = make_url(args.pg_admin_url).set(database=db).render_as_string(False)
                report["backends"][backend] = run_backend(
                    url, network, network_file, tmp, args.hours, args.check_flat
                )
            finally:
                if not args.keep:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                admin.dispose()
        elif backend == "sqlite":
            url = f"sqlite:///{tmp / 'its.db'}"
            report["backends"][backend] = run_backend(
                url, network, network_file, tmp, args.hours, args.check_flat
            )
        else:
            ap.error(f"unknown backend {backend!r}")
    for f in sorted(tmp.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    tmp.rmdir()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
