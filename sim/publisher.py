"""The live publisher: every station is its own MQTT client, publishing one observation per
period on its own topic, paced by the simulated clock.

Why one connection per station: the contract's offline signal is each station's Last Will, which
the broker keeps per connection. A ``silent`` fault therefore kills that station's socket without
a DISCONNECT, and the broker itself publishes the retained ``offline`` state, exactly as when a
real roadside unit loses power. The 96 paho clients share one network thread
(:class:`sim.netloop.SharedLoop`): a ``loop_start`` thread per client made the threads fight
over the GIL and capped the rate near 1,000 obs/s (see ``bench/sim_publish_rate.py``).

With ``ITS_SIM_CREDENTIALS_FILE`` (written by ``its mqtt credentials``) each station logs in as
itself (``station.<id>``), so a broker with per-station ACLs accepts exactly its own topics.

A clean stop (the stop event) publishes a retained ``offline`` state for every connected station
and then disconnects cleanly, so the dashboard shows the stations deliberately offline rather than
online with data that stopped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt

from ingest.mqtt import connect, make_client
from its.config import MqttEndpoint, Settings
from its.contract import (
    Observation,
    StationObsTopic,
    StationStateTopic,
    serialise_observation,
    serialise_state,
)
from its.errors import ConfigError
from its.mqtt_auth import load_credentials
from its.network import Network, load_network
from sim.model import DEFAULT_PERIOD_S, TrafficModel, align, stable_key
from sim.netloop import SharedLoop
from sim.pacing import InflightWindow, RateLog, SimClock, default_start
from sim.scenario import Scenario

log = logging.getLogger("its.sim")

ScenarioArg = Scenario | Callable[[datetime], Scenario] | None
OnTick = Callable[[datetime, list[Observation]], None]
CONNECT_TIMEOUT_S = 15.0


@dataclass
class SimStats:
    """What a run did, returned when it stops."""

    start: datetime
    published: int = 0
    ticks: int = 0
    last_interval: datetime | None = None
    caught_up: bool = False
    dropped_connections: int = 0


def station_endpoints(
    settings: Settings, endpoint: MqttEndpoint, station_ids: list[str]
) -> dict[str, MqttEndpoint]:
    """Each station's login: its own from ``ITS_SIM_CREDENTIALS_FILE``, else ``endpoint``'s."""
    if settings.sim_credentials_file is None:
        return dict.fromkeys(station_ids, endpoint)
    creds = load_credentials(settings.sim_credentials_file)
    creds.check_prefix(settings.topic_prefix)
    logins = {}
    for sid in station_ids:
        user = creds.for_station(sid)
        logins[sid] = endpoint.login(user.username, user.password)
    return logins


def resolve_scenario(scenario: ScenarioArg, start: datetime) -> Scenario:
    """A scenario given as data, or as a function of the run start (``--demo``, ``+10m``)."""
    if scenario is None:
        return Scenario()
    return scenario(start) if callable(scenario) else scenario


class StationLink:
    """One station's MQTT connection, with its retained offline Last Will."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        prefix: str,
        station_id: str,
        clock: Callable[[], datetime],
        loop: SharedLoop,
    ) -> None:
        self.endpoint = endpoint
        self.loop = loop
        self.station_id = station_id
        self.obs_topic = str(StationObsTopic(prefix, station_id))
        self.state_topic = str(StationStateTopic(prefix, station_id))
        # stable per station and prefix: a second simulator on the same prefix takes over
        self.client_id = f"its-sim-{station_id}-{stable_key(prefix) % 16**8:08x}"
        self.clock = clock
        self.client: mqtt.Client | None = None
        self.refused: str | None = None  # the broker's reason, when it refused the login

    @property
    def alive(self) -> bool:
        return self.client is not None

    def open(self) -> None:
        will = (self.state_topic, serialise_state("offline"), 1, True)
        client = make_client(self.endpoint, self.client_id, will=will)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        self.loop.add(client)
        try:
            connect(client, self.endpoint)
        except Exception:
            self.loop.remove(client)
            raise
        self.client = client

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("sim: broker refused %s: %s", self.station_id, rc)
            self.refused = str(rc)
            return
        # on every (re)connect: the station announces itself
        client.publish(
            self.state_topic, serialise_state("online", self.clock()), qos=1, retain=True
        )

    def publish(self, obs: Observation) -> mqtt.MQTTMessageInfo:
        assert self.client is not None
        return self.client.publish(self.obs_topic, serialise_observation(obs), qos=1)

    def drop(self) -> None:
        """Die without a DISCONNECT: the broker publishes the Last Will (offline, retained)."""
        client, self.client = self.client, None
        if client is None:
            return
        self.loop.remove(client)
        sock = client.socket()
        if sock is not None:
            sock.close()

    def announce_offline(self) -> mqtt.MQTTMessageInfo | None:
        """Clean stop, step 1: say offline (retained) ourselves, so no Last Will is needed."""
        if self.client is None or not self.client.is_connected():
            return None
        return self.client.publish(
            self.state_topic, serialise_state("offline", self.clock()), qos=1, retain=True
        )

    def disconnect(self) -> None:
        """Clean stop, step 2: queue a DISCONNECT (the broker then discards the Last Will)."""
        if self.client is not None:
            self.loop.retire(self.client)  # gone on purpose: no reconnect
            self.client.disconnect()

    def close(self, timeout: float = 5.0) -> None:
        """Clean stop, step 3: once the DISCONNECT is written (paho then closes the socket),
        stop servicing the client."""
        client, self.client = self.client, None
        if client is None:
            return
        deadline = time.monotonic() + timeout
        while client.socket() is not None and client.want_write():
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        self.loop.remove(client)
        sock = client.socket()
        if sock is not None:
            sock.close()


def _shutdown(links: list[StationLink], timeout: float = 10.0) -> None:
    """Every station says offline, the acknowledgements are awaited, then all disconnect."""
    window = InflightWindow(len(links) + 1)
    for link in links:
        info = link.announce_offline()
        if info is not None:
            window.add(info)
    if links:
        links[0].loop.wake()
    if not window.drain(timeout):
        log.warning("sim: some offline states were not acknowledged")
    for link in links:
        link.disconnect()
    if links:
        links[0].loop.wake()
    # one deadline for all: a broker that stops answering must not cost 5 s per station
    deadline = time.monotonic() + timeout
    for link in links:
        link.close(timeout=max(deadline - time.monotonic(), 0.0))


def _connect_all(links: list[StationLink], stop: threading.Event) -> None:
    for link in links:
        link.open()
    deadline = CONNECT_TIMEOUT_S
    while deadline > 0 and not all(lk.client and lk.client.is_connected() for lk in links):
        if any(lk.refused for lk in links):
            break  # a refused login does not get better by waiting
        if stop.wait(0.05):
            return
        deadline -= 0.05
    refused = next((lk for lk in links if lk.refused), None)
    if refused is not None:
        raise ConfigError(
            f"the broker at {refused.endpoint.url} refused the login of simulated station "
            f"{refused.station_id} ({refused.endpoint.username or 'anonymous'}): "
            f"{refused.refused}; see ITS_SIM_CREDENTIALS_FILE in docs/mqtt.md"
        )
    missing = [lk.station_id for lk in links if not (lk.client and lk.client.is_connected())]
    if missing:
        raise ConfigError(
            f"{len(missing)} simulated stations could not connect to the broker at "
            f"{links[0].endpoint.url} within {CONNECT_TIMEOUT_S:.0f}s (e.g. {missing[0]})"
        )


def run_live(
    settings: Settings,
    endpoint: MqttEndpoint,
    stop: threading.Event,
    *,
    speed: float = 1.0,
    start: datetime | None = None,
    seed: int = 0,
    scenario: ScenarioArg = None,
    period_s: int = DEFAULT_PERIOD_S,
    on_tick: OnTick | None = None,
    network: Network | None = None,
    history: timedelta | None = None,
    window: int = 1000,
) -> SimStats:
    """Publish every station's observations until ``stop`` is set; return what was done.

    ``speed`` multiplies wall time; the simulated clock never passes the wall clock. Without a
    ``start``: now at ``speed`` <= 1, else ``history`` (6 h) ago, fast-forwarding until it
    catches up with real time. An interval is published once it is complete, stamped with its
    start. ``scenario`` may be a function of the resolved start (relative events).
    ``on_tick(interval_start, observations)`` is called after each interval is published.
    """
    if speed <= 0:
        raise ValueError("speed must be > 0")
    net = network or load_network(settings.network_file)
    if start is None:
        start = default_start(speed, period_s, history=history or timedelta(hours=6))
    start = align(start, period_s)
    scen = resolve_scenario(scenario, start)
    model = TrafficModel(net, seed=seed, scenario=scen, period_s=period_s)
    clock = SimClock(start, speed)
    stats = SimStats(start=start)
    logins = station_endpoints(settings, endpoint, [st.station_id for st in net.stations])
    loop = SharedLoop()
    links = {
        sid: StationLink(login, settings.topic_prefix, sid, clock.now, loop)
        for sid, login in logins.items()
    }
    log.info(
        "sim: %d stations on %s, prefix %s, start %s, speed %gx, seed %d, %d incidents, %d faults",
        len(links),
        endpoint.url,
        settings.topic_prefix,
        start.isoformat(),
        speed,
        seed,
        len(scen.incidents),
        len(scen.faults),
    )
    inflight = InflightWindow(window, stop)
    rate = RateLog()
    step = timedelta(seconds=period_s)
    next_t = start
    try:
        _connect_all(list(links.values()), stop)
        while not stop.is_set():
            while next_t + step <= clock.now() and not stop.is_set():
                observations = _tick(model, links, next_t, inflight, stats)
                if on_tick is not None:
                    on_tick(next_t, observations)
                next_t += step
                rate.maybe(stats.published, next_t)
            if clock.caught_up and not stats.caught_up and not stop.is_set():
                stats.caught_up = True
                log.info("sim: caught up with real time at %s; continuing live", next_t.isoformat())
            rate.maybe(stats.published, next_t)
            stop.wait(min(max(clock.seconds_until(next_t + step), 0.005), 1.0))
    finally:
        inflight.drain(timeout=10.0)
        _shutdown(list(links.values()))
        loop.close()
        rate.maybe(stats.published, next_t, force=True)
    return stats


def _tick(
    model: TrafficModel,
    links: dict[str, StationLink],
    t: datetime,
    inflight: InflightWindow,
    stats: SimStats,
) -> list[Observation]:
    """Publish interval ``t`` for every station, opening and killing connections as faults say."""
    published = []
    for station in model.network.stations:
        link = links[station.station_id]
        silent = model.scenario.silent_at(station.station_id, t)
        if silent and link.alive:
            # what it sent before is delivered; then the power cut
            inflight.settle(link)
            log.info(
                "sim: %s goes silent at %s (connection dropped)", station.station_id, t.isoformat()
            )
            link.drop()
            stats.dropped_connections += 1
        elif not silent and not link.alive:
            log.info("sim: %s is back at %s", station.station_id, t.isoformat())
            link.open()
        if silent:
            continue
        obs = model.observation(station, t)
        if obs is None:
            continue
        inflight.add(link.publish(obs), owner=link)
        published.append(obs)
    links[model.network.stations[0].station_id].loop.wake()  # one wake for the whole interval
    stats.published += len(published)
    stats.ticks += 1
    stats.last_interval = t
    return published


def run_in_thread(
    settings: Settings, endpoint: MqttEndpoint, **kwargs: object
) -> tuple[threading.Thread, threading.Event, dict[str, object]]:
    """Start :func:`run_live` in a daemon thread (for ``its up``): returns the thread, its stop
    event and a dict that receives ``stats`` or ``error`` when the run ends."""
    stop = threading.Event()
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["stats"] = run_live(settings, endpoint, stop, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - reported to the caller through result
            log.exception("sim: stopped by an error")
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"its-sim-{uuid.uuid4().hex[:6]}", daemon=True)
    thread.start()
    return thread, stop, result


__all__ = ["SimStats", "StationLink", "run_in_thread", "run_live", "UTC"]
