"""Sign-in throttling: growing delays after failed sign-ins, by name and by client address.

The counts live in the database (`sign_in_throttle`), so every process of the designer counts
the same attempts. An attempt is counted before its password is checked, so parallel guesses
cannot slip past the count, and is refunded when it signs in.

After `free` failures of a name (or of an address), the next attempt waits 2 s, then 4, 8... up
to MAX_DELAY; an attempt during the wait is refused without looking at its password. Nothing
locks: once the wait is over, the right password signs in, so an attacker can slow the real
user by at most MAX_DELAY but never keep them out, while a guesser gets one try per MAX_DELAY
per name. A name or an address that saw no failure for RESET_AFTER starts afresh. The address
counter is what slows one client trying many names.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from engine.store.models import SignInThrottle

NAME_FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 10
MAX_DELAY = 300  # seconds
RESET_AFTER = timedelta(minutes=15)
KEY_LENGTH = 255


def delay(failures: int, free: int) -> int:
    """Seconds the next attempt waits after `failures` recent failures."""
    if failures < free:
        return 0
    return int(min(2 ** (failures - free + 1), MAX_DELAY))


def _keys(username: str, address: str) -> list[tuple[str, str, int]]:
    return [
        ("name", username[:KEY_LENGTH], NAME_FREE_FAILURES),
        ("address", address[:KEY_LENGTH], ADDRESS_FREE_FAILURES),
    ]


def _where(kind: str, value: str) -> tuple[object, ...]:
    return (SignInThrottle.kind == kind, SignInThrottle.value == value)


def reserve(conn: Connection, username: str, address: str, now: datetime) -> int:
    """Seconds to wait before this attempt may be tried; 0: it is counted as a failure until
    `signed_in` refunds it. Call in its own transaction, committed before the password check."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # Forgotten counts go: a spray of made-up names leaves at most RESET_AFTER worth of rows.
    conn.execute(delete(SignInThrottle).where(SignInThrottle.last_failure_at < now - RESET_AFTER))
    counted: list[tuple[str, str, int]] = []
    wait = 0
    # Always the same order (name, then address): two attempts never wait on each other's lock.
    for kind, value, free in _keys(username, address):
        conn.execute(
            dialect.insert(SignInThrottle)
            .values(kind=kind, value=value, failures=0, last_failure_at=now)
            .on_conflict_do_nothing()
        )
        row = conn.execute(
            select(SignInThrottle.failures, SignInThrottle.last_failure_at)
            .where(*_where(kind, value))
            .with_for_update()
        ).one()
        failures = row.failures if now - row.last_failure_at < RESET_AFTER else 0
        allowed_at = row.last_failure_at + timedelta(seconds=delay(failures, free))
        wait = max(wait, math.ceil((allowed_at - now).total_seconds()))
        counted.append((kind, value, failures + 1))
    if wait > 0:
        return wait
    for kind, value, failures in counted:
        conn.execute(
            update(SignInThrottle)
            .where(*_where(kind, value))
            .values(failures=failures, last_failure_at=now)
        )
    return 0


def signed_in(conn: Connection, username: str, address: str) -> None:
    """Refund a reserved attempt that signed in: the name starts afresh, the address gets its
    try back (other names tried from it still count)."""
    (name_kind, name, _), (address_kind, client, _) = _keys(username, address)
    conn.execute(update(SignInThrottle).where(*_where(name_kind, name)).values(failures=0))
    conn.execute(
        update(SignInThrottle)
        .where(*_where(address_kind, client))
        .values(failures=case((SignInThrottle.failures > 0, SignInThrottle.failures - 1), else_=0))
    )
