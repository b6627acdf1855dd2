"""The platform's exceptions, one small tree so callers can catch at the level they need.

ITSError
├── ConfigError          settings or files that cannot be used
├── NetworkError         a road network file that is malformed or inconsistent
├── ContractError        a message that breaks the MQTT wire contract (goes to dead letters)
│   ├── TopicError       a topic outside the contract
│   └── PayloadError     bad JSON, wrong types, out-of-range or inconsistent values
├── StorageError         the store cannot be reached or migrated
├── NotFoundError        a station, segment or alert that does not exist
├── ConflictError        an action the current state forbids (acknowledging twice)
├── QueryError           a query that asks for too much or makes no sense (too many points)
├── ImportFileError      an import file that cannot be read at all (format, CSV header)
└── AuthError            identity problems (its/auth)
    ├── AuthenticationError  no, unknown, wrong, expired, revoked or throttled credentials (401)
    └── PermissionDenied     a known identity without the role or key scope for an action (403)
"""

from __future__ import annotations


class ITSError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(ITSError):
    """Settings or files that cannot be used."""


class NetworkError(ITSError):
    """A road network file that is malformed or inconsistent."""


class ContractError(ITSError):
    """A message that breaks the MQTT wire contract; its text is the dead-letter reason."""


class TopicError(ContractError):
    """A topic that is not part of the contract."""


class PayloadError(ContractError):
    """A payload with bad JSON, wrong types, out-of-range or inconsistent values."""


class StorageError(ITSError):
    """The store cannot be reached, detected or migrated."""


class NotFoundError(ITSError):
    """A station, segment or alert that does not exist."""


class ConflictError(ITSError):
    """An action the current state forbids, such as acknowledging an acknowledged alert."""


class ImportFileError(ITSError):
    """An import file that cannot be read at all (unknown format, CSV header without the
    documented columns); a bad *line* is a dead letter instead."""


class QueryError(ITSError):
    """A query that asks for too much (too many points) or makes no sense (end before start)."""


class AuthError(ITSError):
    """An identity problem; its text is safe to show (it never says which part was wrong)."""


class AuthenticationError(AuthError):
    """No, unknown, wrong, expired, revoked, disabled or throttled credentials (HTTP 401)."""


class PermissionDenied(AuthError):
    """A known identity without the role or key scope an action needs (HTTP 403)."""
