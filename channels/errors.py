"""Channel errors say whether a retry makes sense.

ChannelError
 ├── TransientChannelError   try again later (timeout, 5xx, rate limit); may carry retry_after
 └── PermanentChannelError   do not retry (invalid recipient, hard bounce, rejected content)
"""

from __future__ import annotations


class ChannelError(Exception):
    """Root of every delivery error."""


class TransientChannelError(ChannelError):
    """The provider may accept the same message later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentChannelError(ChannelError):
    """The provider will never accept this message for this recipient."""
