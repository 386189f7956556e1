"""The Health card of the Pressure page: engine.policy.health's signals, with their words.

`health_view(conn, now, policy, zone, scenarios=None)` is what a page needs to draw the card
(`templates/_pressure_health.html`, charts by `static/health.js`); the program and journey pages
call it with their scenario ids to show the same signals for the contacts those journeys reach.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy.engine import Connection

from designer.i18n import current_language
from designer.i18n import gettext as _
from designer.i18n_formats import percent
from engine.policy.health import ChannelHealth, SignalReading, health
from engine.policy.model import HEALTH_SIGNALS, OVER_PRESSURED, Policy


def signal_labels() -> dict[str, str]:
    return {
        "open_rate": _("Open rate"),
        "click_rate": _("Click rate"),
        "unsubscribe_rate": _("Unsubscribe rate"),
        "complaint_rate": _("Complaint rate"),
        "bounce_rate": _("Bounce rate"),
        OVER_PRESSURED: _("Over-pressured contacts"),
    }


def advice(signal: str) -> str:
    """What to do when the signal is raised."""
    words = {
        "open_rate": _("Opens are falling: send less often, or to those who still open."),
        "click_rate": _("Clicks are falling: space the messages out or vary them."),
        "unsubscribe_rate": _("Unsubscribes are rising: lower the caps or the frequency."),
        "complaint_rate": _("Spam complaints: stop the sends at fault, check their consent."),
        "bounce_rate": _("Bounces: clean the addresses before sending again."),
        OVER_PRESSURED: _("More contacts are over-pressured: lower the caps or pause a journey."),
    }
    return words[signal]


def _rate(value: float | None) -> str:
    return percent(value, 2)


def _crossed(s: SignalReading) -> str:
    t = s.threshold
    if t is None or s.crossed is None:
        return ""
    limit = getattr(t, s.crossed)
    if s.crossed in ("max", "min"):
        word = _("above %(limit)s") if s.crossed == "max" else _("below %(limit)s")
        return word % {"limit": _rate(limit)}
    word = (
        _("over %(times)s times its baseline")
        if s.crossed == "rise"
        else _("under %(times)s times its baseline")
    )
    return word % {"times": f"{limit:g}"}


def _signal(s: SignalReading, labels: dict[str, str]) -> dict[str, Any]:
    ratio = s.ratio
    return {"name": s.name, "label": labels[s.name], "value": _rate(s.value),
            "baseline": _rate(s.baseline), "ratio": "—" if ratio is None else f"{ratio:.2f}",
            "raised": s.raised, "crossed": _crossed(s),
            "advice": advice(s.name) if s.raised else ""}  # fmt: skip


def _card(h: ChannelHealth, labels: dict[str, str]) -> dict[str, Any]:
    from designer.insights import channel_label

    series = {name: [None if v is None else round(100 * v, 4) for v in values]
              for name, values in h.series.items()}  # fmt: skip
    return {"channel": h.channel, "label": channel_label(h.channel),
            "sends": h.recent["sends"], "baseline_sends": h.baseline["sends"],
            "contacts": h.recent.get("contacts", 0), "tightened": h.tightened,
            "raised": len(h.raised),
            "signals": [_signal(h.signals[n], labels) for n in HEALTH_SIGNALS],
            "series": series}  # fmt: skip


def health_view(
    conn: Connection, now: datetime, policy: Policy, zone: tzinfo,
    scenarios: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The Health card's data: one entry per channel, the days of the trend, the settings."""
    result = health(conn, now, policy, scenarios, zone)
    labels = signal_labels()
    cfg = result.config
    return {
        "cards": [_card(h, labels) for h in result.channels.values()],
        "days": [d.isoformat() for d in result.days],
        "recent_days": cfg.recent.days, "baseline_days": cfg.baseline.days,
        "min_sends": cfg.min_sends, "tighten": cfg.tighten,
        "raised": len(result.raised()), "scenarios": scenarios,
        "labels": labels, "lang": current_language(),
    }  # fmt: skip
