"""A request rate per API key, from the `limits` library: ``PARCOURS_API_RATE`` (``600/minute``
by default, ``0`` for none) in a moving window. Over it, the call is answered 429 with
``Retry-After`` (whole seconds until a request is allowed again).

The counts are kept in the web process's memory: with N gunicorn processes a key gets up to N
times the rate, which the README says. A shared store (Redis) would make it exact, at the cost
of a service we do not otherwise need; the limit is there to keep one integration's loop from
starving the others, not to bill.
"""

from __future__ import annotations

import math
import time
from functools import cache

from flask import current_app
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from designer import ApiError


class RateRefused(ApiError):
    def __init__(self, retry_after: int, rate: str) -> None:
        super().__init__(
            429, "rate_limited",
            f"More than {rate} for this key: retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )  # fmt: skip


def _limiter() -> MovingWindowRateLimiter:
    """The application's counts (one per app: each test's app starts from none)."""
    found: MovingWindowRateLimiter = current_app.extensions.setdefault(
        "parcours_api_rate", MovingWindowRateLimiter(MemoryStorage())
    )
    return found


@cache
def rate_item(rate: str) -> RateLimitItem | None:
    """The parsed setting; None for no limit. A wrong setting is refused at start-up."""
    if rate.strip() in ("", "0"):
        return None
    return parse(rate)


def check(rate: str, key: str) -> None:
    """Count one request of `key` (its name or the bootstrap key's); raise 429 over the rate."""
    item = rate_item(rate)
    if item is None:
        return
    limiter = _limiter()
    if limiter.hit(item, key):
        return
    reset = limiter.get_window_stats(item, key).reset_time
    raise RateRefused(max(1, math.ceil(reset - time.time())), rate)
