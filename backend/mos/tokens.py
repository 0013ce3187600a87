"""Admin and rater tokens.

Why: a rater link is the only credential a rater has, so each carries its own unguessable
token (``secrets.token_urlsafe``); only its SHA-256 is stored, so a copied database does not
leak working links. Comparisons are constant-time. Tokens expire so old links stop working.
"""

from __future__ import annotations

import hashlib
import secrets
import time

TOKEN_BYTES = 24


def new_token() -> str:
    """A fresh URL-safe token (192 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_id(prefix: str) -> str:
    """An opaque identifier: carries no meaning, cannot be guessed or enumerated."""
    return f"{prefix}{secrets.token_urlsafe(12)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(given: str | None, stored_hash: str) -> bool:
    """Constant-time check of a presented token against a stored hash."""
    if not given:
        return False
    return secrets.compare_digest(hash_token(given), stored_hash)


def admin_ok(given: str | None, admin_token: str) -> bool:
    """Constant-time check of the admin token (kept in memory by the service, never stored)."""
    if not given or not admin_token:
        return False
    return secrets.compare_digest(given.encode(), admin_token.encode())


def expiry_from_now(hours: float, now: float | None = None) -> float:
    return (time.time() if now is None else now) + hours * 3600.0


def is_expired(expires_at: float | None, now: float | None = None) -> bool:
    return expires_at is not None and (time.time() if now is None else now) >= expires_at
