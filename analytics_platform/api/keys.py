"""API keys: creation, revocation and lookup.

A key looks like `apk_<key_id>_<secret>`: the key id is public (listings, logs, the `revoke`
command), the secret is 256 random bits. Only SHA-256 of the whole key is stored; a random secret
of that size cannot be brute-forced, so a deliberately slow password hash would only add latency to
every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import tuple_row

PREFIX = "apk"
# read: every GET of the key's tenant (or of every tenant for an admin key); resolve: POST
# /v1/anomalies/{id}/resolve; admin: edit the metrics catalogue and the unknown-metric policy (of the
# key's tenant, or, on an admin key, of every tenant and the platform defaults '*'); train: POST
# /v1/baselines/train; detect: POST /v1/anomalies/detect (both start Dagster runs, GET /v1/jobs/{id})
SCOPES = ("read", "resolve", "admin", "train", "detect")
_SHAPE = re.compile(r"apk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Principal:
    """Who is calling: one key, bound to a tenant (or to every tenant for an admin key)."""

    key_id: str
    name: str
    tenant_id: str | None
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, None for anything else (checked before any database work)."""
    match = _SHAPE.fullmatch(key)
    return match.group(1) if match else None


def create_key(
    conn: psycopg.Connection,
    name: str,
    tenant_id: str | None,
    *,
    scopes: tuple[str, ...] = ("read",),
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    """Store a new key and return (key_id, key). The key is shown once; it cannot be recovered."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}; known: {', '.join(SCOPES)}")
    if not name.strip():
        raise ValueError("a key needs a name saying who or what holds it")
    if tenant_id is not None and not tenant_id.strip():
        raise ValueError("the tenant of a key cannot be empty (use --admin for a key of every tenant)")
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    conn.execute(
        "INSERT INTO analytics.api_keys (key_id, secret_sha256, tenant_id, scopes, name, expires_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (key_id, digest(key), tenant_id, sorted({"read", *scopes}), name.strip(), expires_at),
    )
    return key_id, key


def revoke_key(conn: psycopg.Connection, key_id: str) -> bool:
    """Revoke a key; False when there is no such key (revoking twice keeps the first time)."""
    row = conn.execute(
        "UPDATE analytics.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s RETURNING 1",
        (key_id,),
    ).fetchone()
    return row is not None


def list_keys(conn: psycopg.Connection) -> list[tuple]:
    """Every key without its hash: key_id, name, tenant_id, scopes, created_at, expires_at, revoked_at."""
    return conn.execute(
        "SELECT key_id, name, tenant_id, scopes, created_at, expires_at, revoked_at "
        "FROM analytics.api_keys ORDER BY created_at, key_id"
    ).fetchall()


def find_principal(conn: psycopg.Connection, key: str) -> Principal | None:
    """The principal of a valid key (well-formed, known, hash equal, not revoked, not expired)."""
    key_id = key_id_of(key)
    if key_id is None:
        return None
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT secret_sha256, name, tenant_id, scopes FROM analytics.api_keys "
            "WHERE key_id = %s AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
            (key_id,),
        ).fetchone()
    if row is None:
        return None
    stored, name, tenant_id, scopes = row
    if not secrets.compare_digest(bytes(stored), digest(key)):
        return None
    return Principal(key_id=key_id, name=name, tenant_id=tenant_id, scopes=frozenset(scopes))
