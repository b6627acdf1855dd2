"""The ``its`` command: the composition root that wires ingest, the simulator, the API, the
dashboard and the alerts evaluator together. Each subcommand imports what it needs inside itself,
so ``its --help`` is instant and ``its db`` does not pull in Dash.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

from its.cli_auth import audit_cmd, keys_app, signin_url, users_app
from its.cli_export import export_cmd
from its.config import MqttEndpoint, Settings, get_settings

app = typer.Typer(
    help="ITS monitoring platform: MQTT ingest, time-series store, traffic API, operator dashboard "
    "and a traffic simulator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="Schema migrations, the road network and the roll-ups.", no_args_is_help=True
)
sim_app = typer.Typer(help="Simulated sensor traffic over MQTT.", no_args_is_help=True)
mqtt_app = typer.Typer(
    help="Broker logins, topic ACLs and TLS certificates for sensors and services.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(sim_app, name="sim")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.command("audit")(audit_cmd)
app.add_typer(mqtt_app, name="mqtt")
app.command("export")(export_cmd)

log = logging.getLogger("its")
STOP_TIMEOUT_S = 30.0  # how long `its up` waits for its components to finish after Ctrl-C


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("amqtt", "transitions", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic's ValidationError names the bad variable
        raise typer.BadParameter(f"invalid ITS_ settings: {exc}") from None


def _stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM, so every component can flush and exit cleanly."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _broker(settings: Settings) -> MqttEndpoint | None:
    """``ITS_MQTT_URL`` with its credential settings, or a clear error naming what is wrong."""
    from its.errors import ConfigError

    try:
        return settings.mqtt_endpoint
    except (ConfigError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None


def _require_broker(settings: Settings) -> MqttEndpoint:
    endpoint = _broker(settings)
    if endpoint is None:
        raise typer.BadParameter(
            "ITS_MQTT_URL is not set: point it at a broker (mqtt://host:1883), "
            "or use `its up`, which runs the embedded one"
        )
    return endpoint


def _engine(settings: Settings):  # noqa: ANN202 - an sqlalchemy Engine
    from its.db.engine import make_engine

    return make_engine(settings.resolved_database_url)


def _migrated_store(settings: Settings):  # noqa: ANN202 - (Engine, Network)
    """The engine and road network every long-running component starts from: the schema is
    migrated and the network loaded where none is, so any component can be started first."""
    from its.db import migrate
    from its.network import load_network

    engine = _engine(settings)
    network = load_network(settings.network_file)
    migrate.upgrade_and_seed(engine, network)
    _timescale_rollups(settings, engine, network.timezone)
    return engine, network


def _timescale_rollups(settings: Settings, engine, tz: str) -> None:  # noqa: ANN001
    """On TimescaleDB: the continuous aggregates and the retention policy (docs/timescaledb.md)."""
    from its.db import caggs

    caggs.setup(engine, tz, retention_raw_days=settings.retention_raw_days)


# --------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema, and load the road network where none is loaded."""
    from its.db import migrate
    from its.db.engine import detect_backend
    from its.network import load_network

    _setup_logging()
    settings = _settings()
    engine = _engine(settings)
    network = load_network(settings.network_file)
    loaded = migrate.upgrade_and_seed(engine, network)
    _timescale_rollups(settings, engine, network.timezone)
    typer.echo(
        f"schema at {migrate.current_revision(engine)} on {detect_backend(engine).value}; "
        + (f"loaded {loaded} stations" if loaded else "road network already loaded")
    )


@db_app.command("check")
def db_check() -> None:
    """Fail if the schema models and the migrations have drifted apart."""
    from its.db import migrate

    migrate.check(_engine(_settings()))
    typer.echo("models and migrations agree")


@db_app.command("load-network")
def db_load_network(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="GeoJSON network")],
) -> None:
    """Replace the road network with a GeoJSON file (see docs/network.md); readings are kept."""
    from its.db import migrate, rollup
    from its.network import load_network

    net = load_network(path)
    engine = _engine(_settings())
    migrate.upgrade(engine)
    with engine.begin() as conn:
        n = migrate.load_network(conn, net, replace=True)
        rollup.rebuild_targets(conn)  # stations may have moved between segments
    typer.echo(f"loaded {len(net.segments)} segments and {n} stations from {path}")


# --------------------------------------------------------------------------- mqtt


@mqtt_app.command("credentials")
def mqtt_credentials(
    out: Annotated[
        Path,
        typer.Option(
            file_okay=False,
            envvar="ITS_MQTT_CREDENTIALS_DIR",
            help="Directory for credentials.json (0600), passwd and acl (Mosquitto's files).",
        ),
    ] = Path("deploy/mqtt"),
    gateway: Annotated[
        list[str] | None,
        typer.Option(help="A gateway id to give a login (repeatable; kept on later runs)."),
    ] = None,
    rotate: Annotated[bool, typer.Option(help="New passwords for every user.")] = False,
    rotate_user: Annotated[
        list[str] | None, typer.Option(help="New password for this user (repeatable).")
    ] = None,
    revoke: Annotated[
        list[str] | None, typer.Option(help="Remove this user, e.g. gateway.gw-7 (repeatable).")
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Also set ITS_MQTT_INGEST_PASSWORD and ITS_MQTT_ALERTS_PASSWORD in this .env "
            "file (docker-compose.yml reads them from there).",
        ),
    ] = None,
) -> None:
    """Generate broker logins from the road network: one per station and gateway, plus
    its-ingest, its-alerts and its-monitor, with the topic ACL each may use (docs/mqtt.md).

    Re-running keeps existing passwords, adds logins for new stations and removes those of
    stations no longer in the network (ITS_NETWORK_FILE). Restart or SIGHUP Mosquitto after.
    """
    from its.errors import ConfigError
    from its.mqtt_auth import (
        CREDENTIALS_FILE,
        Role,
        load_credentials,
        plan_credentials,
        write_broker_files,
    )
    from its.network import load_network

    settings = _settings()
    path = out / CREDENTIALS_FILE
    try:
        existing = load_credentials(path) if path.exists() else None
        creds, changes = plan_credentials(
            settings.topic_prefix,
            [st.station_id for st in load_network(settings.network_file).stations],
            gateway or [],
            existing=existing,
            rotate=rotate,
            rotate_users=rotate_user or [],
            revoke=revoke or [],
        )
        files = write_broker_files(creds, out)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    if env_file is not None:
        from dotenv import set_key

        env_file.touch(mode=0o600, exist_ok=True)
        for var, role in (
            ("ITS_MQTT_INGEST_PASSWORD", Role.INGEST),
            ("ITS_MQTT_ALERTS_PASSWORD", Role.ALERTS),
        ):
            set_key(env_file, var, creds.for_service(role).password, quote_mode="never")
    typer.echo(
        f"{len(creds.users)} MQTT users for prefix {creds.prefix}: {len(changes.added)} added, "
        f"{len(changes.rotated)} rotated, {len(changes.removed)} removed, {changes.kept} kept"
    )
    for name in changes.removed:
        typer.echo(f"  removed {name}")
    typer.echo(
        f"credentials: {files['credentials']} (keep it secret)\n"
        f"mosquitto:   password_file {files['password_file']}, acl_file {files['acl_file']}"
    )


@mqtt_app.command("self-signed")
def mqtt_self_signed(
    host: Annotated[
        list[str],
        typer.Option(help="Host name or IP address clients use to reach the broker (repeatable)."),
    ],
    out: Annotated[
        Path, typer.Option(file_okay=False, help="Directory for ca.crt, server.crt and keys.")
    ] = Path("deploy/tls"),
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 365,
) -> None:
    """A private CA and a broker certificate for a TLS trial (clients trust ca.crt through
    ITS_MQTT_CA_FILE). Use your organisation's certificates in production."""
    from its.mqtt_tls import make_trial_certificates

    files = make_trial_certificates(out, host, days)
    typer.echo(
        f"CA certificate {files.ca_cert} (give to clients), broker certificate {files.cert} "
        f"and key {files.key} for {', '.join(host)}; valid {days} days"
    )


@db_app.command("rollup")
def db_rollup(
    batch: Annotated[
        int, typer.Option(min=1, max=20_000, help="Dirty keys per transaction.")
    ] = 5000,
    rebuild: Annotated[
        bool,
        typer.Option(
            help="Forget every roll-up and rebuild all from the raw rows (after changing the "
            "network's time zone, or deleting raw rows that should leave the roll-ups too)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar (only on a terminal).")] = True,
) -> None:
    """Roll up every dirty bucket now (a manual catch-up, e.g. after a bulk load), then exit."""
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from its.db import rollup

    _setup_logging()
    settings = _settings()
    engine, network = _migrated_store(settings)
    if rebuild:
        with engine.begin() as conn:
            rollup.rebuild(conn, network.timezone)
    with engine.connect() as conn:
        pending = rollup.pending(conn)
    started = time.monotonic()
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, TimeRemainingColumn(), disable=not (progress and sys.stderr.isatty())
    ) as bar:
        task = bar.add_task("rolling up", total=pending)
        done = rollup.catch_up(
            engine, network.timezone, batch=batch, progress=lambda n: bar.advance(task, n)
        )
    typer.echo(
        f"rolled up {done} dirty keys in {time.monotonic() - started:.1f} s "
        f"(hours and days in {network.timezone})"
    )


def _stderr_progress(enabled: bool, unit: str = ""):  # noqa: ANN202 - a rich Progress
    """A progress bar on stderr (stdout keeps the summary), shown only on a terminal."""
    import sys

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    count = (
        (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
    )
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *count,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not (enabled and sys.stderr.isatty()),
    )


@db_app.command("retention")
def db_retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar (only on a terminal).")] = True,
) -> None:
    """Delete raw readings older than ITS_RETENTION_RAW_DAYS (once rolled up; the roll-ups are
    kept) and dead letters older than ITS_RETENTION_DEAD_LETTER_DAYS, in small batches."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from its.db import retention
    from its.db.schema import readings

    _setup_logging()
    settings = _settings()
    engine, _network = _migrated_store(settings)
    now = datetime.now(UTC)
    horizon = retention.horizons.raw_horizon(now, settings.retention_raw_days)
    oldest = None
    if horizon is not None and not dry_run:
        with engine.connect() as conn:
            oldest = conn.execute(
                select(func.min(readings.c.interval_start)).where(
                    readings.c.interval_start >= retention.ROLLUP_START
                )
            ).scalar()
    with _stderr_progress(progress) as bar:
        total = 0
        if oldest is not None and horizon is not None and oldest < horizon:
            total = int((horizon - oldest) / retention.FIVE_MIN) + 1
        task = bar.add_task("retention", total=total or None)
        done = {"at": oldest}

        def advance(bucket: datetime) -> None:
            # buckets passed, gaps included, so the bar ends at the horizon
            last = done["at"] or bucket
            bar.advance(task, max(int((bucket - last) / retention.FIVE_MIN), 0) + 1)
            done["at"] = bucket + retention.FIVE_MIN

        stats = retention.run_retention(
            engine, settings, now=now, dry_run=dry_run, progress=advance
        )
    typer.echo(stats.summary())


def _retention_worker(settings: Settings, engine, stop: threading.Event):  # noqa: ANN001, ANN202
    """The retention clean-up as a thread target, or None where ITS_RETENTION_INTERVAL_S is 0
    or nothing is to be cleaned."""
    if not settings.retention_interval_s:
        return None
    if not (settings.retention_raw_days or settings.retention_dead_letter_days):
        return None
    from its.db import retention

    return lambda: retention.run_worker(
        engine, settings, stop, interval_s=settings.retention_interval_s
    )


def _rollup_worker(settings: Settings, engine, network, stop: threading.Event):  # noqa: ANN001, ANN202
    """The roll-up worker as a thread target, or None where ITS_ROLLUP_INTERVAL_S is 0."""
    if not settings.rollup_interval_s:
        return None
    from its.db import rollup

    return lambda: rollup.run_worker(
        engine, network.timezone, stop, interval_s=settings.rollup_interval_s
    )


# --------------------------------------------------------------------------- import


@app.command("import")
def import_cmd(
    files: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="NDJSON or CSV files, optionally .gz (docs/storage.md).",
        ),
    ],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="ndjson or csv (default: from each file's name)."),
    ] = None,
    accept_old: Annotated[
        bool,
        typer.Option(
            "--accept-old",
            help="Also load readings older than ITS_RETENTION_RAW_DAYS (history for the "
            "roll-ups; the clean-up deletes their raw rows once rolled up).",
        ),
    ] = False,
    batch_rows: Annotated[
        int, typer.Option(min=100, max=1_000_000, help="Readings per transaction.")
    ] = 50_000,
    rollup_after: Annotated[
        bool,
        typer.Option(
            "--rollup/--no-rollup",
            help="Roll up what the import touched before exiting (as `its db rollup`), so the "
            "API answers from the roll-ups at once.",
        ),
    ] = True,
    progress: Annotated[bool, typer.Option(help="Progress bars (only on a terminal).")] = True,
) -> None:
    """Load history from files: validated as ingest validates messages (refused lines become
    dead letters with the reason), exactly once however often a file is loaded."""
    from its.db import rollup
    from its.errors import ImportFileError
    from its.importer.load import Importer

    _setup_logging()
    settings = _settings()
    engine, network = _migrated_store(settings)
    importer = Importer(engine, settings, accept_old=accept_old, batch_rows=batch_rows)
    stop = _stop_on_signals()
    try:
        sources = importer.sources(files, fmt)
        with _stderr_progress(progress, "bytes") as bar:
            task = bar.add_task("import", total=sum(s.size for s in sources))
            importer.progress = lambda n: bar.advance(task, n)
            stats = importer.run(sources, stop)
    except ImportFileError as exc:
        typer.echo(f"its import: {exc}", err=True)
        typer.echo(importer.stats.summary(), err=True)
        raise typer.Exit(2) from None
    typer.echo(stats.summary())
    if stop.is_set():
        typer.echo("stopped early: run the same command again to load the rest", err=True)
        raise typer.Exit(1)
    if rollup_after:
        with engine.connect() as conn:
            pending = rollup.pending(conn)
        started = time.monotonic()
        with _stderr_progress(progress) as bar:
            task = bar.add_task("rolling up", total=pending)
            done = rollup.catch_up(
                engine, network.timezone, progress=lambda n: bar.advance(task, n), stop=stop
            )
        typer.echo(f"rolled up {done} dirty keys in {time.monotonic() - started:.1f} s")


# --------------------------------------------------------------------------- ingest


@app.command("ingest")
def ingest_cmd(
    worker_id: Annotated[
        str | None,
        typer.Option(
            help="This worker's name, unique per broker and kept across restarts (default "
            "ITS_INGEST_WORKER_ID): its MQTT client id is its-ingest-<worker id>. Required with "
            "ITS_INGEST_SHARE_GROUP.",
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            envvar="ITS_INGEST_CLIENT_ID",
            help="Raw MQTT client id, overriding the one derived from the worker id.",
        ),
    ] = None,
    drain: Annotated[
        bool,
        typer.Option(
            "--drain",
            help="Retire the worker named by --worker-id (stopped first): store everything the "
            "broker queued for it, end its session, and exit.",
        ),
    ] = False,
) -> None:
    """Subscribe to sensor observations and store them (batched, idempotent, ack after commit).

    Invalid messages go to the dead_letters table with their reason. Ctrl-C or SIGTERM flushes the
    pending batch and exits cleanly. With --drain, retires a worker instead (docs/ingest.md).
    """
    from ingest.service import DrainError, drain_worker, run_ingest, worker_client_id
    from its.config import WORKER_ID_RE
    from its.errors import ConfigError

    _setup_logging()
    settings = _settings()
    if worker_id is not None:
        if not WORKER_ID_RE.match(worker_id):
            raise typer.BadParameter(
                "1-64 letters, digits, '_', '.', '-', starting with a letter or digit",
                param_hint="--worker-id",
            )
        settings = settings.model_copy(update={"ingest_worker_id": worker_id})
    if drain and not (client_id or settings.ingest_worker_id):
        raise typer.BadParameter("name the worker to retire", param_hint="--worker-id")
    try:
        client_id = client_id or worker_client_id(settings)
    except ConfigError as exc:
        typer.echo(f"its ingest: {exc}", err=True)
        raise typer.Exit(2) from None
    endpoint = _require_broker(settings)
    engine, network = _migrated_store(settings)
    if drain:
        try:
            stats = drain_worker(settings, endpoint, client_id, engine=engine)
        except DrainError as exc:
            typer.echo(f"its ingest --drain: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(
            f"retired {client_id}: {stats.messages} messages, {stats.readings_inserted} readings "
            f"stored, {stats.duplicates} duplicates, {stats.dead_letters} dead letters; "
            "its session is ended"
        )
        return
    from its.telemetry import IngestMetrics

    registry = _metrics_registry(settings, "ingest")
    metrics = IngestMetrics(registry) if registry is not None else None
    stop = _stop_on_signals()
    worker = _rollup_worker(settings, engine, network, stop)
    cleaner = _retention_worker(settings, engine, stop)
    background = [
        _Component(name, target, stop)
        for name, target in (("rollup", worker), ("retention", cleaner))
        if target is not None
    ]
    for component in background:
        component.start()
    stats = run_ingest(
        settings, endpoint, stop, engine=engine, client_id=client_id, metrics=metrics
    )
    stop.set()
    for component in background:
        component.join(timeout=STOP_TIMEOUT_S)
    typer.echo(
        f"ingest stopped: {stats.messages} messages, {stats.readings_inserted} readings stored, "
        f"{stats.duplicates} duplicates, {stats.dead_letters} dead letters"
    )


def _metrics_registry(settings: Settings, command: str):  # noqa: ANN202 - CollectorRegistry | None
    """A registry served at http://ITS_METRICS_HOST:ITS_METRICS_PORT/metrics, or None when
    ITS_METRICS_PORT is unset (docs/observability.md)."""
    from prometheus_client import CollectorRegistry

    from its.telemetry import serve

    if settings.metrics_port is None:
        return None
    registry = CollectorRegistry()
    try:
        serve(registry, settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
            f"({exc.strerror or exc}): set another ITS_METRICS_PORT for its {command}"
        ) from None
    return registry


# --------------------------------------------------------------------------- web


def build_web_app(settings: Settings, *, engine=None, network=None, metrics_registry=None):  # noqa: ANN001, ANN201
    """The web process's app: the API (``/api/v1``, ``/docs``, ``/healthz``) and the Dash
    dashboard at ``/`` on one FastAPI app, sharing one engine and one road network.

    The body size limit (``ITS_HTTP_MAX_BODY_BYTES``) is added last, which makes it the outermost
    middleware: Dash's own middleware reads JSON bodies before its routes run, so a limit inside
    it would come too late for ``/_dash-update-component``."""
    from dashboard.app import create_dash
    from its.api.app import create_app
    from its.api.limits import BodySizeLimitMiddleware
    from its.api.pages import SessionGate

    api = create_app(settings, engine=engine, network=network, metrics_registry=metrics_registry)
    create_dash(api, settings=settings, engine=api.state.engine, network=api.state.network)
    # Added after Dash's own middleware, so it runs first: no session, no dashboard.
    api.add_middleware(SessionGate, engine=api.state.engine)
    # Added last, so outermost: an oversized body is refused before anything reads it.
    api.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.http_max_body_bytes)
    return api


def _web_server(settings: Settings, web_app):  # noqa: ANN001, ANN202 - a uvicorn.Server
    import uvicorn

    config = uvicorn.Config(
        web_app,
        host=settings.web_host,
        port=settings.web_port,
        log_level="warning",
        access_log=False,
        # a browser tab holding a connection open must not keep the process from stopping
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def _check_port_free(host: str, port: int) -> None:
    from ingest.broker import port_is_free

    if not port_is_free(port, host):
        raise typer.BadParameter(
            f"port {port} on {host} is in use: stop what holds it or set ITS_WEB_PORT"
        )


@app.command("web")
def web_cmd() -> None:
    """Serve the API under /api/v1 (OpenAPI at /docs) and the operator dashboard at /."""

    _setup_logging()
    settings = _settings()
    _check_port_free(settings.web_host, settings.web_port)
    engine, network = _migrated_store(settings)
    server = _web_server(settings, build_web_app(settings, engine=engine, network=network))
    typer.echo(f"dashboard: http://{settings.web_host}:{settings.web_port}/")
    if not _has_accounts(engine):
        typer.echo(
            "no accounts yet: create an administrator with `its users add NAME --role admin`"
        )
    server.run()


def _has_accounts(engine) -> bool:  # noqa: ANN001
    from its.auth.users import count_users

    with engine.connect() as conn:
        return count_users(conn) > 0


# --------------------------------------------------------------------------- up


def _alert_publisher(settings: Settings, endpoint: MqttEndpoint):  # noqa: ANN202
    """A function that publishes alert events over MQTT (QoS 1), and a function to close it."""
    from ingest.mqtt import connect, make_client

    # a unique id: a leader and its standby must not kick each other off the broker
    client = make_client(endpoint, f"its-alerts-{uuid.uuid4().hex[:10]}")
    connect(client, endpoint)
    client.loop_start()

    def publish(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=1)

    def close() -> None:
        client.disconnect()
        client.loop_stop()

    return publish, close


class _Component(threading.Thread):
    """A component of ``its up`` in a thread; an error stops the whole system (one Ctrl-C or one
    failure: everything stops together)."""

    def __init__(self, name: str, target, stop: threading.Event) -> None:  # noqa: ANN001
        super().__init__(name=f"its-{name}", daemon=True)
        self._target_fn = target
        self._stop_all = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # noqa: BLE001 - reported, then everything stops
            self.error = exc
            log.exception("%s failed; stopping everything", self.name)
        finally:
            self._stop_all.set()


def _local_signin_link(settings: Settings, engine) -> str:  # noqa: ANN001
    """Like Jupyter's token URL: create the local admin on a store without accounts, and a fresh
    one-time sign-in link for it on every start."""
    from datetime import timedelta

    from its.auth import sessions, users

    with engine.begin() as conn:
        admin = users.ensure_local_admin(conn)
        if admin is None:
            return "sign in at /login with your account (`its users add` makes one)"
        token = sessions.create_signin_link(
            conn, admin, lifetime=timedelta(seconds=settings.signin_link_lifetime_s)
        )
    minutes = settings.signin_link_lifetime_s // 60
    return (
        f"sign in: {signin_url(settings, token)}   "
        f"(one-time link for {admin.username}, valid {minutes} min)"
    )


def _embedded_logins(settings: Settings, credentials: Path):  # noqa: ANN202
    """Ingest's and the alerts publisher's logins (MqttUser) on an embedded broker that
    enforces ``credentials``, checked before the broker starts."""
    from its.errors import ConfigError
    from its.mqtt_auth import Role, load_credentials

    try:
        creds = load_credentials(credentials)
        creds.check_prefix(settings.topic_prefix)
        return creds.for_service(Role.INGEST), creds.for_service(Role.ALERTS)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="ITS_EMBEDDED_MQTT_CREDENTIALS") from None


@app.command("up")
def up_cmd(
    speed: Annotated[
        float,
        typer.Option(min=0.1, max=3600, envvar="ITS_SIM_SPEED", help="Simulated time per second."),
    ] = 60.0,
    sim: Annotated[
        bool, typer.Option(help="Run the traffic simulator (off: only real sensors).")
    ] = True,
    demo: Annotated[
        bool, typer.Option(help="Add the demo incident and broken sensors to the simulation.")
    ] = True,
    seed: Annotated[int, typer.Option(envvar="ITS_SIM_SEED")] = 0,
) -> None:
    """Run everything on one machine: broker (embedded unless ITS_MQTT_URL is set), ingest,
    simulator, alerts evaluator and the web process. One Ctrl-C stops all."""
    from ingest.broker import EmbeddedBroker
    from ingest.service import run_ingest
    from its.alerts.evaluator import run_evaluator
    from its.db.engine import detect_backend

    _setup_logging()
    settings = _settings()
    _check_port_free(settings.web_host, settings.web_port)
    engine, network = _migrated_store(settings)
    log.info("store: %s (%s)", engine.url.render_as_string(), detect_backend(engine).value)
    signin = _local_signin_link(settings, engine)

    broker = None
    endpoint = _broker(settings)
    ingest_endpoint = alerts_endpoint = endpoint
    if endpoint is None:
        credentials = settings.embedded_mqtt_credentials
        logins = _embedded_logins(settings, credentials) if credentials else None
        broker = EmbeddedBroker(port=settings.embedded_mqtt_port, credentials_file=credentials)
        endpoint = broker.start()
        settings = settings.model_copy(update={"mqtt_url": endpoint.url})
        ingest_endpoint = alerts_endpoint = endpoint
        if logins is None:
            typer.echo(
                f"MQTT broker (embedded, 127.0.0.1 only, anonymous): {endpoint.url}  "
                "<- point sensors here"
            )
        else:
            ingest_endpoint, alerts_endpoint = (
                endpoint.login(u.username, u.password) for u in logins
            )
            sim_creds = settings.sim_credentials_file or credentials
            settings = settings.model_copy(update={"sim_credentials_file": sim_creds})
            typer.echo(
                f"MQTT broker (embedded, 127.0.0.1 only): {endpoint.url}  <- point sensors "
                f"here, each with its login from {credentials}"
            )
    else:
        typer.echo(f"MQTT broker: {endpoint.url}")

    from prometheus_client import CollectorRegistry

    from its.telemetry import AlertMetrics, IngestMetrics

    stop = _stop_on_signals()
    publish, close_publisher = _alert_publisher(settings, alerts_endpoint)
    registry = CollectorRegistry()  # all components' metrics, at the web process's /metrics
    ingest_metrics, alert_metrics = IngestMetrics(registry), AlertMetrics(registry)
    web_app = build_web_app(settings, engine=engine, network=network, metrics_registry=registry)
    server = _web_server(settings, web_app)
    components = [
        _Component(
            "ingest",
            lambda: run_ingest(
                settings, ingest_endpoint, stop, engine=engine, metrics=ingest_metrics
            ),
            stop,
        ),
        _Component(
            "alerts",
            lambda: run_evaluator(
                settings, engine, network, stop, publish=publish, metrics=alert_metrics
            ),
            stop,
        ),
        _Component("web", server.run, stop),
    ]
    worker = _rollup_worker(settings, engine, network, stop)
    if worker:
        components.append(_Component("rollup", worker, stop))
    cleaner = _retention_worker(settings, engine, stop)
    if cleaner:
        components.append(_Component("retention", cleaner, stop))
    if sim:
        from sim.publisher import run_live
        from sim.scenario import demo_scenario

        scenario = (lambda start: demo_scenario(network, start)) if demo else None
        components.append(
            _Component(
                "sim",
                lambda: run_live(
                    settings, endpoint, stop, speed=speed, seed=seed, scenario=scenario,
                    network=network,
                ),
                stop,
            )
        )  # fmt: skip
    for c in components:
        c.start()
    while not server.started and not stop.is_set():
        stop.wait(0.1)
    if server.started:
        typer.echo(
            f"dashboard: http://{settings.web_host}:{settings.web_port}/   "
            f"API: http://{settings.web_host}:{settings.web_port}/docs   (Ctrl-C stops all)"
        )
        typer.echo(signin)
    stop.wait()
    server.should_exit = True
    deadline = time.monotonic() + STOP_TIMEOUT_S  # one budget for all, not one each
    for c in components:
        c.join(timeout=max(deadline - time.monotonic(), 0.0))
    stuck = [c.name for c in components if c.is_alive()]
    if stuck:
        log.warning("not stopped after %.0f s, leaving them: %s", STOP_TIMEOUT_S, ", ".join(stuck))
    close_publisher()
    if broker is not None:
        broker.stop()
    failed = [c for c in components if c.error is not None]
    if failed:
        raise typer.Exit(1)
    typer.echo("stopped")


# --------------------------------------------------------------------------- alerts


@app.command("alerts")
def alerts_cmd(
    interval: Annotated[
        float,
        typer.Option(
            min=0.1, max=3600, envvar="ITS_ALERT_INTERVAL_S", help="Seconds between evaluations."
        ),
    ] = 2.0,
) -> None:
    """Run the alerts evaluator until Ctrl-C or SIGTERM (thresholds: ITS_ALERT_*, docs/alerts.md).

    Several may run against one PostgreSQL database: one leads (advisory lock), the others stand
    by. Alert changes are published to {prefix}/alerts/{id} when ITS_MQTT_URL is set.
    """
    from its.alerts.config import AlertSettings
    from its.alerts.evaluator import run_evaluator

    _setup_logging()
    settings = _settings()
    try:
        alert_settings = AlertSettings()
    except Exception as exc:  # pydantic's ValidationError names the bad variable
        raise typer.BadParameter(f"invalid ITS_ALERT_ settings: {exc}") from None
    engine, network = _migrated_store(settings)
    from its.telemetry import AlertMetrics

    registry = _metrics_registry(settings, "alerts")
    metrics = AlertMetrics(registry) if registry is not None else None
    publish, close_publisher = None, None
    endpoint = _broker(settings)
    if endpoint is not None:
        publish, close_publisher = _alert_publisher(settings, endpoint)
    stop = _stop_on_signals()
    try:
        stats = run_evaluator(
            settings,
            engine,
            network,
            stop,
            publish=publish,
            interval_s=interval,
            alert_settings=alert_settings,
            metrics=metrics,
        )
    finally:
        if close_publisher is not None:
            close_publisher()
    typer.echo(
        f"alerts evaluator stopped: {stats.buckets} buckets evaluated, {stats.raised} raised, "
        f"{stats.cleared} cleared, {stats.published} published"
    )


# --- sim


def _parse_time(value: str | None, option: str):  # noqa: ANN202 - datetime | None
    from datetime import datetime

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-11-23T00:00:00Z)", param_hint=option
        ) from None
    if when.tzinfo is None:
        raise typer.BadParameter(f"{value!r} needs a time zone (e.g. ...Z)", param_hint=option)
    return when


def _sim_scenario(  # noqa: ANN202
    network,  # noqa: ANN001
    demo: bool,
    incidents: list[str],
    faults: list[str],
    scenario_file: Path | None = None,
    truth: Path | None = None,
):
    """A function of the run start (relative events), checked against the network now so a
    typo fails before anything connects. Called with the real start, it writes the run's
    ground truth to ``truth`` (JSON lines) when asked."""
    from datetime import UTC, datetime

    from sim.scenario import Scenario, ScenarioError, demo_scenario, parse_fault, parse_incident
    from sim.truth import load_scenario_file, write_truth

    def build(start: datetime) -> Scenario:
        scen = demo_scenario(network, start) if demo else Scenario()
        if scenario_file is not None:
            scen = scen + load_scenario_file(scenario_file, start, network)
        return scen + Scenario(
            incidents=tuple(parse_incident(s, start, network) for s in incidents),
            faults=tuple(parse_fault(s, start, network) for s in faults),
        )

    try:
        build(datetime.now(UTC))
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--incident/--fault/--scenario") from None

    def build_and_record(start: datetime) -> Scenario:
        scen = build(start)
        if truth is not None:
            write_truth(truth, scen)
        return scen

    return build_and_record


_SCENARIO_FILE = typer.Option(
    "--scenario",
    help="JSON scenario file: incidents and faults, times +DURATION from the start or ISO "
    "(see docs/simulator.md).",
)
_TRUTH = typer.Option(
    "--truth", help="Write the run's incidents and faults (ground truth) to this file, JSON lines."
)


def _positive(value: float) -> float:
    if value <= 0:
        raise typer.BadParameter(f"must be greater than 0, got {value}")
    return value


_SEED = typer.Option(
    envvar="ITS_SIM_SEED", help="Seed of the traffic model (same seed, same data)."
)
_PERIOD = typer.Option(min=1, max=3600, help="Observation interval in seconds.")


@sim_app.command("run")
def sim_run(
    speed: Annotated[
        float,
        typer.Option(
            max=100_000,
            envvar="ITS_SIM_SPEED",
            callback=_positive,
            help="Simulated seconds per wall second; above 1 without --start, the run begins "
            "6 h ago and fast-forwards until it catches up with real time.",
        ),
    ] = 1.0,
    start: Annotated[
        str | None, typer.Option(help="Simulated start, ISO 8601 with zone (default: see --speed).")
    ] = None,
    seed: Annotated[int, _SEED] = 0,
    period: Annotated[int, _PERIOD] = 30,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Incident at +5 min for 60 min, a silent and a stuck station."),
    ] = False,
    incident: Annotated[
        list[str] | None,
        typer.Option(help="SEGMENT_ID@+START/DURATION, e.g. SDR-N-02@+10m/45m (repeatable)."),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="STATION_ID:KIND@+START/DURATION (@... and /... optional), KIND one of silent, "
            "stuck, zero, chatter, failed; e.g. JKT-SDR-N-003:silent@+5m (repeatable)."
        ),
    ] = None,
    scenario_file: Annotated[Path | None, _SCENARIO_FILE] = None,
    truth: Annotated[Path | None, _TRUTH] = None,
) -> None:
    """Simulated stations publishing over MQTT, one connection and Last Will each, until Ctrl-C.

    The simulated clock never runs ahead of the wall clock. See docs/simulator.md.
    """
    from its.network import load_network
    from sim.publisher import run_live

    _setup_logging()
    settings = _settings()
    endpoint = _require_broker(settings)
    begin = _parse_time(start, "--start")
    network = load_network(settings.network_file)
    scenario = _sim_scenario(network, demo, incident or [], fault or [], scenario_file, truth)
    stop = _stop_on_signals()
    stats = run_live(
        settings,
        endpoint,
        stop,
        speed=speed,
        start=begin,
        seed=seed,
        scenario=scenario,
        period_s=period,
        network=network,
    )
    typer.echo(
        f"simulator stopped: {stats.published} observations in {stats.ticks} intervals "
        f"from {stats.start.isoformat()}"
    )


@sim_app.command("backfill")
def sim_backfill(
    hours: Annotated[
        float, typer.Option(max=24 * 366, callback=_positive, help="Hours of history.")
    ],
    end: Annotated[
        str | None, typer.Option(help="End of the history, ISO 8601 with zone (default: now).")
    ] = None,
    seed: Annotated[int, _SEED] = 0,
    period: Annotated[int, _PERIOD] = 30,
    max_rate: Annotated[
        float | None,
        typer.Option(min=1.0, help="Cap in observations/s (when ingest cannot keep up)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar (only on a terminal).")] = True,
    incident: Annotated[
        list[str] | None,
        typer.Option(help="SEGMENT_ID@+START/DURATION from the history's start (repeatable)."),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="STATION_ID:KIND@+START/DURATION from the history's start (repeatable)."),
    ] = None,
    scenario_file: Annotated[Path | None, _SCENARIO_FILE] = None,
    truth: Annotated[Path | None, _TRUTH] = None,
) -> None:
    """Publish the last N hours of every station as fast as the broker takes it.

    `its ingest` (or `its up`) must be running and subscribed, or the history is not stored.
    """
    from its.network import load_network
    from sim.backfill import backfill

    _setup_logging()
    settings = _settings()
    endpoint = _require_broker(settings)
    until = _parse_time(end, "--end")
    network = load_network(settings.network_file)
    scenario = _sim_scenario(network, False, incident or [], fault or [], scenario_file, truth)
    stats = backfill(
        settings,
        endpoint,
        hours,
        end=until,
        seed=seed,
        scenario=scenario,
        period_s=period,
        progress=progress,
        network=network,
        max_rate=max_rate,
    )
    typer.echo(
        f"backfilled {stats.observations} observations ({stats.readings} readings) "
        f"in {stats.seconds:.1f}s, {stats.rate:.0f} obs/s"
    )


if __name__ == "__main__":
    app()
