"""Alembic environment: migrates the connection db.upgrade() passes in, else `sqlalchemy.url`."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from engine.errors import ParcoursError
from engine.store.db import make_engine
from engine.store.models import Base


def _set_sqlite_foreign_keys(connection: Connection, enabled: bool) -> None:
    # Raw cursor: going through SQLAlchemy would autobegin, and the pragma is a no-op inside
    # a transaction.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    finally:
        cursor.close()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    # Batch mode rebuilds a SQLite table by copy, drop and rename; with foreign keys enforced the
    # drop would cascade or fail, so they are off while migrating and checked once at the end.
    toggle_fks = sqlite and not connection.in_transaction()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        # SQLite DDL is transactional too, since make_engine emits BEGIN itself.
        transactional_ddl=True,
    )
    if toggle_fks:
        _set_sqlite_foreign_keys(connection, False)
    try:
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise ParcoursError(f"migration left dangling foreign keys: {broken[:5]}")
    finally:
        if toggle_fks:
            _set_sqlite_foreign_keys(connection, True)


def run() -> None:
    """Entry point Alembic calls when it loads this file."""
    if context.is_offline_mode():
        raise ParcoursError("offline (--sql) migrations are not supported; use db.upgrade()")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise ParcoursError("no database: pass a connection or set sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


run()
