"""amqtt plugins that make the embedded broker enforce ``its mqtt credentials``' logins and ACLs.

Loaded by dotted path from :func:`ingest.broker.broker_config`. They decide with the same
:func:`its.mqtt_auth.grants` that writes Mosquitto's ACL file, so both brokers enforce one policy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from its.mqtt_auth import Credentials, filter_covers, grants, load_credentials

log = logging.getLogger("ingest.broker")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _allowed(creds: Credentials, username: str | None, topic: str, access: str) -> bool:
    user = creds.get(username or "")
    if user is None:
        return False
    return any(
        g.access == access and filter_covers(g.topic, topic) for g in grants(user, creds.prefix)
    )


class CredentialsAuthPlugin(BaseAuthPlugin):
    """Accept a client only with a known user name, its password, and a Last Will (if any) on
    a topic the user may publish to."""

    @dataclass
    class Config:
        credentials_file: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.creds = load_credentials(Path(self._get_config_option("credentials_file")))
        self.digests = {u.username: _digest(u.password) for u in self.creds.users}

    async def authenticate(self, *, session: Session) -> bool:
        expected = self.digests.get(session.username or "")
        if expected is None or not hmac.compare_digest(_digest(session.password or ""), expected):
            log.warning("embedded broker: refused login %r", session.username)
            return False
        if session.will_flag and not _allowed(
            self.creds, session.username, session.will_topic or "", "write"
        ):
            log.warning(
                "embedded broker: refused %r: Last Will on %r", session.username, session.will_topic
            )
            return False
        return True


class TopicAclPlugin(BaseTopicPlugin):
    """Publish and subscribe only where :func:`its.mqtt_auth.grants` allows (denied publishes
    are dropped, denied subscriptions answered with failure, as Mosquitto does)."""

    @dataclass
    class Config:
        credentials_file: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.creds = load_credentials(Path(self._get_config_option("credentials_file")))

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool:
        if action == Action.RECEIVE:
            return True  # what a client may subscribe to already bounds what it receives
        if session is None or not topic:
            return False
        access = "write" if action == Action.PUBLISH else "read"
        if _allowed(self.creds, session.username, topic, access):
            return True
        log.warning("embedded broker: %r may not %s %r", session.username, access, topic)
        return False
