"""Random tokens and their digests.

Session cookies, sign-in links, CSRF tokens and key secrets are 256-bit random values, so a plain
SHA-256 is the right digest to store (a slow password hash adds nothing against guessing 2^256).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> str:
    """A URL-safe random token (32 bytes of entropy)."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The stored form of a token: hex SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two strings; ``None`` equals nothing."""
    if a is None or b is None:
        return False
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )
