"""Logging for every `parcours` process: quiet by default, text or one JSON object per line.

Libraries speak at WARNING (APScheduler would otherwise log each job run: two lines a second),
the worker says one INFO line per batch that did something and nothing when idle. Messages carry
counts and ids, never a contact's address or name.
"""

from __future__ import annotations

import logging
import sys

from engine.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Library loggers kept at WARNING unless PARCOURS_LOG_LEVEL=DEBUG asks for everything.
LIBRARIES = ("apscheduler", "alembic", "sqlalchemy", "urllib3", "gunicorn.access", "psycopg")


class _ExpectedSkips(logging.Filter):
    """APScheduler warns each time a job's next run comes while it still runs; for the delivery
    and tick jobs (one instance at a time, by design) that is every second of a slow pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for PARCOURS_LOG_FORMAT: `text`, or `json` (python-json-logger)."""
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings, quiet: bool = False) -> None:
    """One handler on standard error for the whole process; `quiet` (one-shot commands, which
    print their own results) raises the level to WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings.log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    root.setLevel(max(level, logging.WARNING) if quiet else level)
    chatter = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(chatter)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _ExpectedSkips) for f in scheduler.filters):
        scheduler.addFilter(_ExpectedSkips())
