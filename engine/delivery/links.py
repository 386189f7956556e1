"""Signed links (double opt-in, later unsubscribe and preferences) and the workspace secret.

A token is an itsdangerous `URLSafeTimedSerializer` payload: URL-safe, tamper-proof, timestamped.
Each purpose has its own salt, so a token made for one purpose is refused by every other one.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from engine.config import Settings
from engine.errors import ConfigError, ParcoursError

logger = logging.getLogger(__name__)

SECRET_FILE = "secret_key"


class InvalidLink(ParcoursError):
    """A signed link was altered, made with another key or salt, or is not a token at all."""


class ExpiredLink(InvalidLink):
    """A signed link is genuine but older than its purpose allows."""


class _ClockSigner(TimestampSigner):
    """A timestamp signer that stamps the injected clock's instant instead of the wall clock."""

    def __init__(self, *args: Any, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        if self._now is None:
            return super().get_timestamp()
        return int(self._now.timestamp())


def _serializer(secret: str, salt: str, now: datetime | None = None) -> URLSafeTimedSerializer:
    if not secret:
        raise ConfigError("no secret key for signed links: set PARCOURS_SECRET_KEY")
    return URLSafeTimedSerializer(
        secret, salt=salt, signer=_ClockSigner, signer_kwargs={"now": now}
    )


def sign(secret: str, salt: str, payload: Any, now: datetime | None = None) -> str:
    """A URL-safe token carrying `payload` (JSON data), stamped with `now` (default: the clock)."""
    return str(_serializer(secret, salt, now).dumps(payload))


def verify(
    secret: str,
    salt: str,
    token: str,
    max_age: timedelta | None,
    now: datetime | None = None,
) -> Any:
    """The payload of `token`; InvalidLink if forged or malformed, ExpiredLink if older than
    `max_age` at `now` (default: the wall clock; pass the engine's clock to keep tests honest)."""
    try:
        # The age is checked below against the given clock, not itsdangerous' time.time().
        payload, stamped = _serializer(secret, salt).loads(token, return_timestamp=True)
    except (BadData, UnicodeError, ValueError):
        raise InvalidLink("This link is not valid (altered, truncated or not ours).") from None
    if max_age is not None:
        instant = now if now is not None else datetime.now(UTC)
        if instant - stamped > max_age:
            raise ExpiredLink(f"This link has expired (it was valid for {max_age.days} days).")
    return payload


def secret_key(settings: Settings) -> str:
    """PARCOURS_SECRET_KEY, or the key kept in DATA_DIR/secret_key (created once, mode 0600)."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SECRET_FILE
    try:
        return _read_secret(path) or _create_secret(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read or create {path} ({exc.strerror}): set PARCOURS_SECRET_KEY"
        ) from None


def _read_secret(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    if path.stat().st_mode & 0o077:
        logger.warning("%s is readable by other users; run chmod 600 on it", path)
    return text


def _create_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then hard-linked into place: the link fails if another process won the race,
    # and nobody ever reads a half-written key.
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    text = _read_secret(path)
    if not text:
        raise ConfigError(f"{path} is empty: delete it or set PARCOURS_SECRET_KEY")
    return text
