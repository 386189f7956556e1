"""Worker heartbeats: each worker process says every few seconds that it is alive.

One row per process (`host:pid`) in `worker_heartbeats`: when it started and last beat, the
batches it committed, its code version, and the last delivery outcome of each of its channels
(a state and a time, never an address). /metrics shows the age of every beat, /api/health the
newest. A process that stops cleanly removes its row; a killed one leaves it to age, and rows
older than FORGET_AFTER are removed by the beats of the others.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from engine.store.db import SQLITE_BEGIN
from engine.store.models import WorkerHeartbeat

FORGET_AFTER = timedelta(days=1)


@cache
def code_version() -> str:
    try:
        return version("parcours")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def this_worker() -> str:
    """The id of this process in the heartbeats: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Beat:
    """One worker's last heartbeat, as read back."""

    worker_id: str
    started_at: datetime
    last_beat: datetime
    batches: int
    version: str
    providers: Mapping[str, Mapping[str, str]]


def record_beat(
    engine: Engine,
    worker_id: str,
    started_at: datetime,
    now: datetime,
    batches: int,
    providers: Mapping[str, Mapping[str, str]],
) -> None:
    """Insert or refresh this worker's row, and forget the rows of long-dead workers."""
    values: dict[str, Any] = {
        "worker_id": worker_id, "started_at": started_at, "last_beat": now, "batches": batches,
        "version": code_version(), "providers": dict(providers),
    }  # fmt: skip
    with engine.begin() as conn:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = insert(WorkerHeartbeat).values(values)
        changed = {k: statement.excluded[k] for k in values if k != "worker_id"}
        conn.execute(statement.on_conflict_do_update(index_elements=["worker_id"], set_=changed))
        conn.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_beat < now - FORGET_AFTER))


def forget_worker(engine: Engine, worker_id: str) -> None:
    """A worker stopping cleanly: its row goes, so health does not wait for it to age."""
    with engine.begin() as conn:
        conn.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id))


def read_beats(conn: Connection, limit: int = 1000) -> list[Beat]:
    """Every worker's last beat, the newest first."""
    conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
    rows = conn.execute(
        select(
            WorkerHeartbeat.worker_id, WorkerHeartbeat.started_at, WorkerHeartbeat.last_beat,
            WorkerHeartbeat.batches, WorkerHeartbeat.version, WorkerHeartbeat.providers,
        )
        .order_by(WorkerHeartbeat.last_beat.desc())
        .limit(limit)
    )  # fmt: skip
    return [Beat(r[0], r[1], r[2], int(r[3]), r[4], r[5] or {}) for r in rows]
