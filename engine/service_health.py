"""Is the service well? The database, the worker's heartbeat, each configured provider.

What /api/health answers, with no key, so it never carries a secret, an address or a host:

- database: answers a ``SELECT 1`` (and how many milliseconds it took);
- worker: the newest heartbeat (engine.worker.heartbeats) is at most
  PARCOURS_WORKER_STALE_SECONDS old: ``ok``, else ``stale``; ``none`` when no worker beats;
- providers: each channel of `channels.yaml` that a provider delivers. An SMTP server must
  accept a TCP connection within SMTP_TIMEOUT (the answer is kept PROBE_TTL seconds, so that a
  health check polled every second does not knock on the server every second); every provider
  is then judged by its last delivery as the workers recorded it: ``ok`` (it answered),
  ``failing`` (transient errors, no answer), ``misconfigured`` (the channel is paused), or
  ``unknown`` before a first delivery, which is not a fault.

The status is ``ok`` when every check is, ``down`` without a database, else ``degraded``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from channels.config import resolve_secrets
from channels.email_smtp import SmtpSettings
from channels.errors import ChannelConfigError
from engine.config import Settings
from engine.errors import ScenarioInvalid
from engine.store.db import SQLITE_BEGIN, utcnow
from engine.worker.heartbeats import Beat, read_beats

logger = logging.getLogger(__name__)

SMTP_TIMEOUT = 2.0  # seconds to accept a TCP connection
PROBE_TTL = 30.0  # seconds an SMTP probe's answer is reused
# Provider states that are not a fault.
WELL = frozenset({"ok", "unknown"})

_probes: dict[tuple[str, int], tuple[float, bool]] = {}
_probes_lock = threading.Lock()


def forget_probes() -> None:
    """Drop the kept SMTP answers (the next check connects again)."""
    with _probes_lock:
        _probes.clear()


def smtp_reachable(host: str, port: int, ttl: float = PROBE_TTL) -> bool:
    """Whether `host:port` accepts a TCP connection; an answer is reused for `ttl` seconds.

    A server that greets in plain text (``220``) is told ``QUIT`` and its answer read, so the
    probe ends as an SMTP session does rather than as a dropped connection; an implicit-TLS
    port greets nobody before the handshake and is left at the connection."""
    key = (host, port)
    with _probes_lock:
        kept = _probes.get(key)
    if kept is not None and time.monotonic() - kept[0] < ttl:
        return kept[1]
    try:
        with socket.create_connection(key, timeout=SMTP_TIMEOUT) as conn:
            reachable = True
            conn.settimeout(0.5)
            try:
                if conn.recv(512).startswith(b"220"):
                    conn.sendall(b"QUIT\r\n")
                    conn.recv(512)
            except OSError:
                pass  # no greeting in time (implicit TLS): connecting was the answer
    except OSError:
        reachable = False
    with _probes_lock:
        _probes[key] = (time.monotonic(), reachable)
    return reachable


def check_database(engine: Engine) -> dict[str, Any]:
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        # the class only: a driver's message may name the host
        logger.warning("health check: the database did not answer (%s)", type(exc).__name__)
        return {"state": "fail", "ms": _ms(started)}
    return {"state": "ok", "ms": _ms(started)}


def check_worker(beats: Sequence[Beat], now: datetime, stale_after: float) -> dict[str, Any]:
    if not beats:
        return {"state": "none", "workers": 0}
    ages = [(now - b.last_beat).total_seconds() for b in beats]
    newest = min(ages)
    return {
        "state": "ok" if newest <= stale_after else "stale",
        "seconds": round(max(newest, 0.0), 1),
        "workers": sum(1 for age in ages if age <= stale_after),
    }


def _last_outcome(beats: Sequence[Beat], channel: str) -> Mapping[str, str] | None:
    """The newest delivery outcome of `channel` among the workers' heartbeats."""
    found = [b.providers[channel] for b in beats if isinstance(b.providers.get(channel), Mapping)]
    return max(found, key=lambda o: str(o.get("at", "")), default=None)


def _smtp_address(settings: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, int]:
    """Host and port of an SMTP channel's settings; ChannelConfigError when they are unusable."""
    wanted = {k: settings[k] for k in ("host", "port") if settings.get(k) is not None}
    resolved = resolve_secrets(wanted, environ)
    port = resolved.get("port")
    parsed = SmtpSettings(
        host=str(resolved.get("host", "")), from_address="health@example.com",
        port=int(port) if port is not None else None,
        security=settings.get("security", "starttls"),
    )  # fmt: skip
    return parsed.host, parsed.effective_port


def check_providers(
    scenarios_dir: Path, beats: Sequence[Beat], environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    from engine.delivery.channel_config import CHANNELS_FILE, channel_settings

    environ = os.environ if environ is None else environ
    try:
        configured = channel_settings(scenarios_dir)
    except ScenarioInvalid:
        return {CHANNELS_FILE: {"provider": None, "state": "invalid"}}
    checks: dict[str, dict[str, Any]] = {}
    for channel, settings in sorted(configured.items()):
        provider = settings["provider"]
        if provider == "outbox":
            continue
        last = _last_outcome(beats, channel)
        check: dict[str, Any] = {"provider": provider, "state": "unknown"}
        if last is not None:
            check.update(state=str(last.get("state", "unknown")), last_delivery_at=last.get("at"))
        if provider == "smtp":
            try:
                host, port = _smtp_address(settings, environ)
            except (ChannelConfigError, ValueError, TypeError):
                check["state"] = "misconfigured"
            else:
                if not smtp_reachable(host, port):
                    check["state"] = "unreachable"
                elif check["state"] == "unknown":
                    check["state"] = "ok"
        checks[channel] = check
    return checks


def health_report(
    engine: Engine, settings: Settings, now: datetime | None = None
) -> tuple[str, dict[str, Any]]:
    """The status (ok, degraded, down) and each check's state."""
    database = check_database(engine)
    if database["state"] != "ok":
        return "down", {"database": database, "worker": {"state": "unknown"}, "providers": {}}
    now = now or utcnow()
    try:
        with engine.connect() as conn:
            beats = read_beats(conn)
    except SQLAlchemyError as exc:
        logger.warning("health check: heartbeats unreadable (%s)", type(exc).__name__)
        beats = []
    worker = check_worker(beats, now, settings.worker_stale_seconds)
    providers = check_providers(settings.scenarios_dir, beats)
    checks = {"database": database, "worker": worker, "providers": providers}
    well = worker["state"] == "ok" and all(p["state"] in WELL for p in providers.values())
    return "ok" if well else "degraded", checks


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
