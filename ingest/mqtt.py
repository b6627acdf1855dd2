"""paho-mqtt clients built the same way everywhere (ingest, simulator, alert publisher).

MQTT 3.1.1 throughout: it is what the embedded broker speaks, and paho is faster with it than
with MQTT 5.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

from its.config import MqttEndpoint
from its.errors import ConfigError

Will = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


def make_client(
    endpoint: MqttEndpoint,
    client_id: str,
    *,
    clean_session: bool = True,
    will: Will | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client for ``endpoint``; ``manual_ack`` lets ingest ack only after commit."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    return client


def connect(client: mqtt.Client, endpoint: MqttEndpoint, keepalive: int = 30) -> None:
    """Connect, turning socket errors into a ConfigError that names the broker."""
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=keepalive)
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the MQTT broker at {endpoint.host}:{endpoint.port}: {exc}"
        ) from exc
