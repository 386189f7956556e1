"""Settings: declared once (name, default, help), read from PARCOURS_* environment variables.

Nothing else in the code base reads os.environ for configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str
    kind: type = str


SETTINGS: tuple[Setting, ...] = (
    Setting("DATA_DIR", "var", "Folder for the embedded SQLite database and runtime files."),
    Setting(
        "DATABASE_URL",
        "",
        "SQLAlchemy URL; empty means SQLite in DATA_DIR/parcours.db. "
        "PostgreSQL: postgresql://user@host:5432/db.",
    ),
    Setting("SCENARIOS_DIR", "scenarios", "Folder of scenario YAML files published at start-up."),
    Setting(
        "TIMEZONE",
        "Europe/Paris",
        "Workspace zone: used when a contact's zone is unknown, and for the designer's times.",
    ),
    Setting("BATCH_SIZE", "500", "Enrollments claimed and committed together.", int),
    Setting("TICK_SECONDS", "1.0", "Interval of the worker's tick.", float),
    Setting("LEASE_SECONDS", "60", "How long a claimed batch stays reserved to one worker.", int),
    Setting(
        "DELIVERY_LEASE_SECONDS",
        "30",
        "How long the delivery loop's claim on queued messages lasts without a heartbeat (renewed "
        "every third of it while the loop runs): a stopped worker's messages are free again "
        "after this.",
        int,
    ),
    Setting(
        "ANNIVERSARY_EVERY_SECONDS", "3600", "How often birthday-style triggers are scanned.", int
    ),
    Setting(
        "ANNIVERSARY_LOOKAHEAD_HOURS", "48", "How far ahead anniversary entries are planned.", int
    ),
    Setting(
        "TRIGGER_MAX_AGE_HOURS",
        "24",
        "Events older than this when they arrive start no journey "
        "(they still count as history and wake waiting contacts).",
        int,
    ),
    Setting(
        "ATTRIBUTES_EVERY_HOURS",
        "24",
        "Hours between two full recomputes of the computed attributes (RFM, lifecycle stage, "
        "customer value); a purchase refreshes its own contact at once.",
        int,
    ),
    Setting(
        "SEGMENTS_REBUILD_HOURS",
        "24",
        "Hours between two full rebuilds of every segment, the safety net under the incremental "
        "refresh (a changed definition is rebuilt at once).",
        int,
    ),
    Setting(
        "RETENTION_EVENTS_DAYS",
        "0",
        "Events older than this many days are deleted by the purge job (`parcours purge`, and "
        "the worker); 0: kept for ever. Events a running journey started from, or not yet "
        "read by the trigger pass, stay.",
        int,
    ),
    Setting(
        "RETENTION_JOURNAL_DAYS",
        "0",
        "Journal entries older than this many days are deleted by the purge job; 0: kept for ever.",
        int,
    ),
    Setting(
        "RETENTION_CHECK_HOURS",
        "24",
        "Hours between two runs of the purge job in the worker (only when a retention is set).",
        int,
    ),
    Setting("HOST", "127.0.0.1", "Address the HTTP server listens on."),
    Setting("PORT", "8080", "Port of the HTTP server.", int),
    Setting(
        "PUBLIC_URL",
        "",
        "Address contacts reach the public pages at (unsubscribe, preferences, tracking), "
        "https in production; empty: http://HOST:PORT.",
    ),
    Setting(
        "TRUSTED_PROXIES",
        "0",
        "Reverse proxies in front of the server whose X-Forwarded-For is believed for the "
        "client's address (sign-in throttling, audit, consent evidence); 0: the connection's. "
        "PROXY_HOPS, when set, takes its place (and believes the scheme and host too).",
        int,
    ),
    Setting(
        "API_KEY",
        "",
        "Bootstrap key of the JSON API, with the admin scope (header X-Api-Key or "
        "Authorization: Bearer); empty: `parcours up` creates the admin key `bootstrap` on "
        "first start and prints it once. Named keys: `parcours keys`.",
    ),
    Setting(
        "SECRET_KEY",
        "",
        "Secret for signed links and sessions; empty: generated once and kept in "
        "DATA_DIR/secret_key.",
    ),
    Setting("LOG_LEVEL", "INFO", "Logging level: DEBUG, INFO, WARNING, ERROR."),
    Setting(
        "METRICS_TOKEN",
        "",
        "Bearer token that reads /metrics (header Authorization: Bearer ...), for Prometheus; "
        "an API key (X-Api-Key) reads it too; empty: only an API key.",
    ),
    Setting(
        "HEARTBEAT_SECONDS",
        "5",
        "How often each worker process records its heartbeat (table worker_heartbeats).",
        int,
    ),
    Setting(
        "WORKER_STALE_SECONDS",
        "60",
        "/api/health calls the worker stale when the newest heartbeat is older than this.",
        int,
    ),
    Setting(
        "API_RATE",
        "600/minute",
        "Requests per API key and web process, e.g. 600/minute or 20/second; over it the API "
        "answers 429 with Retry-After. 0: no limit.",
    ),
    Setting(
        "LOG_FORMAT",
        "text",
        "Log lines as `text` (time, level, logger, message) or `json` (one JSON object per "
        "line: time, level, logger, message and the record's fields such as `action`).",
    ),
    Setting(
        "WEB_WORKERS",
        "1",
        "Processes of the web server (`parcours web`, `parcours up`); each runs WEB_THREADS "
        "threads.",
        int,
    ),
    Setting("WEB_THREADS", "8", "Threads per web server process: requests served at once.", int),
    Setting(
        "PROXY_HOPS",
        "0",
        "Reverse proxies in front of the web server (nginx: 1): their X-Forwarded-For, "
        "X-Forwarded-Proto and X-Forwarded-Host are believed, that many hops deep; 0: none.",
        int,
    ),
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    scenarios_dir: Path
    timezone: str
    batch_size: int
    tick_seconds: float
    lease_seconds: int
    delivery_lease_seconds: int
    anniversary_every_seconds: int
    anniversary_lookahead_hours: int
    trigger_max_age_hours: int
    attributes_every_hours: int
    segments_rebuild_hours: int
    host: str
    port: int
    public_url: str
    trusted_proxies: int
    api_key: str
    secret_key: str
    log_level: str
    retention_events_days: int = 0
    retention_journal_days: int = 0
    retention_check_hours: int = 24
    metrics_token: str = ""
    heartbeat_seconds: int = 5
    worker_stale_seconds: int = 60
    api_rate: str = "600/minute"
    log_format: str = "text"
    web_workers: int = 1
    web_threads: int = 8
    proxy_hops: int = 0

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to SQLite in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'parcours.db').resolve()}"

    @property
    def public_base(self) -> str:
        """Start of the links put in messages (never taken from a request's Host header)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def evolve(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from PARCOURS_* variables (or `env`), then `overrides`."""
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = source.get(f"PARCOURS_{setting.name}", setting.default)
        try:
            value: Any = setting.kind(raw)
        except ValueError:
            raise ConfigError(
                f"PARCOURS_{setting.name}={raw!r} is not a valid {setting.kind.__name__}: "
                f"{setting.help}"
            ) from None
        values[setting.name.lower()] = value
    values["data_dir"] = Path(values["data_dir"])
    values["scenarios_dir"] = Path(values["scenarios_dir"])
    values.update(overrides)
    for name in ("RETENTION_EVENTS_DAYS", "RETENTION_JOURNAL_DAYS", "RETENTION_CHECK_HOURS"):
        if values[name.lower()] < 0:
            raise ConfigError(f"PARCOURS_{name}={values[name.lower()]} must be 0 or more")
    if values["retention_check_hours"] == 0:
        raise ConfigError("PARCOURS_RETENTION_CHECK_HOURS must be 1 or more")
    for name in ("HEARTBEAT_SECONDS", "WORKER_STALE_SECONDS"):
        if values[name.lower()] < 1:
            raise ConfigError(f"PARCOURS_{name}={values[name.lower()]} must be 1 or more")
    if values["api_rate"].strip() not in ("", "0"):
        from limits import parse

        try:
            parse(values["api_rate"])
        except ValueError:
            raise ConfigError(
                f"PARCOURS_API_RATE={values['api_rate']!r} is not a rate: write it as "
                "600/minute, 20/second or 10000/hour (0 for no limit)"
            ) from None
    _check_server(values)
    from engine.runtime.timing import is_valid_zone

    if not is_valid_zone(values["timezone"]):
        raise ConfigError(
            f"PARCOURS_TIMEZONE={values['timezone']!r} is not an IANA zone (e.g. Europe/Paris)"
        )
    return Settings(**values)


def _check_server(values: Mapping[str, Any]) -> None:
    """The web server's and the logs' settings, each refused with its variable's name."""
    for name, least in (("WEB_WORKERS", 1), ("WEB_THREADS", 1), ("PROXY_HOPS", 0)):
        if values[name.lower()] < least:
            raise ConfigError(f"PARCOURS_{name}={values[name.lower()]} must be {least} or more")
    if values["log_format"] not in ("text", "json"):
        raise ConfigError(f"PARCOURS_LOG_FORMAT={values['log_format']!r} is not one of: text, json")
