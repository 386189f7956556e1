"""Shared fixtures. Database fixtures run each test on SQLite and on a throwaway PostgreSQL DB."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from engine.store import db

# --- databases ---------------------------------------------------------------------------------

PG_BASE_URL = os.environ.get("PARCOURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the PostgreSQL base database, used to create and drop databases."""
    url = make_url(PG_BASE_URL)
    if "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": "5"})
    engine = db.make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        reason = f"PostgreSQL unreachable at {PG_BASE_URL} (set PARCOURS_TEST_PG_URL): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parcours.db'}"
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    name = f"parcours_test_{secrets.token_hex(6)}"
    # A test that asks for a migrated database gets a copy of the run's migrated template.
    template = (
        request.getfixturevalue("pg_template") if "engine_url" in request.fixturenames else None
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        )
    try:
        yield make_url(PG_BASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the latest revision once per run, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "parcours.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_admin: Engine) -> Iterator[str]:
    """A PostgreSQL database migrated once per run: each test's database is made from it."""
    name = f"parcours_template_{secrets.token_hex(6)}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        db.upgrade(make_url(PG_BASE_URL).set(database=name).render_as_string(hide_password=False))
        yield name
    finally:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine_url(db_url: str, request: pytest.FixtureRequest) -> str:
    """URL of a fresh database migrated to the latest revision: a copy of the run's migrated
    template (the migrations themselves are tested from empty databases in test_store)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        target = Path(str(url.database))
        if target.exists():  # the test put something there first: migrate it as it is
            db.upgrade(db_url)
            return db_url
        template: Path = request.getfixturevalue("sqlite_template")
        with sqlite3.connect(template) as source, sqlite3.connect(target) as copy:
            source.backup(copy)
        return db_url
    return db_url  # PostgreSQL: db_url made it from the template already


@pytest.fixture
def session_factory(engine_url: str) -> Iterator[sessionmaker[Session]]:
    """Session factory on a migrated database; its engine is disposed afterwards."""
    engine = db.make_engine(engine_url)
    yield db.make_session_factory(engine)
    engine.dispose()
