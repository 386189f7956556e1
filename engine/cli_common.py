"""What every `parcours` command module shares: the settings, the database, the operator."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy import Engine

from engine.config import Settings
from engine.store.db import make_engine, upgrade


def root_settings(ctx: click.Context) -> Settings:
    """The settings the `parcours` group read for this run (database, folders, zone)."""
    settings: Settings = ctx.find_root().obj
    return settings


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """The migrated database for one command; no pooled connection is left open after it."""
    engine = make_engine(settings.db_url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def os_user() -> str:
    """The operating system user running the command, as evidence of an operator's change."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER variable and no passwd entry (some containers)
        return "unknown"
