"""The pressure dashboard's figures: aggregate queries over a connection, plain data out.

The database does the counting (GROUP BY), in SQL that SQLite and PostgreSQL both run; Python
merely folds at most a few hundred buckets. Words (labels, translations) are the page's business.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection

from channels.registry import channel_names
from engine.policy.health import decayed_score, hour_bucket
from engine.policy.model import MARKETING, CapRule, Policy, PressureConfig
from engine.policy.pressure import NO_READING
from engine.spec.conditions import OVERALL, PRESSURE_STATES
from engine.store.models import Contact, JournalEntry, Pressure, Send

DAYS = 30  # the dashboard's period


def _channel_order(channels: Any) -> list[str]:
    """Overall first, then the registry's order, then unknown channels by name."""
    known = channel_names()
    return sorted(channels, key=lambda c: (c != OVERALL, known.index(c) if c in known else 99, c))


def barometer_counts(conn: Connection, now: datetime, cfg: PressureConfig) -> dict[str, Any]:
    """Contacts per barometer state and channel as of `now`, the scores decayed as the engine
    decays them (`engine.policy.pressure.decayed`, `state_of`), counted by the database."""
    score = decayed_score(conn, now, cfg)
    state = case((score < cfg.under, "under"), (score > cfg.over, "over"), else_="equilibrium")
    rows = select(Pressure.channel, state.label("state")).subquery()
    counts: dict[str, dict[str, int]] = {OVERALL: dict.fromkeys(PRESSURE_STATES, 0)}
    for channel, name, n in conn.execute(
        select(rows.c.channel, rows.c.state, func.count()).group_by(rows.c.channel, rows.c.state)
    ):
        counts.setdefault(channel, dict.fromkeys(PRESSURE_STATES, 0))[name] = int(n)
    # A contact without a reading is counted as conditions and caps read it.
    contacts = conn.execute(select(func.count()).select_from(Contact)).scalar_one()
    counts[OVERALL][NO_READING] += max(0, contacts - sum(counts[OVERALL].values()))
    order = _channel_order(counts)
    return {"channels": order, "counts": {c: counts[c] for c in order}}


def per_day(cap: CapRule) -> float | None:
    """The cap's allowance per contact per day; None for a cap with neither calendar nor window."""
    if cap.calendar == "day":
        return cap.max
    if cap.calendar == "week":
        return cap.max / 7
    if cap.window:
        return cap.max * 86400 / cap.window.total_seconds()
    return None


def daily_caps(policy: Policy, reachable: int) -> list[dict[str, Any]]:
    """Each cap as a daily ceiling for the whole base: per contact per day, times the contacts."""
    out = []
    for cap in policy.caps:
        allowance = per_day(cap)
        if allowance is None:
            continue
        out.append({"id": cap.id, "channels": list(cap.channels), "max": cap.max,
                    "per_contact": allowance, "ceiling": allowance * reachable,
                    "weighted": cap.weighted})  # fmt: skip
    return out


def _sends_per_day(
    conn: Connection, start: datetime, now: datetime, days: list[Any], zone: tzinfo
) -> dict[str, list[int]]:
    """Marketing sends per channel and local day, counted per UTC hour by the database."""
    hour = hour_bucket(conn, Send.created_at)
    sends: dict[str, list[int]] = {}
    for bucket, channel, n in conn.execute(
        select(hour, Send.channel, func.count())
        .where(Send.created_at >= start, Send.created_at <= now, Send.kind == "marketing")
        .group_by(hour, Send.channel)
    ):
        # Hours fold into the workspace's local days (exact for zones a whole hour from UTC).
        day = datetime.strptime(bucket, "%Y-%m-%d %H").replace(tzinfo=UTC).astimezone(zone).date()
        if days[0] <= day <= days[-1]:
            sends.setdefault(channel, [0] * DAYS)[(day - days[0]).days] += int(n)
    return sends


def board(conn: Connection, now: datetime, policy: Policy, zone: tzinfo) -> dict[str, Any]:
    """The dashboard's figures over the last `DAYS` days, in `zone`'s days; reasons as rule ids."""
    today = now.astimezone(zone).date()
    days = [today - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    start = datetime.combine(days[0], datetime.min.time(), zone).astimezone(UTC)
    midnight = datetime.combine(today, datetime.min.time(), zone).astimezone(UTC)
    sends = _sends_per_day(conn, start, now, days, zone)
    reasons = conn.execute(
        select(JournalEntry.reason, func.count().label("n"))
        .where(JournalEntry.kind == "decision", JournalEntry.at >= start, JournalEntry.at <= now)
        .group_by(JournalEntry.reason)
        .order_by(func.count().desc(), JournalEntry.reason)
        .limit(10)
    ).all()
    blocked_today = conn.execute(
        select(func.count())
        .select_from(JournalEntry)
        .where(JournalEntry.kind == "decision", JournalEntry.at >= midnight, JournalEntry.at <= now)
    ).scalar_one()
    reachable = conn.execute(
        select(func.count()).select_from(Contact).where(Contact.opted_out.is_(False))
    ).scalar_one()
    barometer = barometer_counts(conn, now, policy.pressure)
    channels = _channel_order(sends)
    caps = daily_caps(policy, reachable)
    for cap in caps:  # the busiest day's share of the ceiling
        covered = [
            s for c, s in sends.items() if MARKETING in cap["channels"] or c in cap["channels"]
        ]
        busiest = max((sum(day) for day in zip(*covered, strict=True)), default=0)
        cap["peak"] = round(busiest / cap["ceiling"], 4) if cap["ceiling"] else 0.0
    sent_today = sum(series[-1] for series in sends.values())
    tried = sent_today + blocked_today
    return {
        "barometer": {**barometer, "states": list(PRESSURE_STATES)},
        "sends": {"days": [d.isoformat() for d in days], "channels": channels,
                  "series": {c: sends[c] for c in channels}, "reachable": reachable,
                  "totals": [sum(day) for day in zip(*sends.values(), strict=True)] or [0] * DAYS,
                  "caps": caps},
        "reasons": [{"reason": r or "", "count": int(n)} for r, n in reasons],
        "stats": {"over_now": barometer["counts"][OVERALL]["over"], "sends_today": sent_today,
                  "blocked_today": int(blocked_today),
                  "share_blocked": round(blocked_today / tried, 4) if tried else 0.0},
    }  # fmt: skip
