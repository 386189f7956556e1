"""One push message, many targets: a contact's browsers (Web Push) or devices (mobile push).

Each target answers on its own; `Fanout` turns the answers into the one outcome the delivery
loop understands:

- at least one target accepted: a Receipt (failures of the others are not retried: a retry
  would notify the accepting ones twice);
- none accepted, one may have it (no answer): AmbiguousDeliveryError;
- none accepted, one failed for a passing reason (429, 5xx, network): TransientChannelError,
  with the longest Retry-After;
- every target gone (404/410): TargetsGone, a bounce;
- otherwise the first permanent error.

Gone targets are handed to `on_gone` whatever the outcome, so the engine deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from channels.errors import (
    AmbiguousDeliveryError,
    ChannelConfigError,
    ChannelError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.message import Receipt
from channels.pinned_http import Answer, retry_after

logger = logging.getLogger(__name__)

GONE_STATUSES = frozenset({404, 410})
RETRYABLE_STATUSES = frozenset({408, 425, 429})
MAX_ERROR_TEXT = 200

OnGone = Callable[[str], None]


class TargetGone(PermanentChannelError):
    """The push service or provider no longer knows this subscription or device."""

    def __init__(self, message: str) -> None:
        super().__init__(message, bounce=True)


class TargetsGone(PermanentChannelError):
    """Every target of the recipient is gone; `gone` lists them (endpoints or device tokens).

    A bounce: the engine deletes the targets (through `on_gone`); the message names only their
    origins, since an endpoint URL or a device token is a credential to notify someone.
    """

    def __init__(self, message: str, gone: tuple[str, ...]) -> None:
        super().__init__(message, bounce=True)
        self.gone = gone


def check_answer(answer: Answer, what: str, now: float, *, auth_is_config: bool) -> None:
    """Raise the error an answer means; return for a 2xx.

    `auth_is_config`: a 401/403 means the channel's credentials are wrong for every recipient
    (a provider token), not just for this target.
    """
    status = answer.status
    if 200 <= status < 300:
        return
    detail = _error_text(answer.body)
    where = f"{what} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status in GONE_STATUSES:
        raise TargetGone(f"{where} (the subscription is gone)")
    if status == 413:
        raise PermanentChannelError(f"{where} (the payload is too large)")
    if status in RETRYABLE_STATUSES or status >= 500:
        raise TransientChannelError(where, retry_after=retry_after(answer.headers, now))
    if status in (401, 403):
        if auth_is_config:
            raise ChannelConfigError(f"{where} (check the channel's credentials)")
        raise PermanentChannelError(f"{where} (the credentials were refused for this target)")
    raise PermanentChannelError(where)


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return " ".join(text.split())[:MAX_ERROR_TEXT]


@dataclass
class Fanout:
    """The answers of one message's targets, added up into one outcome."""

    what: str  # "push <send key>", for messages
    accepted: int = 0
    gone: list[str] = field(default_factory=list)
    gone_origins: list[str] = field(default_factory=list)
    errors: list[ChannelError] = field(default_factory=list)
    forgotten: bool = False  # the gone targets were handed to on_gone

    def add_error(self, target: str, origin: str, error: ChannelError) -> None:
        """Record a target's failure (a TargetGone marks the target for deletion)."""
        if isinstance(error, TargetGone):
            self.gone.append(target)
            self.gone_origins.append(origin)
        else:
            self.errors.append(error)

    def outcome(self, total: int, provider_id: str, on_gone: OnGone | None) -> Receipt:
        """The Receipt, or the error to raise, once every target has answered."""
        self.forgotten = self._report_gone(on_gone)
        if self.accepted:
            return Receipt(provider_id=f"{provider_id}:{self.accepted}/{total}")
        ambiguous = [e for e in self.errors if isinstance(e, AmbiguousDeliveryError)]
        if ambiguous:
            raise ambiguous[0]
        config = [e for e in self.errors if isinstance(e, ChannelConfigError)]
        if config:
            raise config[0]
        transient = [e for e in self.errors if isinstance(e, TransientChannelError)]
        if transient:
            waits = [e.retry_after for e in transient if e.retry_after is not None]
            raise TransientChannelError(
                f"{transient[0]}" + self._gone_note(), retry_after=max(waits) if waits else None
            )
        if self.errors:
            first = self.errors[0]
            if not self.gone:
                raise first  # as the target said it (BlockedAddress keeps its type)
            raise PermanentChannelError(f"{first}" + self._gone_note())
        origins = ", ".join(sorted(set(self.gone_origins)))
        raise TargetsGone(
            f"{self.what}: all {len(self.gone)} target(s) are gone ({origins})"
            + ("; deleted" if self.forgotten else ""),
            tuple(self.gone),
        )

    def _gone_note(self) -> str:
        if not self.gone:
            return ""
        return f"; {len(self.gone)} target(s) gone" + (", deleted" if self.forgotten else "")

    def _report_gone(self, on_gone: OnGone | None) -> bool:
        if on_gone is None or not self.gone:
            return False
        for target in self.gone:
            try:
                on_gone(target)
            except Exception:  # deleting a dead target must not change the send's outcome
                logger.exception("%s: forgetting a gone push target failed", self.what)
                return False
        return True
