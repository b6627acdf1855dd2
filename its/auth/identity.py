"""Who is asking: a person (through a session) or a program (through an API key).

Everything downstream (the API's ``require``, the dashboard's acknowledge button, the audit log)
looks at an :class:`Identity`, never at how it was established.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from its.auth.keys import ApiKey
from its.auth.roles import SCOPE_PERMISSIONS, Permission, Scope
from its.auth.sessions import ActiveSession
from its.errors import PermissionDenied


@dataclass(frozen=True)
class Identity:
    via: Literal["session", "key", "anonymous"]
    actor: str  # recorded on acknowledgements and in the audit log
    permissions: frozenset[Permission]
    role: str  # a person's role, or "key:<scope>", or "anonymous"
    display_name: str
    session: ActiveSession | None = None
    key: ApiKey | None = None

    @classmethod
    def of_session(cls, session: ActiveSession) -> Identity:
        u = session.user
        return cls("session", u.username, u.permissions, u.role.value, u.display_name, session)

    @classmethod
    def of_key(cls, key: ApiKey) -> Identity:
        label = f"{key.name} ({key.key_id})"
        return cls("key", key.actor, key.permissions, f"key:{key.scope.value}", label, key=key)

    @classmethod
    def anonymous(cls) -> Identity:
        perms = SCOPE_PERMISSIONS[Scope.read]
        return cls("anonymous", "anonymous", perms, "anonymous", "anonymous")

    @property
    def audit_detail(self) -> dict[str, str]:
        """How the identity was established, for the audit entry's detail."""
        if self.key is not None:
            return {"via": "key", "key_id": self.key.key_id}
        return {"via": self.via}

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            what = f"role {self.role}" if self.via == "session" else self.role
            raise PermissionDenied(
                f"{self.actor} ({what}) may not do this: it needs {permission.value}"
            )
