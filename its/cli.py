"""The ``its`` command: the composition root that wires ingest, the simulator, the API, the
dashboard and the alerts evaluator together. Each subcommand imports what it needs inside itself,
so ``its --help`` is instant and ``its db`` does not pull in Dash.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from its.config import MqttEndpoint, Settings, get_settings

app = typer.Typer(
    help="ITS monitoring platform: MQTT ingest, time-series store, traffic API, operator dashboard "
    "and a traffic simulator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Schema migrations and the road network.", no_args_is_help=True)
sim_app = typer.Typer(help="Simulated sensor traffic over MQTT.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sim_app, name="sim")

log = logging.getLogger("its")


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


def _require_broker(settings: Settings) -> MqttEndpoint:
    endpoint = settings.mqtt_endpoint
    if endpoint is None:
        raise typer.BadParameter(
            "ITS_MQTT_URL is not set: point it at a broker (mqtt://host:1883), "
            "or use `its up`, which runs the embedded one"
        )
    return endpoint


def _engine(settings: Settings):  # noqa: ANN202 - an sqlalchemy Engine
    from its.db.engine import make_engine

    return make_engine(settings.resolved_database_url)


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
    loaded = migrate.upgrade_and_seed(engine, load_network(settings.network_file))
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
    from its.db import migrate
    from its.network import load_network

    net = load_network(path)
    engine = _engine(_settings())
    migrate.upgrade(engine)
    with engine.begin() as conn:
        n = migrate.load_network(conn, net, replace=True)
    typer.echo(f"loaded {len(net.segments)} segments and {n} stations from {path}")


# --------------------------------------------------------------------------- ingest


@app.command("ingest")
def ingest_cmd(
    client_id: Annotated[
        str | None,
        typer.Option(
            envvar="ITS_INGEST_CLIENT_ID",
            help="MQTT client id; stable across restarts so the persistent session resumes.",
        ),
    ] = None,
) -> None:
    """Subscribe to sensor observations and store them (batched, idempotent, ack after commit).

    Invalid messages go to the dead_letters table with their reason. Ctrl-C or SIGTERM flushes the
    pending batch and exits cleanly.
    """
    from ingest.service import run_ingest
    from its.db import migrate
    from its.network import load_network

    _setup_logging()
    settings = _settings()
    endpoint = _require_broker(settings)
    engine = _engine(settings)
    migrate.upgrade_and_seed(engine, load_network(settings.network_file))
    stop = _stop_on_signals()
    stats = run_ingest(settings, endpoint, stop, engine=engine, client_id=client_id)
    typer.echo(
        f"ingest stopped: {stats.messages} messages, {stats.readings_inserted} readings stored, "
        f"{stats.duplicates} duplicates, {stats.dead_letters} dead letters"
    )


if __name__ == "__main__":
    app()
