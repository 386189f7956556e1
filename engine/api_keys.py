"""Named keys of the JSON API: create (the key is shown once), list, revoke, verify.

A key reads ``pk_<prefix>_<random>``: the 8-character prefix is unique, finds the key's row and
names it in listings; the random part is 256 bits from `secrets`. Only the SHA-256 of the whole
key is stored (see `engine.store.models.ApiKey` for why a fast hash is right), so neither the
database nor a backup of it holds a usable key. Each key has a scope, ``read``, ``write`` or
``admin`` (each includes the ones before it). Creating and revoking are audited, in the same
transaction, with the name of whoever did it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from engine.audit import record
from engine.errors import NotFound, ParcoursError
from engine.store.db import SQLITE_BEGIN, utcnow
from engine.store.models import API_KEY_SCOPES, ApiKey

PREFIX_LENGTH = 8
TOUCH_EVERY = timedelta(minutes=1)  # last use is written at most this often per key
BOOTSTRAP = "bootstrap"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SECRET = re.compile(r"pk_([0-9a-f]{8})_[A-Za-z0-9_-]{20,100}")


class KeyInvalid(ParcoursError):
    """A key cannot be created or revoked as asked; the message names the field."""


class Verified(NamedTuple):
    """Who a request's key is: its name and scope."""

    name: str
    scope: str


@dataclass(frozen=True)
class KeyInfo:
    """A key as listings show it: never the key itself, nor its hash."""

    name: str
    scope: str
    prefix: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def from_row(cls, row: Any) -> KeyInfo:
        return cls(row.name, row.scope, row.prefix, row.created_at, row.created_by,
                   row.last_used_at, row.revoked_at, row.revoked_by)  # fmt: skip

    @property
    def shown(self) -> str:
        """How listings write the key: its prefix, the rest hidden."""
        return f"pk_{self.prefix}_…"

    def to_dict(self) -> dict[str, Any]:
        def iso(at: datetime | None) -> str | None:
            return at.isoformat() if at is not None else None

        return {
            "name": self.name, "scope": self.scope, "prefix": self.prefix,
            "created_at": iso(self.created_at), "created_by": self.created_by,
            "last_used_at": iso(self.last_used_at), "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
        }  # fmt: skip


def digest(secret: str) -> str:
    """The SHA-256 hex of a key, as stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """The key's name, or KeyInvalid saying why not."""
    if not NAME.fullmatch(name):
        raise KeyInvalid(
            f"name {name[:80]!r}: 1 to 64 letters, digits, dots, dashes or underscores, "
            "starting with a letter or digit"
        )
    return name


def check_scope(scope: str) -> str:
    if scope not in API_KEY_SCOPES:
        raise KeyInvalid(f"scope {scope[:20]!r}: one of {', '.join(API_KEY_SCOPES)}")
    return scope


def create(conn: Connection, name: str, scope: str, by: str, now: datetime | None = None) -> str:
    """Create the key `name` with `scope` and return it: the only time it can be read."""
    check_name(name)
    check_scope(scope)
    if conn.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise KeyInvalid(f"name {name!r}: a key of that name exists (revoked keys keep theirs)")
    while True:
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        if conn.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    secret = f"pk_{prefix}_{secrets.token_urlsafe(32)}"
    conn.execute(
        insert(ApiKey).values(
            name=name, scope=scope, prefix=prefix, hash=digest(secret),
            created_at=now or utcnow(), created_by=by[:64],
        )
    )  # fmt: skip
    record(conn, by, "create", "api_key", name, scope=scope, prefix=prefix)
    return secret


def list_keys(conn: Connection) -> list[KeyInfo]:
    """Every key, revoked ones included, by name."""
    rows = conn.execute(select(ApiKey.__table__).order_by(ApiKey.name))
    return [KeyInfo.from_row(r) for r in rows]


def revoke(conn: Connection, name: str, by: str, now: datetime | None = None) -> KeyInfo:
    """Revoke the key `name`: from now on it answers 401. NotFound for an unknown name."""
    row = conn.execute(select(ApiKey.__table__).where(ApiKey.name == name)).first()
    if row is None:
        raise NotFound(f"no API key named {name[:80]!r}")
    if row.revoked_at is not None:
        raise KeyInvalid(f"the API key {name!r} was already revoked on {row.revoked_at:%Y-%m-%d}")
    at = now or utcnow()
    conn.execute(
        update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=at, revoked_by=by[:64])
    )
    record(conn, by, "revoke", "api_key", name, prefix=row.prefix)
    found = conn.execute(select(ApiKey.__table__).where(ApiKey.id == row.id)).one()
    return KeyInfo.from_row(found)


def verify(engine: Engine, secret: str, now: datetime | None = None) -> Verified | None:
    """The name and scope of a valid, unrevoked key; None otherwise. Reads without the write
    lock; writes the last use only when the stored one is a minute old or more."""
    match = SECRET.fullmatch(secret)
    if match is None:
        return None
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        row = conn.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.scope, ApiKey.hash, ApiKey.last_used_at,
                   ApiKey.revoked_at).where(ApiKey.prefix == match.group(1))
        ).first()  # fmt: skip
    if row is None:
        return None
    if not hmac.compare_digest(digest(secret), row.hash) or row.revoked_at is not None:
        return None
    at = now or utcnow()
    stale = at - TOUCH_EVERY
    if row.last_used_at is None or row.last_used_at <= stale:
        with engine.begin() as conn:  # a concurrent request that wrote it first wins
            conn.execute(
                update(ApiKey)
                .where(ApiKey.id == row.id)
                .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= stale))
                .values(last_used_at=at)
            )
    return Verified(row.name, row.scope)


def any_active(engine: Engine) -> bool:
    """Whether at least one key is usable (created and not revoked)."""
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        found = conn.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        )
    return bool(found)


def ensure_bootstrap(engine: Engine, by: str) -> str | None:
    """With no key at all (revoked ones count), create the admin key ``bootstrap`` and return
    it; otherwise None. Two processes starting at once create it once."""
    with engine.connect() as conn:
        if conn.scalar(select(ApiKey.id).limit(1)) is not None:
            return None
    try:
        with engine.begin() as conn:
            return create(conn, BOOTSTRAP, "admin", by)
    except (IntegrityError, KeyInvalid):  # the other process was first
        return None
