"""paho-mqtt clients built the same way everywhere (ingest, simulator, alert publisher).

MQTT 3.1.1 throughout: it is what the embedded broker speaks, and paho is faster with it than
with MQTT 5. An ``mqtts://`` endpoint gets TLS with the broker's certificate and host name
verified (against ``ITS_MQTT_CA_FILE`` or the system's CAs); there is no switch to skip the check.
"""

from __future__ import annotations

import ssl

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
    if endpoint.tls:
        client.tls_set_context(tls_context(endpoint))
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    return client


def tls_context(endpoint: MqttEndpoint) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate chain and host name."""
    try:
        return ssl.create_default_context(
            cafile=str(endpoint.ca_file) if endpoint.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the MQTT CA file {endpoint.ca_file}: {exc}") from exc


def connect(client: mqtt.Client, endpoint: MqttEndpoint, keepalive: int = 30) -> None:
    """Connect, turning socket and TLS errors into a ConfigError that names the broker."""
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=keepalive)
    except ssl.SSLError as exc:  # an OSError too; say that it is the certificate
        raise ConfigError(
            f"TLS with the MQTT broker at {endpoint.url} failed: {exc} (is ITS_MQTT_CA_FILE the "
            "CA that signed the broker's certificate, and is the host name in it?)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot reach the MQTT broker at {endpoint.url}: {exc}") from exc
