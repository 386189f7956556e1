"""Pressure health: the early-warning signs of over-pressure, per channel and over time.

Per channel: open, click, unsubscribe, complaint and bounce rates (events over sends) and the
share of contacts over-pressured, over the policy's `recent` span, each compared with its own
trailing baseline (the `baseline` span just before). A signal whose threshold is crossed is
*raised*; with `pressure.health.tighten` the gate multiplies the caps of that channel by the
factor while it stays raised (engine.policy.loading reads the raised channels at most once
every few minutes, not per contact).

Everything is counted by the database, grouped by hour and channel (indexes: sends by channel
and instant, events by name and instant), so the cost follows the number of buckets, not of
contacts or rows. An event counts on the day it happened, a send on the day it was made. The
barometer keeps only the present, so the worker records each day's over-pressured share in
`pressure_health_days` (at most once an hour) to give that signal a history.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, extract, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from channels.registry import channel_names
from engine.policy.model import (
    HEALTH_RATES,
    HEALTH_SIGNALS,
    OVER_PRESSURED,
    HealthConfig,
    Policy,
    PressureConfig,
    Threshold,
)
from engine.store.models import Event, Pressure, PressureHealthDay, Send, UTCDateTime

# What each recorded event counts as (engine.policy.engagement, engine.delivery.tracking/onsite).
COUNTED = {"email_opened": "opens", "onsite_shown": "opens", "email_clicked": "clicks",
           "onsite_clicked": "clicks", "unsubscribed": "unsubscribes"}  # fmt: skip
UNSUBSCRIBED = "unsubscribed"
SUFFIXES = {"_complained": "complaints", "_bounced": "bounces"}  # `<channel>_complained`...
RATE_OF = {"open_rate": "opens", "click_rate": "clicks", "unsubscribe_rate": "unsubscribes",
           "complaint_rate": "complaints", "bounce_rate": "bounces"}  # fmt: skip
# What to do when a signal is raised (the page translates these).
ADVICE = {
    "open_rate": "Opens are falling: send less often, or to the contacts who still open.",
    "click_rate": "Clicks are falling: the messages interest less; space them out or vary them.",
    "unsubscribe_rate": "Unsubscribes are rising: lower the caps or the journeys' frequency.",
    "complaint_rate": "Spam complaints: stop the sends at fault and check their consent.",
    "bounce_rate": "Bounces: clean the addresses before sending again.",
    OVER_PRESSURED: "More contacts are over-pressured: lower the caps or pause a journey.",
}
REFRESH = timedelta(minutes=5)  # how often the gate reads the raised signals again
SNAPSHOT = timedelta(hours=1)  # how often the worker records the day's over-pressured share
_HOUR = {"postgresql": "YYYY-MM-DD HH24"}


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class SignalReading:
    """One signal of one channel: its value over the recent span, its baseline and the verdict.
    `crossed` names the threshold crossed (max, min, rise, fall), None when not raised."""

    name: str
    value: float | None
    baseline: float | None
    threshold: Threshold | None
    crossed: str | None = None

    @property
    def raised(self) -> bool:
        return self.crossed is not None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def difference(self) -> float | None:
        if self.value is None or self.baseline is None:
            return None
        return self.value - self.baseline

    def to_dict(self) -> dict[str, Any]:
        t = self.threshold
        limits = None if t is None else {k: v for k, v in t.__dict__.items() if v is not None}
        return {
            "value": _round(self.value), "baseline": _round(self.baseline),
            "ratio": _round(self.ratio), "difference": _round(self.difference),
            "threshold": limits,
            "raised": self.raised, "crossed": self.crossed,
        }  # fmt: skip


@dataclass
class ChannelHealth:
    """A channel's counts over the recent span and the baseline, its signals and daily series."""

    channel: str
    recent: dict[str, int] = field(default_factory=dict)  # sends, opens, clicks...
    baseline: dict[str, int] = field(default_factory=dict)
    signals: dict[str, SignalReading] = field(default_factory=dict)
    series: dict[str, list[float | None]] = field(
        default_factory=dict
    )  # signal → per day, trailing
    tightened: bool = False

    @property
    def raised(self) -> list[SignalReading]:
        return [s for s in self.signals.values() if s.raised]

    def to_dict(self) -> dict[str, Any]:
        return {
            "recent": self.recent, "baseline": self.baseline, "tightened": self.tightened,
            "signals": {n: s.to_dict() for n, s in self.signals.items()},
            "raised": [s.name for s in self.raised], "series": self.series,
        }  # fmt: skip


@dataclass
class HealthResult:
    """What `health()` found: the spans, the days of the series and each channel's health."""

    now: datetime
    recent_start: datetime
    baseline_start: datetime
    days: list[date]
    config: HealthConfig
    scenarios: tuple[str, ...] | None = None
    channels: dict[str, ChannelHealth] = field(default_factory=dict)

    def raised(self) -> list[tuple[str, SignalReading]]:
        """(channel, signal) for every raised signal."""
        return [(c, s) for c, h in self.channels.items() for s in h.raised]

    def raised_channels(self) -> frozenset[str]:
        return frozenset(c for c, _ in self.raised())

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "now": self.now.isoformat(), "recent_start": self.recent_start.isoformat(),
            "baseline_start": self.baseline_start.isoformat(), "min_sends": cfg.min_sends,
            "tighten": cfg.tighten, "scenarios": list(self.scenarios) if self.scenarios else None,
            "days": [d.isoformat() for d in self.days],
            "channels": {c: h.to_dict() for c, h in self.channels.items()},
            "raised": [{"channel": c, "signal": s.name, "crossed": s.crossed}
                       for c, s in self.raised()],
        }  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# ---------------------------------------------------------------- judging (pure)


def judge(
    value: float | None, baseline: float | None, threshold: Threshold | None,
    enough: bool, enough_baseline: bool,
) -> str | None:  # fmt: skip
    """Which threshold `value` crosses (max, min, rise, fall), or None. Absolute thresholds
    need `enough` sends; the ones relative to the baseline need enough in both spans and a
    baseline above zero (a ratio to nothing says nothing)."""
    if threshold is None or value is None or not enough:
        return None
    if threshold.max is not None and value > threshold.max:
        return "max"
    if threshold.min is not None and value < threshold.min:
        return "min"
    if not enough_baseline or not baseline:
        return None
    if threshold.rise is not None and value > baseline * threshold.rise:
        return "rise"
    if threshold.fall is not None and value < baseline * threshold.fall:
        return "fall"
    return None


def _rate(counts: Mapping[str, int], name: str) -> float | None:
    sends = counts.get("sends", 0)
    return counts.get(name, 0) / sends if sends else None


# ---------------------------------------------------------------- SQL helpers


def hour_bucket(conn: Connection, column: Any) -> Any:
    """The UTC hour of a timestamp as text `YYYY-MM-DD HH`, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), _HOUR["postgresql"])
    # SQLite keeps UTC instants as text, `YYYY-MM-DD HH:MM:SS.ffffff`: the hour is its start.
    return func.substr(column, 1, 13)


def age_seconds(conn: Connection, now: datetime) -> Any:
    """Seconds from each barometer row's last update to `now`, in the connection's dialect."""
    at = bindparam("now", now, type_=UTCDateTime())
    if conn.dialect.name == "postgresql":
        return extract("epoch", at - Pressure.updated_at)
    return (func.julianday(at) - func.julianday(Pressure.updated_at)) * 86400.0


def exp2(conn: Connection, value: Any) -> Any:
    """2 ** value in SQL (SQLite's math functions are a compile-time option: bring ours)."""
    if conn.dialect.name == "postgresql":
        return func.power(2.0, value)
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.create_function("parcours_exp2", 1, math.exp2, deterministic=True)
    return func.parcours_exp2(value)


def decayed_score(conn: Connection, now: datetime, cfg: PressureConfig) -> Any:
    """Each barometer row's score decayed to `now`, as `engine.policy.pressure.decayed` does."""
    age = age_seconds(conn, now)
    halves = age / cfg.half_life.total_seconds()
    return case((age <= 0, Pressure.score), else_=Pressure.score * exp2(conn, -halves))


def _local_day(bucket: str, zone: tzinfo) -> date:
    # Hours fold into the workspace's local days (exact for zones a whole hour from UTC).
    return datetime.strptime(bucket, "%Y-%m-%d %H").replace(tzinfo=UTC).astimezone(zone).date()


def _channel_of(name: str, channel: str | None, known: Collection[str]) -> tuple[str, str] | None:
    """(counted name, channel) of an event row, or None when it names no known channel. Every
    counted name but `unsubscribed` starts with its channel (`email_opened`, `sms_bounced`)."""
    counted = COUNTED.get(name)
    for suffix, what in SUFFIXES.items():
        if name.endswith(suffix):
            counted = what
    if channel is None and name != UNSUBSCRIBED:
        channel = name.partition("_")[0]
    if counted is None or channel is None or channel not in known:
        return None
    return counted, channel


def event_names() -> list[str]:
    """Every event name the health signals count."""
    names = list(COUNTED)
    for channel in channel_names():
        names += [f"{channel}{suffix}" for suffix in SUFFIXES]
    return names


# ---------------------------------------------------------------- counting


Buckets = dict[str, dict[date, dict[str, int]]]  # channel → day → counted name → n


class _Counter:
    """Folds (hour, recent?, channel, name, n) rows into per-day buckets and span totals."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self.days: Buckets = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        self.recent: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.baseline: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, bucket: str, recent: Any, channel: str, name: str, n: int) -> None:
        self.days[channel][_local_day(bucket, self.zone)][name] += n
        (self.recent if recent else self.baseline)[channel][name] += n


def _count_sends(
    conn: Connection, counter: _Counter, start: datetime, split: datetime, now: datetime,
    scenarios: Collection[str] | None, known: Collection[str],
) -> None:  # fmt: skip
    """Sends by hour, span and channel, less the cancelled ones (which never left). Unfiltered,
    the (channel, created_at) index answers alone; the cancelled are few, found by status."""
    hour = hour_bucket(conn, Send.created_at)
    recent = case((Send.created_at >= split, literal(1)), else_=literal(0))
    window = (Send.created_at >= start, Send.created_at < now, Send.channel.in_(list(known)))
    if scenarios is not None:
        sent = select(hour, recent, Send.channel, func.count()).where(
            *window, Send.status != "cancelled", Send.scenario_id.in_(list(scenarios))
        )
        queries = [(sent, 1)]
    else:
        every = select(hour, recent, Send.channel, func.count()).where(*window)
        # Through the status index: SQLite's statistics cannot tell that "cancelled" is rare.
        gone = aliased(Send)
        cancelled = select(hour, recent, Send.channel, func.count()).where(
            Send.id.in_(select(gone.id).where(gone.status == "cancelled")), *window[:2]
        )
        queries = [(every, 1), (cancelled, -1)]
    for stmt, sign in queries:
        for bucket, is_recent, channel, n in conn.execute(
            stmt.group_by(hour, recent, Send.channel)
        ):
            counter.add(bucket, is_recent, channel, "sends", sign * int(n))


def _count_events(
    conn: Connection, counter: _Counter, start: datetime, split: datetime, now: datetime,
    scenarios: Collection[str] | None, known: Collection[str],
) -> None:  # fmt: skip
    """Events by hour, span and name: read from the (name, occurred_at) index alone, except
    unsubscribes (their channel is a property) and, for `scenarios`, the join to their send."""
    hour = hour_bucket(conn, Event.occurred_at)
    recent = case((Event.occurred_at >= split, literal(1)), else_=literal(0))
    window = (Event.occurred_at >= start, Event.occurred_at < now)
    names = event_names()
    if scenarios is not None:  # an event belongs to a journey through the send it came from
        key: ColumnElement[Any] = Event.properties["send_key"].as_string()
        stmt = (
            select(hour, recent, Event.name, Send.channel, func.count())
            .join(Send, Send.send_key == key)
            .where(Event.name.in_(names), *window, Send.scenario_id.in_(list(scenarios)))
            .group_by(hour, recent, Event.name, Send.channel)
        )
        queries = [stmt]
    else:
        prop: ColumnElement[Any] = Event.properties["channel"].as_string()
        named = [n for n in names if n != UNSUBSCRIBED]
        queries = [
            select(hour, recent, Event.name, literal(None), func.count())
            .where(Event.name.in_(named), *window)
            .group_by(hour, recent, Event.name),
            select(hour, recent, Event.name, prop, func.count())
            .where(Event.name == UNSUBSCRIBED, *window)
            .group_by(hour, recent, Event.name, prop),
        ]
    for stmt in queries:
        for bucket, is_recent, name, channel, n in conn.execute(stmt):
            found = _channel_of(name, channel, known)
            if found is not None:
                counter.add(bucket, is_recent, found[1], found[0], int(n))


def over_counts(
    conn: Connection, now: datetime, cfg: PressureConfig, contacts: Any = None
) -> dict[str, tuple[int, int]]:
    """channel ("*": overall) → (contacts with a reading, of them over-pressured) as of `now`,
    decayed as the engine decays; `contacts`: a subquery of contact ids. Decay only brings a
    score towards zero, so only the rows stored above `over` are decayed to be judged."""
    over = case((decayed_score(conn, now, cfg) > cfg.over, literal(1)), else_=literal(0))
    rows = select(Pressure.channel, func.count()).group_by(Pressure.channel)
    high = select(Pressure.channel, func.sum(over)).where(Pressure.score > cfg.over)
    if contacts is not None:
        rows = rows.where(Pressure.contact_id.in_(contacts))
        high = high.where(Pressure.contact_id.in_(contacts))
    found = {c: int(n) for c, n in conn.execute(rows)}
    overs: dict[str, Any] = {c: o for c, o in conn.execute(high.group_by(Pressure.channel))}
    return {c: (n, int(overs.get(c) or 0)) for c, n in found.items()}


def record_health_day(conn: Connection, now: datetime, cfg: PressureConfig, zone: tzinfo) -> int:
    """Record today's over-pressured counts per channel (replacing today's earlier ones)."""
    day = now.astimezone(zone).date()
    rows = [{"day": day, "channel": c, "contacts": n, "over": o, "counted_at": now}
            for c, (n, o) in sorted(over_counts(conn, now, cfg).items())]  # fmt: skip
    if not rows:
        return 0
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(PressureHealthDay).values(rows)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["day", "channel"],
            set_={
                "contacts": stmt.excluded.contacts,
                "over": stmt.excluded.over,
                "counted_at": stmt.excluded.counted_at,
            },
        )
    )
    return len(rows)


def _over_history(conn: Connection, first: date, last: date) -> dict[str, dict[date, float]]:
    out: dict[str, dict[date, float]] = defaultdict(dict)
    for day, channel, n, o in conn.execute(
        select(PressureHealthDay.day, PressureHealthDay.channel, PressureHealthDay.contacts,
               PressureHealthDay.over)
        .where(PressureHealthDay.day >= first, PressureHealthDay.day <= last)
    ):  # fmt: skip
        if n:
            out[channel][day] = o / n
    return out


# ---------------------------------------------------------------- health


def health(
    conn: Connection,
    now: datetime,
    policy: Policy,
    scenarios: Collection[str] | None = None,
    zone: tzinfo = UTC,
) -> HealthResult:
    """Each channel's health signals as of `now` (see the module's docstring).

    `scenarios`: only the sends of these scenarios and the events that came from them (opens,
    clicks, link unsubscribes, complaints and bounces name their send), and the over-pressured
    share of the contacts those scenarios sent to in the recent span (no history for it).
    """
    cfg = policy.pressure.health
    split = now - cfg.recent
    start = split - cfg.baseline
    first, today = start.astimezone(zone).date(), now.astimezone(zone).date()
    days = [first + timedelta(days=n) for n in range((today - first).days + 1)]
    known = [c for c in channel_names() if c != "webhook"]
    counter = _Counter(zone)
    wanted = None if scenarios is None else tuple(sorted(set(scenarios)))
    _count_sends(conn, counter, start, split, now, wanted, known)
    _count_events(conn, counter, start, split, now, wanted, known)
    result = HealthResult(now, split, start, days, cfg, wanted)
    shares = _shares(conn, now, policy.pressure, wanted, split)
    history = {} if wanted else _over_history(conn, first, today)
    channels = [c for c in known if c in counter.days or c in shares]
    for channel in channels:
        result.channels[channel] = _channel(
            channel, counter, shares.get(channel), history.get(channel, {}), days, split, cfg,
            zone,
        )  # fmt: skip
    if cfg.tighten is not None:
        for channel_health in result.channels.values():
            channel_health.tightened = bool(channel_health.raised)
    return result


def _shares(
    conn: Connection, now: datetime, cfg: PressureConfig, scenarios: tuple[str, ...] | None,
    since: datetime,
) -> dict[str, tuple[int, int]]:  # fmt: skip
    contacts = None
    if scenarios is not None:
        contacts = select(Send.contact_id).where(
            Send.scenario_id.in_(list(scenarios)), Send.created_at >= since
        )
    return over_counts(conn, now, cfg, contacts)


def _channel(
    channel: str, counter: _Counter, share: tuple[int, int] | None,
    history: Mapping[date, float], days: list[date], split: datetime, cfg: HealthConfig,
    zone: tzinfo,
) -> ChannelHealth:  # fmt: skip
    recent, baseline = (
        dict(counter.recent.get(channel, {})),
        dict(counter.baseline.get(channel, {})),
    )
    recent.setdefault("sends", 0)
    baseline.setdefault("sends", 0)
    out = ChannelHealth(channel, recent, baseline)
    enough, enough_base = recent["sends"] >= cfg.min_sends, baseline["sends"] >= cfg.min_sends
    per_day = counter.days.get(channel, {})
    for name in HEALTH_RATES:
        counted = RATE_OF[name]
        value, base = _rate(recent, counted), _rate(baseline, counted)
        threshold = cfg.signals.get(name)
        crossed = judge(value, base, threshold, enough, enough_base)
        out.signals[name] = SignalReading(name, value, base, threshold, crossed)
        out.series[name] = _trailing(per_day, days, counted, cfg.recent.days)
    contacts, over = share or (0, 0)
    value = over / contacts if contacts else None
    split_day = split.astimezone(zone).date()
    before = [v for d, v in history.items() if d < split_day]
    base = sum(before) / len(before) if before else None
    enough = contacts >= cfg.min_sends
    threshold = cfg.signals.get(OVER_PRESSURED)
    crossed = judge(value, base, threshold, enough, enough and bool(before))
    out.signals[OVER_PRESSURED] = SignalReading(OVER_PRESSURED, value, base, threshold, crossed)
    out.series[OVER_PRESSURED] = [history.get(d) for d in days[:-1]] + [value]
    out.recent["contacts"], out.recent["over_pressured"] = contacts, over
    return out


def _trailing(
    per_day: Mapping[date, Mapping[str, int]], days: list[date], counted: str, span: int
) -> list[float | None]:
    """Each day's rate over the `span` days ending that day, like the recent span's value: an
    open counts the day it happened, its send the day it left, so one day alone says little."""
    out: list[float | None] = []
    for i in range(len(days)):
        window = [per_day.get(d, {}) for d in days[max(0, i - span + 1) : i + 1]]
        sends = sum(c.get("sends", 0) for c in window)
        out.append(sum(c.get(counted, 0) for c in window) / sends if sends else None)
    return out


# ---------------------------------------------------------------- for the gate and the report


class HealthWatch:
    """The channels whose caps the gate tightens, read again at most every `REFRESH` of the
    engine's clock; and the day's over-pressured share, recorded at most every `SNAPSHOT`."""

    def __init__(self, policy: Policy, zone: tzinfo) -> None:
        self.policy, self.zone = policy, zone
        self.channels: frozenset[str] = frozenset()
        self._read_at: datetime | None = None
        self._recorded_at: datetime | None = None

    def tightened(self, conn: Connection, now: datetime) -> frozenset[str]:
        """Channels with a raised signal (when the policy tightens; else none)."""
        if _due(self._recorded_at, now, SNAPSHOT):
            record_health_day(conn, now, self.policy.pressure, self.zone)
            self._recorded_at = now
        if self.policy.pressure.health.tighten is None:
            return frozenset()
        if _due(self._read_at, now, REFRESH):
            self.channels = health(conn, now, self.policy, zone=self.zone).raised_channels()
            self._read_at = now
        return self.channels


def _due(last: datetime | None, now: datetime, every: timedelta) -> bool:
    # A clock that went back (a simulation restarted) reads again too.
    return last is None or now >= last + every or now < last


def health_lines(result: HealthResult) -> list[str]:
    """The report's lines: per channel the rates against the baseline, raised signals marked."""
    cfg = result.config
    lines = [
        f"pressure health: last {cfg.recent.days}d against the {cfg.baseline.days}d before "
        f"(signals count from {cfg.min_sends} sends)"
    ]
    if not result.channels:
        lines.append("  (no sends)")
    for channel, h in result.channels.items():
        note = f", caps x{cfg.tighten:g}" if h.tightened else ""
        lines.append(
            f"  {channel}: {h.recent['sends']} sends (baseline {h.baseline['sends']}){note}"
        )
        for name in HEALTH_SIGNALS:
            s = h.signals[name]
            mark = f"  RAISED ({s.crossed})" if s.raised else ""
            lines.append(f"    {name:<17}{_pct(s.value):>9}  baseline {_pct(s.baseline):>9}{mark}")
    for channel, s in result.raised():
        lines.append(f"  ! {channel} {s.name}: {ADVICE[s.name]}")
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"
