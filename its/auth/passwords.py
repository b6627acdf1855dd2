"""Password hashing with argon2id (argon2-cffi).

The cost comes from the settings (``ITS_PASSWORD_TIME_COST``, ``ITS_PASSWORD_MEMORY_KIB``; the
defaults are argon2-cffi's, RFC 9106's low-memory profile). Tests set a cheaper cost through the
same settings; the code path is the same. A hash made with an older cost still verifies, and
:meth:`Passwords.needs_rehash` says when to store a new one.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from its.config import Settings

MIN_LENGTH = 8
MAX_LENGTH = 1024  # hashing megabytes of "password" is a denial of service, not security


class Passwords:
    """Hash and verify passwords at one argon2id cost."""

    def __init__(self, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=4)

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(settings.password_time_cost, settings.password_memory_kib)

    def hash(self, password: str) -> str:
        check_strength(password)
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; False for a wrong one, a missing or a corrupt hash."""
        if not stored_hash or len(password) > MAX_LENGTH:
            return False
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    def burn(self, password: str) -> None:
        """Spend the time a verification takes, so an unknown username answers as slowly as a
        wrong password (no user enumeration by timing)."""
        self.verify(self._dummy, password)

    @property
    def _dummy(self) -> str:
        if not hasattr(self, "_dummy_hash"):
            self._dummy_hash = self._hasher.hash("not-a-real-password")
        return self._dummy_hash


def check_strength(password: str) -> None:
    """Refuse passwords too short to resist guessing, or absurdly long."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"a password has at most {MAX_LENGTH} characters")
    if "\x00" in password:
        raise ValueError("a password cannot contain a NUL character")
