"""Engines, sessions and migrations: the one place that knows how each backend is configured.

SQLite (the embedded default) runs in WAL mode and every transaction starts with
``BEGIN IMMEDIATE``, so a writer takes the database lock up front instead of failing half-way when
it upgrades a read lock; PostgreSQL (scale) goes through psycopg 3.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, ColumnElement, any_, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

import migrations
from engine.errors import ConfigError

DEFAULT_DATA_DIR = Path("var")

# Execution option choosing how a SQLite transaction begins ("DEFERRED" lets read-only work,
# e.g. dashboards, run without taking the write lock). PostgreSQL ignores it.
SQLITE_BEGIN = "parcours_sqlite_begin"
_SQLITE_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})


def utcnow() -> datetime:
    """Return the current instant as an aware UTC datetime."""
    return datetime.now(UTC)


def id_in(
    column: ColumnElement[int] | InstrumentedAttribute[int], ids: Sequence[int], dialect: str
) -> ColumnElement[bool]:
    """`column IN ids`. On PostgreSQL, one array parameter (``= ANY(%s)``): the statement text
    stays the same whatever the batch size, so the driver caches it and the planner uses the
    index instead of costing a 500-value IN list."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger())))
    return column.in_(ids)


def default_url(data_dir: str | Path = DEFAULT_DATA_DIR) -> str:
    """Return the URL of the embedded SQLite database kept in `data_dir`."""
    return f"sqlite:///{Path(data_dir) / 'parcours.db'}"


DEFAULT_URL = default_url()


def make_engine(url: str | URL, *, sqlite_timeout: float = 30.0) -> Engine:
    """Create an engine for a ``sqlite://`` or ``postgresql://`` URL, configured for Parcours.

    `sqlite_timeout` is how many seconds a SQLite connection waits for the write lock.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _make_sqlite_engine(parsed, sqlite_timeout)
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    shown = parsed.render_as_string(hide_password=True)
    raise ConfigError(f"unsupported database URL {shown!r}: use sqlite:/// or postgresql://")


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _make_sqlite_engine(url: URL, timeout: float) -> Engine:
    memory = _is_memory(url)
    database = url.database or ""
    if not memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": timeout, "check_same_thread": False},
        # One shared connection, or each checkout would see its own empty in-memory database.
        poolclass=StaticPool if memory else None,
        # A database error must never put an email address or a message body in the logs.
        hide_parameters=True,
    )
    busy_ms = int(timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Stop sqlite3 from issuing its own BEGIN (it skips SELECT and DDL); _on_begin does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Freed pages are overwritten with zeros: an erased person's data leaves the file.
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        finally:
            cursor.close()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: sqlite3.Connection, *_: object) -> None:
        # Leaving AUTOCOMMIT resets sqlite3 to its legacy mode; keep BEGIN ours on every checkout.
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # e.g. VACUUM, which cannot run inside a transaction
        mode = options.get(SQLITE_BEGIN, "IMMEDIATE")
        if mode not in _SQLITE_BEGIN_MODES:
            raise ConfigError(f"{SQLITE_BEGIN}={mode!r}: use one of {sorted(_SQLITE_BEGIN_MODES)}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def checkpoint(engine: Engine) -> None:
    """SQLite: copy the WAL into the database file and truncate it, so that the WAL no longer
    holds pages an erasure changed (run after the commit, outside any transaction). PostgreSQL
    keeps old row versions until (auto)vacuum reclaims them: nothing to do here."""
    if engine.dialect.name != "sqlite" or _is_memory(engine.url):
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory whose objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    """Build the Alembic configuration in code; the scripts ship inside the `migrations` package."""
    config = Config()
    # Config values go through ConfigParser interpolation, hence the doubled percent signs.
    script_location = str(Path(migrations.__file__).parent)
    config.set_main_option("script_location", script_location.replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Migrate the database up to `revision`."""
    _run_alembic(url_or_engine, lambda config: command.upgrade(config, revision))


def downgrade(url_or_engine: str | Engine, revision: str) -> None:
    """Migrate the database down to `revision` (``"base"`` empties it)."""
    _run_alembic(url_or_engine, lambda config: command.downgrade(config, revision))


def current_revision(url_or_engine: str | Engine) -> str | None:
    """Return the revision the database is at, or None if it was never migrated."""
    engine = _as_engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def _as_engine(url_or_engine: str | Engine) -> Engine:
    return url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)


def _run_alembic(url_or_engine: str | Engine, action: Callable[[Config], None]) -> None:
    engine = _as_engine(url_or_engine)
    try:
        # A connection rather than a URL, so an in-memory SQLite database is migrated in place;
        # migrations/env.py opens and commits the transaction.
        with engine.connect() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            action(config)
    finally:
        if engine is not url_or_engine:
            engine.dispose()
