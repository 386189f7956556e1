"""Channel errors say whether a retry makes sense.

ChannelError
 ├── TransientChannelError   try again later (timeout, 5xx, rate limit); may carry retry_after
 │    └── AmbiguousDeliveryError   the provider may have accepted it: mark `ambiguous`, don't resend
 └── PermanentChannelError   do not retry (invalid recipient, hard bounce, rejected content)
      └── ChannelConfigError       the channel itself is misconfigured (credentials, TLS, secrets):
                                   no message can pass until an operator fixes the configuration,
                                   so pause the channel rather than fail each recipient
"""

from __future__ import annotations


class ChannelError(Exception):
    """Root of every delivery error."""


class TransientChannelError(ChannelError):
    """The provider may accept the same message later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AmbiguousDeliveryError(TransientChannelError):
    """The outcome is unknown: the provider got the whole message but its answer never arrived.

    A blind retry could deliver twice; the delivery loop applies the channel's ambiguous policy.
    """


class PermanentChannelError(ChannelError):
    """The provider will never accept this message for this recipient.

    `bounce`: the address itself is bad (unknown mailbox, invalid number); the delivery loop
    then puts it on the suppression list so no later message tries it again.
    """

    def __init__(self, message: str, bounce: bool = False) -> None:
        super().__init__(message)
        self.bounce = bounce


class ChannelConfigError(PermanentChannelError):
    """The channel cannot send anything as configured; messages name the setting, never a secret."""
