"""Roles of people, scopes of API keys, and what each may do.

Permissions nest: ``read`` < ``operate`` (acknowledge, comment, assign alerts) < ``supervise``
(act on alerts of others, e.g. future shelving) < ``admin`` (users, keys, audit). A role or a key
scope is the set of permissions it grants; checks ask for a permission, never for a role name, so
a new role is one line here.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    read = "read"
    operate = "operate"
    supervise = "supervise"
    admin = "admin"


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    supervisor = "supervisor"
    admin = "admin"


class Scope(StrEnum):
    """What an API key may do: read everything, or read and operate alerts."""

    read = "read"
    operate = "operate"


_P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({_P.read}),
    Role.operator: frozenset({_P.read, _P.operate}),
    Role.supervisor: frozenset({_P.read, _P.operate, _P.supervise}),
    Role.admin: frozenset(Permission),
}
SCOPE_PERMISSIONS: dict[Scope, frozenset[Permission]] = {
    Scope.read: frozenset({_P.read}),
    Scope.operate: frozenset({_P.read, _P.operate}),
}
