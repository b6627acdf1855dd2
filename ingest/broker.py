"""The embedded MQTT broker (amqtt) for a first run with nothing to install.

It runs on its own asyncio loop in a background thread, bound to 127.0.0.1 only, on the configured
port or, where that is taken, on a free one, so that ``its up`` works beside a system Mosquitto.
amqtt speaks MQTT 3.1.1 and moves a few thousand messages a second: right for a demo, not for load
tests (point ``ITS_MQTT_URL`` at Mosquitto or EMQX for those).

Given a credentials file (``ITS_EMBEDDED_MQTT_CREDENTIALS``, written by ``its mqtt credentials``)
it refuses anonymous clients and wrong passwords and enforces the same per-user topic ACLs as the
generated Mosquitto files (:func:`its.mqtt_auth.grants`). amqtt 0.12's own plugins cannot do
that here: its ``FileAuthPlugin`` reads only argon2/sha512-crypt hashes, its ACL plugin warns on
the only subscribe option its config accepts, and neither looks at a client's Last Will, which
amqtt publishes and retains without any topic check. So two small plugins do it, checking
the Will topic at CONNECT as Mosquitto does (``ingest/broker_auth.py``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from its.config import MqttEndpoint
from its.errors import ConfigError
from its.mqtt_auth import load_credentials

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``port`` now. Servers here (asyncio, uvicorn) bind with
    SO_REUSEADDR, so connections of a just-stopped server in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_config(port: int, credentials_file: Path | None = None) -> dict[str, Any]:
    """amqtt's configuration: anonymous, or logins and ACLs from a credentials file."""
    if credentials_file is None:
        plugins: dict[str, Any] = {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
        }
    else:
        section = {"credentials_file": str(credentials_file)}
        plugins = {
            "ingest.broker_auth.CredentialsAuthPlugin": section,
            "ingest.broker_auth.TopicAclPlugin": section,
        }
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{HOST}:{port}", "max_connections": 1000}
        },
        "plugins": plugins,
    }


class EmbeddedBroker:
    """An in-process amqtt broker; use as a context manager or call start()/stop()."""

    def __init__(self, port: int = 1883, credentials_file: Path | None = None) -> None:
        self.requested_port = port
        self.credentials_file = credentials_file
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def endpoint(self) -> MqttEndpoint:
        if self.port is None:
            raise ConfigError("embedded broker is not running")
        return MqttEndpoint(HOST, self.port)

    def start(self, timeout: float = 10.0) -> MqttEndpoint:
        if self.credentials_file is not None:
            load_credentials(self.credentials_file)  # a clear ConfigError before any thread
        port = self.requested_port
        if port == 0 or not port_is_free(port):
            if port:
                log.info("port %d is taken; the embedded broker picks a free one", port)
            port = free_port()
        self.port = port
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ConfigError(f"embedded broker did not start within {timeout}s")
        if self._error is not None:
            raise ConfigError(f"embedded broker failed to start: {self._error}") from self._error
        return self.endpoint

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            config = broker_config(self.port or 0, self.credentials_file)
            self._broker = Broker(config, loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            fut.result(timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.warning("embedded broker did not shut down cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
