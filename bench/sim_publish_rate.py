"""Simulator publish rate through Mosquitto, against raw paho references measured in the same run.

    python bench/sim_publish_rate.py [--url mqtt://127.0.0.1:1883] [--intervals 300]

Measures, on the bundled network (96 stations):
- ``model_obs_per_s``: the traffic model alone (observations built and serialised, no MQTT);
- ``sim_obs_per_s``: ``sim.publisher.run_live`` fast-forwarding history (one client per station
  on the shared network loop, QoS 1, window 1000), from the first to the last interval;
- ``ref_raw_shared_loop_obs_per_s``: the same 96 clients, shared loop, QoS 1 and window,
  publishing pre-serialised payloads: the transport's ceiling for the simulator's design;
- ``ref_raw_loop_start_obs_per_s``: the same with a ``loop_start`` thread per client (the
  design the shared loop replaced);
- ``ref_raw_one_client_obs_per_s``: one paho client with ``loop_start``, same payloads;
- ``backfill_obs_per_s``: ``sim.backfill`` (one gateway batch per interval) with no subscriber.
Progress goes to stderr; one JSON line to stdout. Acknowledged by the broker = published.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from ingest.mqtt import connect, make_client  # noqa: E402
from its.config import MqttEndpoint, Settings  # noqa: E402
from its.contract import serialise_observation  # noqa: E402
from its.network import load_network  # noqa: E402
from sim.backfill import backfill  # noqa: E402
from sim.model import TrafficModel, align  # noqa: E402
from sim.netloop import SharedLoop  # noqa: E402
from sim.pacing import InflightWindow  # noqa: E402
from sim.publisher import run_live  # noqa: E402

WINDOW = 1000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_rate(intervals: int) -> tuple[float, list[list[tuple[str, bytes]]]]:
    net = load_network()
    model = TrafficModel(net, seed=7)
    t0 = align(datetime.now(UTC) - timedelta(days=2))
    ticks = [t0 + timedelta(seconds=30 * i) for i in range(intervals)]
    start = time.perf_counter()
    payloads = [
        [(o.station_id, serialise_observation(o)) for o in model.observations(t)] for t in ticks
    ]
    n = sum(len(p) for p in payloads)
    return n / (time.perf_counter() - start), payloads


def _clients(ep: MqttEndpoint, ids: list[str], shared: SharedLoop | None) -> dict:
    clients = {}
    for sid in ids:
        c = make_client(ep, f"bench-{sid}-{uuid.uuid4().hex[:6]}")
        c.max_inflight_messages_set(100)
        if shared is not None:
            shared.add(c)
        connect(c, ep)
        if shared is None:
            c.loop_start()
        clients[sid] = c
    deadline = time.monotonic() + 15
    while not all(c.is_connected() for c in clients.values()):
        if time.monotonic() > deadline:
            raise SystemExit("bench: clients did not connect")
        time.sleep(0.01)
    return clients


def raw_rate(ep: MqttEndpoint, payloads: list, mode: str) -> float:
    prefix = f"bench/{uuid.uuid4().hex[:8]}/its/v1"
    ids = [sid for sid, _ in payloads[0]]
    shared = SharedLoop() if mode == "shared" else None
    if mode == "one":
        one = _clients(ep, ["one"], None)["one"]
        clients = dict.fromkeys(ids, one)
    else:
        clients = _clients(ep, ids, shared)
    window = InflightWindow(WINDOW)
    start = time.perf_counter()
    n = 0
    for tick in payloads:
        for sid, body in tick:
            window.add(clients[sid].publish(f"{prefix}/stations/{sid}/obs", body, qos=1))
            n += 1
        if shared is not None:
            shared.wake()
    window.drain(60)
    rate = n / (time.perf_counter() - start)
    for c in set(clients.values()):
        c.disconnect()
        if shared is None:
            c.loop_stop()
    if shared is not None:
        time.sleep(0.2)
        shared.close()
    return rate


def sim_rate(ep: MqttEndpoint, intervals: int) -> float:
    settings = Settings(_env_file=None, topic_prefix=f"bench/{uuid.uuid4().hex[:8]}/its/v1")
    stop = threading.Event()
    marks: list[float] = []
    counts: list[int] = []

    def on_tick(_t: datetime, obs: list) -> None:
        marks.append(time.perf_counter())
        counts.append(len(obs))
        if len(marks) >= intervals:
            stop.set()

    start = datetime.now(UTC) - timedelta(seconds=30 * (intervals + 20))
    run_live(settings, ep, stop, speed=1e6, start=start, seed=7, on_tick=on_tick)
    _clear_states(ep, settings.topic_prefix)
    return sum(counts[1:]) / (marks[-1] - marks[0])


def _clear_states(ep: MqttEndpoint, prefix: str) -> None:
    """Leave no retained station states behind on the broker."""
    c = _clients(ep, ["cleaner"], None)["cleaner"]
    infos = [
        c.publish(f"{prefix}/stations/{s.station_id}/state", b"", qos=1, retain=True)
        for s in load_network().stations
    ]
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def backfill_rate(ep: MqttEndpoint, intervals: int) -> float:
    settings = Settings(_env_file=None, topic_prefix=f"bench/{uuid.uuid4().hex[:8]}/its/v1")
    stats = backfill(settings, ep, hours=intervals * 30 / 3600, seed=7, progress=False)
    return stats.rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="mqtt://127.0.0.1:1883")
    ap.add_argument("--intervals", type=int, default=300, help="30 s intervals of 96 stations")
    args = ap.parse_args()
    ep = MqttEndpoint.parse(args.url)
    log("bench: model")
    model, payloads = model_rate(args.intervals)
    log("bench: raw paho, one client")
    one = raw_rate(ep, payloads, "one")
    log("bench: raw paho, 96 clients, loop_start each")
    threads = raw_rate(ep, payloads, "threads")
    log("bench: raw paho, 96 clients, shared loop")
    shared = raw_rate(ep, payloads, "shared")
    log("bench: simulator run_live")
    sim = sim_rate(ep, args.intervals)
    log("bench: backfill")
    bf = backfill_rate(ep, args.intervals)
    out = {
        "bench": "sim_publish_rate",
        "broker": ep.url,
        "stations": len(payloads[0]),
        "intervals": args.intervals,
        "qos": 1,
        "window": WINDOW,
        "sim_obs_per_s": round(sim),
        "ref_raw_shared_loop_obs_per_s": round(shared),
        "sim_vs_raw_shared_loop": round(sim / shared, 3),
        "ref_raw_loop_start_obs_per_s": round(threads),
        "ref_raw_one_client_obs_per_s": round(one),
        "model_obs_per_s": round(model),
        "backfill_obs_per_s": round(bf),
    }
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
