"""Ingest throughput end to end: Mosquitto -> its ingest -> PostgreSQL.

    python bench/ingest_rate.py --messages 20000

Measures in one run, on the same messages: (1) paho's receive-only rate (a subscriber that only
counts), the ceiling for one ingest process; (2) a plain binary COPY of the same rows into
PostgreSQL, the database's ceiling; (3) ingest end to end (publish -> validate -> batch -> write
-> ack) into a fresh temporary database. Progress goes to stderr; one JSON line to stdout.

Flow control: the publisher keeps at most ``--window`` messages that the consumer has not yet
acknowledged (for ingest: committed and acked). Mosquitto keeps at most ``max_queued_messages``
(+ ``max_inflight_messages``) unacknowledged QoS 1 messages per subscriber and silently DROPS the
rest, so the window must stay below that (Debian's default: 1000 + 20). Counting messages the
consumer has merely *received* is not enough: ingest holds up to a batch of them unacked until
its commit, and they still occupy the broker's queue.

The bench never hangs: when nothing is acknowledged for ``--stall`` seconds, or a stage exceeds
``--timeout``, it stops and reports what was lost (rows missing from the database, dead letters,
the broker's dropped-message counter) in the JSON line and exits with status 1.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine, make_url

from ingest.mqtt import connect, make_client
from ingest.pipeline import Message, Pipeline
from ingest.service import MqttSource
from its.config import MqttEndpoint, Settings
from its.db import migrate, schema
from its.db.engine import make_engine
from its.network import load_network

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Window:
    """Flow control between the consumer (this process) and the publisher (a child process, so
    that publishing does not share the GIL with the receiving paho loop being measured).

    The consumer calls :meth:`consumed`; the publisher blocks in :meth:`take` on a
    multiprocessing Condition and is woken once half the window has drained, so neither side
    polls nor wakes the other for every message."""

    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.size = size
        self._sent = ctx.Value("q", 0, lock=False)  # written by the publisher only
        self._done = ctx.Value("q", 0, lock=False)  # written by the consumer only
        self._waiting = ctx.Value("b", 0, lock=False)
        self._cond = ctx.Condition()
        self.last_progress = time.monotonic()

    @property
    def done(self) -> int:
        return int(self._done.value)

    def consumed(self, n: int = 1) -> None:
        self._done.value += n
        self.last_progress = time.monotonic()
        if self._waiting.value and self._sent.value - self._done.value <= self.size // 2:
            with self._cond:
                self._cond.notify()

    def take(self, want: int, stop: Any) -> int:
        """Reserve up to ``want`` publish slots; 0 once ``stop`` is set."""
        if self._sent.value - self._done.value >= self.size:
            with self._cond:
                self._waiting.value = 1
                while self._sent.value - self._done.value > self.size // 2 and not stop.is_set():
                    self._cond.wait(0.05)  # bounded: covers a notify racing the flag
                self._waiting.value = 0
        if stop.is_set():
            return 0
        k = min(want, self.size - (self._sent.value - self._done.value))
        self._sent.value += k
        return k

    def wait_all(self, total: int, stall_s: float, deadline: float) -> str:
        """Block until ``total`` are consumed: 'complete', 'stalled' or 'timeout'."""
        while self.done < total:
            now = time.monotonic()
            if now - self.last_progress > stall_s:
                return "stalled"
            if now > deadline:
                return "timeout"
            time.sleep(0.01)  # the measuring thread only; 10 ms resolution on the elapsed time
        return "complete"


@dataclass
class StageResult:
    status: str  # complete | stalled | timeout
    consumed: int
    elapsed: float  # until the last message was consumed (or the last progress)

    @property
    def rate(self) -> float:
        return self.consumed / self.elapsed if self.elapsed > 0 else 0.0


def payloads(n: int, stations: list[tuple[str, int]]) -> list[tuple[str, bytes]]:
    """``n`` valid observations with distinct keys (station, interval_start)."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    out = []
    for i in range(n):
        sid, lanes = stations[i % len(stations)]
        start = t0 + timedelta(seconds=30 * (i // len(stations)))
        body = {
            "v": 1,
            "station_id": sid,
            "interval_start": start.isoformat().replace("+00:00", "Z"),
            "period_s": 30,
            "lanes": [
                {"lane": k, "count": 10 + k, "occupancy": 0.08, "speed_kph": 45.5}
                for k in range(1, lanes + 1)
            ],
            "status": "ok",
        }
        out.append((sid, orjson.dumps(body)))
    return out


def publish_all(
    ep: MqttEndpoint,
    prefix: str,
    msgs: list[tuple[str, bytes]],
    window: Window,
    ready: Any,
    go: Any,
    stop: Any,
) -> None:
    """Child process: connect, wait for ``go``, publish at QoS 1 within ``window``; return early
    when ``stop`` is set. paho's own in-flight limit is off (0): its bookkeeping scans every
    in-flight message on each PUBACK (a limit of 1000 caps publishing near 3k msg/s here), and
    the window already bounds unacknowledged publishes (paho loses messages past 65,535)."""
    client = make_client(ep, f"bench-pub-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(0)
    connect(client, ep)
    client.loop_start()
    infos: list[mqtt.MQTTMessageInfo] = []
    i = 0
    try:
        ready.set()
        go.wait()
        while i < len(msgs):
            k = window.take(len(msgs) - i, stop)
            if k == 0:
                return
            for sid, body in msgs[i : i + k]:
                infos.append(client.publish(f"{prefix}/stations/{sid}/obs", body, qos=1))
            i += k
        for info in infos[-window.size :]:  # earlier ones are acked: the consumer got them
            while not info.is_published() and not stop.is_set():
                info.wait_for_publish(0.25)
    finally:
        client.disconnect()
        client.loop_stop()


class Publisher:
    """The publishing child process, started (connected) before the clock starts."""

    def __init__(
        self, ep: MqttEndpoint, prefix: str, msgs: list[tuple[str, bytes]], window: Window
    ) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.go, self.stop = ctx.Event(), ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=publish_all,
            args=(ep, prefix, msgs, window, self.ready, self.go, self.stop),
            daemon=True,
        )
        self.proc.start()
        if not self.ready.wait(30):
            self.finish()
            raise SystemExit("publisher: not connected within 30 s")

    def finish(self) -> None:
        self.stop.set()
        self.go.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()


def read_dropped(ep: MqttEndpoint, settle_s: float = 2.0) -> int | None:
    """Mosquitto's broker-wide count of dropped messages (``$SYS``, retained, republished at
    most every sys_interval (10 s) and only when it changed): the last value seen in
    ``settle_s``. None if the broker publishes no such topic."""
    got: list[int] = []

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        got.append(int(m.payload))

    c = make_client(ep, f"bench-sys-{uuid.uuid4().hex[:6]}")
    c.on_message = on_message
    try:
        connect(c, ep)
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
    c.loop_start()
    c.subscribe(DROPPED_TOPIC, qos=0)
    time.sleep(settle_s)  # nothing to poll for: we want the latest value within this time
    c.disconnect()
    c.loop_stop()
    return got[-1] if got else None


def receive_only(
    ep: MqttEndpoint, msgs: list[tuple[str, bytes]], window_size: int, stall_s: float, limit: float
) -> StageResult:
    """A subscriber that only counts (paho acks QoS 1 itself after on_message)."""
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    window = Window(window_size)
    subscribed = threading.Event()
    sub = make_client(ep, f"bench-sub-{uuid.uuid4().hex[:6]}")
    sub.on_message = lambda *_a: window.consumed()
    sub.on_subscribe = lambda *_a: subscribed.set()
    connect(sub, ep)
    sub.loop_start()
    sub.subscribe(f"{prefix}/stations/+/obs", qos=1)
    if not subscribed.wait(10):
        raise SystemExit("receive-only: no SUBACK from the broker in 10 s")
    pub = Publisher(ep, prefix, msgs, window)
    t = time.monotonic()
    window.last_progress = t
    pub.go.set()
    status = window.wait_all(len(msgs), stall_s, t + limit)
    pub.finish()
    sub.disconnect()
    sub.loop_stop()
    return StageResult(status, window.done, window.last_progress - t)


def copy_rate(url: str, msgs: list[tuple[str, bytes]]) -> float:
    """Binary COPY of the same rows in 1k-row batches into a copy of the readings table."""
    import psycopg

    rows = []
    for _sid, body in msgs:
        o = orjson.loads(body)
        ts = datetime.fromisoformat(o["interval_start"])
        for lane in o["lanes"]:
            rows.append(
                (o["station_id"], lane["lane"], ts, 30, lane["count"], lane["occupancy"],
                 lane["speed_kph"], "ok", ts)
            )  # fmt: skip
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE copy_ref (LIKE readings INCLUDING ALL)")
        t = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(rows), 1000):
                with cur.copy(
                    "COPY copy_ref (station_id, lane, interval_start, period_s, count, occupancy, "
                    "speed_kph, status, received_at) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(
                        ["text", "int2", "timestamptz", "int2", "int4", "float8", "float8",
                         "text", "timestamptz"]
                    )  # fmt: skip
                    for r in rows[i : i + 1000]:
                        copy.write_row(r)
        conn.commit()
        elapsed = time.perf_counter() - t
    return len(rows) / elapsed


def counting_acks(items: Iterator[Message | None], window: Window) -> Iterator[Message | None]:
    """Wrap each message's ack so the window advances when ingest acks (after its commit)."""
    for m in items:
        if m is None or m.ack is None:
            yield m
            continue

        def ack(inner: Callable[[], None] = m.ack) -> None:
            inner()
            window.consumed()

        yield Message(m.topic, m.payload, ack)


def forget_session(ep: MqttEndpoint, client_id: str) -> None:
    """Ingest uses a persistent session; reconnecting with clean session removes it from the
    broker so benchmark runs leave no queues behind."""
    c = make_client(ep, client_id, clean_session=True)
    connect(c, ep)
    c.loop_start()
    c.disconnect()
    c.loop_stop()


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def ingest_stage(
    engine: Engine,
    ep: MqttEndpoint,
    msgs: list[tuple[str, bytes]],
    args: argparse.Namespace,
) -> tuple[StageResult, Pipeline]:
    prefix = f"bench/{uuid.uuid4().hex[:8]}/its/v1"
    settings = Settings(_env_file=None, topic_prefix=prefix, ingest_batch_size=args.batch_size)
    window = Window(args.window)
    stop = threading.Event()
    pipeline = Pipeline(engine, settings)
    client_id = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    source = MqttSource(settings, ep, client_id)
    source.start()
    if not source.subscribed.wait(15):
        raise SystemExit("ingest: no SUBACK from the broker in 15 s")
    worker = threading.Thread(
        target=pipeline.run, args=(counting_acks(source.messages(stop), window),), daemon=True
    )
    worker.start()
    pub = Publisher(ep, prefix, msgs, window)
    t = time.monotonic()
    window.last_progress = t
    pub.go.set()

    reporter_stop = threading.Event()

    def report() -> None:
        while not reporter_stop.wait(1.0):
            s = pipeline.stats
            log(
                f"    {window.done}/{len(msgs)} messages acked, {s.readings_inserted} rows, "
                f"{s.dead_letters} dead letters"
            )

    threading.Thread(target=report, daemon=True).start()
    status = window.wait_all(len(msgs), args.stall, t + args.timeout)
    reporter_stop.set()
    pub.finish()
    stop.set()
    worker.join(30)
    source.stop()
    forget_session(ep, client_id)
    return StageResult(status, window.done, window.last_progress - t), pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    ap.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument(
        "--window",
        type=int,
        default=500,
        help="unacknowledged messages allowed; window + messages per batch must stay below "
        "the broker's max_queued_messages (Debian default 1000)",
    )
    ap.add_argument("--batch-size", type=int, default=1200, help="ingest batch size (rows)")
    ap.add_argument("--stall", type=float, default=10.0, help="give up after N s without acks")
    ap.add_argument("--timeout", type=float, default=120.0, help="limit per MQTT stage (s)")
    args = ap.parse_args()
    ep = MqttEndpoint.parse(args.mqtt_url)

    dropped_before = read_dropped(ep)
    admin = make_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    name = f"its_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        net = load_network()
        migrate.upgrade_and_seed(engine, net)
        stations = [(s.station_id, s.lanes) for s in net.stations]
        msgs = payloads(args.messages, stations)
        expected_rows = sum(len(orjson.loads(b)["lanes"]) for _, b in msgs)

        log(f"1/3 paho receive-only, {len(msgs)} messages, window {args.window} ...")
        recv = receive_only(ep, msgs, args.window, args.stall, args.timeout)
        log(f"    {recv.rate:,.0f} msg/s ({recv.status}, {recv.consumed} received)")
        log(f"2/3 binary COPY of {expected_rows} rows ...")
        copy = copy_rate(url, msgs)
        log(f"    {copy:,.0f} rows/s")
        log(f"3/3 ingest end to end, {len(msgs)} messages, batch {args.batch_size} rows ...")
        ing, pipeline = ingest_stage(engine, ep, msgs, args)
        stored = count(engine, schema.readings)
        dead = count(engine, schema.dead_letters)
        log(f"    {ing.rate:,.0f} msg/s ({ing.status}, {stored}/{expected_rows} rows stored)")
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    ok = recv.status == ing.status == "complete" and stored == expected_rows and dead == 0
    dropped = None
    if not ok:
        log("    incomplete: waiting for the broker's next $SYS dropped-message count ...")
        after = read_dropped(ep, settle_s=11.0)
        if after is not None and dropped_before is not None:
            dropped = after - dropped_before
    result = {
        "bench": "ingest_rate",
        "status": "ok" if ok else "incomplete",
        "messages": len(msgs),
        "rows": expected_rows,
        "window": args.window,
        "batch_size": args.batch_size,
        "ingest_msg_per_s": round(ing.rate),
        "ingest_rows_per_s": round(stored / ing.elapsed) if ing.elapsed else 0,
        "ref_paho_receive_only_msg_per_s": round(recv.rate),
        "ref_pg_binary_copy_rows_per_s": round(copy),
        "ingest_vs_receive_only": round(ing.rate / recv.rate, 3) if recv.rate else None,
        "ingest_vs_copy": round(stored / ing.elapsed / copy, 3) if ing.elapsed else None,
        "rows_stored": stored,
        "lost_rows": expected_rows - stored,
        "lost_messages": len(msgs) - ing.consumed,
        "receive_only_lost_messages": len(msgs) - recv.consumed,
        "dead_letters": dead,
        "duplicates": pipeline.stats.duplicates,
        "broker_dropped": dropped,  # broker-wide $SYS delta; measured only when incomplete
    }
    print(orjson.dumps(result).decode(), flush=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
