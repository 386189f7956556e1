"""The pressure barometer: a score per contact, overall ("*") and per channel, that decays with a
half-life, rises with weighted sends and negative signals, and falls with engagement.

It is updated incrementally, never recomputed from history: a batch reads its contacts' rows (one
query), decays them to now, adds its contributions and upserts the rows it touched (one
statement). Each contribution is decayed from its own instant, so the score does not depend on the
order in which sends and events arrive: ``score(T) = Σ delta_i * 0.5 ** ((T - t_i) / half_life)``.
The score is not clamped at zero: a very engaged contact absorbs more sends before over-pressure.

A channel (or a contact) with no reading yet is in equilibrium, wherever it is read: conditions,
caps, `parcours contact show` and the designer. Nothing is known of a contact never contacted, so
it gets neither the caps' under-pressure bonus nor their over-pressure cut.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from channels.registry import channel_info, channel_names
from engine.policy.consent import consent_snapshot, derived_state
from engine.policy.model import Policy, PressureConfig
from engine.runtime.state import ContactView
from engine.spec.conditions import OVERALL, PRESSURE_STATES
from engine.spec.durations import format_duration
from engine.store.bulk import one_list
from engine.store.models import Pressure

UNDER, EQUILIBRIUM, OVER = PRESSURE_STATES
NO_READING = EQUILIBRIUM  # the state of a channel, or a contact, with no barometer row
SEND, EVENT = "send", "event"
KEEP = 20  # contributions kept per row, to explain its state
_CHANNEL_MAX = 32  # pressure.channel is a String(32)

# (contact_id, channel, at) per send; (contact_id, name, properties, at) per event.
SendItem = tuple[int, str, datetime]
EventItem = tuple[int, str, Mapping[str, Any] | None, datetime]


# ---------------------------------------------------------------- pure


def decayed(score: float, since: datetime | None, now: datetime, half_life: timedelta) -> float:
    """`score` as of `since`, decayed to `now`; unchanged when `now` is not after `since`."""
    if since is None or now <= since or score == 0.0:
        return score
    return score * math.exp2(-((now - since) / half_life))


def state_of(score: float, cfg: PressureConfig) -> str:
    """under below `cfg.under`, over above `cfg.over`, equilibrium in between (bounds included)."""
    if score < cfg.under:
        return UNDER
    if score > cfg.over:
        return OVER
    return EQUILIBRIUM


@dataclass
class Reading:
    """One row of a barometer: the score as of `at`, its state, its latest contributions."""

    score: float = 0.0
    at: datetime | None = None
    state: str = NO_READING
    signals: list[dict[str, Any]] = field(default_factory=list)  # oldest first, at most KEEP


@dataclass
class Barometer:
    """A contact's readings by channel ("*": overall), and which of them changed since loading."""

    contact_id: int
    rows: dict[str, Reading] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)

    def reading(self, channel: str = OVERALL) -> Reading:
        """The channel's row, else the overall one, else an empty reading."""
        return self.rows.get(channel) or self.rows.get(OVERALL) or Reading()

    def decay_to(self, now: datetime, cfg: PressureConfig) -> None:
        """Bring every row forward to `now` and refresh its state (a row past `now` stays)."""
        for row in self.rows.values():
            if row.at is None or row.at < now:
                row.score = decayed(row.score, row.at, now, cfg.half_life)
                row.at = now
            row.state = state_of(row.score, cfg)

    def add(
        self,
        channel: str | None,
        delta: float,
        kind: str,
        name: str,
        at: datetime,
        cfg: PressureConfig,
    ) -> None:
        """Add a contribution made at `at` to the overall row and to `channel`'s row, if any."""
        entry = {"at": _iso(at), "kind": kind, "name": name, "channel": channel, "delta": delta}
        targets = [OVERALL] if channel is None or channel == OVERALL else [OVERALL, channel]
        for target in targets:
            row = self.rows.get(target)
            if row is None:
                row = self.rows[target] = Reading()
            if row.at is None or at >= row.at:
                row.score = decayed(row.score, row.at, at, cfg.half_life) + delta
                row.at = at
            else:  # arrived late: it is worth what it has decayed to by the row's instant
                row.score += decayed(delta, at, row.at, cfg.half_life)
            row.state = state_of(row.score, cfg)
            _remember(row.signals, dict(entry))
            self.touched.add(target)


def _iso(at: datetime) -> str:
    # UTC with a fixed shape, so that comparing the texts compares the instants.
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _remember(signals: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    """Keep the KEEP latest contributions by instant (ties in arrival order)."""
    signals.append(entry)
    if len(signals) > 1 and str(signals[-2]["at"]) > entry["at"]:
        signals.sort(key=lambda s: str(s["at"]))  # stable: a late arrival takes its place
    del signals[:-KEEP]


def send_state(barometer: Barometer | None, channel: str) -> str:
    """The state a send on `channel` is judged by (caps and block_over): over when the overall
    reading or the channel's is over, else the channel's own state, else the overall one."""
    rows = [] if barometer is None else [barometer.rows.get(OVERALL), barometer.rows.get(channel)]
    states = [row.state for row in rows if row is not None]
    if OVER in states:
        return OVER
    return states[-1] if states else NO_READING


def caps_factor(
    barometer: Barometer | None, channel: str, cfg: PressureConfig
) -> tuple[float, float]:
    """(multiplier, extra) for cap maxima, from the state a send on `channel` is judged by."""
    # over → (over_factor, 0); under → (1, under_extra); equilibrium → (1, 0)
    return caps_for_state(send_state(barometer, channel), cfg)


def caps_for_state(state: str, cfg: PressureConfig) -> tuple[float, float]:
    """(factor, extra) applied to cap maxima for a barometer state."""
    if state == OVER:
        return cfg.over_factor, 0.0
    if state == UNDER:
        return 1.0, cfg.under_extra
    return 1.0, 0.0


def send_weight(policy: Policy, channel: str) -> float:
    """How much one send adds: the policy's weight for the channel, else its intrusiveness."""
    if channel in policy.weights:
        return policy.weights[channel]
    try:
        return channel_info(channel).weight
    except KeyError:  # a plug-in channel not registered in this process: count it as an email
        return 1.0


def event_channel(properties: Mapping[str, Any] | None) -> str | None:
    """The known channel an event names in its `channel` property, if any."""
    value = properties.get("channel") if isinstance(properties, Mapping) else None
    if isinstance(value, str) and len(value) <= _CHANNEL_MAX and value in channel_names():
        return value
    return None


def explain(barometer: Barometer, policy: Policy) -> dict[str, Any]:
    """What `parcours contact show` prints: scores, states, thresholds, the signals behind and
    the channels each over-pressured reading blocks."""
    cfg = policy.pressure
    blocked = [c for c in channel_names() if cfg.blocks(send_weight(policy, c))]
    overall = barometer.rows.get(OVERALL) or Reading()
    return {
        "contact_id": barometer.contact_id,
        "thresholds": {
            "under": cfg.under,
            "over": cfg.over,
            "half_life": format_duration(cfg.half_life),
            "over_factor": cfg.over_factor,
            "under_extra": cfg.under_extra,
            "block_over": cfg.block_over,
            "block_over_min_weight": cfg.block_over_min_weight,
        },
        "rule": cfg.over_rule,
        "overall": _explain_row(overall, cfg, blocked),
        "channels": {
            channel: _explain_row(row, cfg, [c for c in blocked if c == channel])
            for channel, row in sorted(barometer.rows.items())
            if channel != OVERALL
        },
    }


def _explain_row(row: Reading, cfg: PressureConfig, blockable: list[str]) -> dict[str, Any]:
    # A row never written (a contact never contacted) has no reading: NO_READING, not a score of 0.
    state = state_of(row.score, cfg) if row.at is not None else NO_READING
    factor, extra = caps_for_state(state, cfg)
    blocks = blockable if state == OVER else []
    return {
        "score": round(row.score, 3),
        "state": state,
        "as_of": _iso(row.at) if row.at else None,
        "caps": {"factor": factor, "extra": extra},
        "blocks_marketing": bool(blocks),
        "blocks": blocks,  # the channels over-pressure closes to marketing (block_over)
        "signals": list(reversed(row.signals)),  # latest first
    }


# ---------------------------------------------------------------- database


def load_barometers(
    conn: Connection,
    contact_ids: Iterable[int],
    now: datetime,
    cfg: PressureConfig,
    *,
    lock: bool = False,
) -> dict[int, Barometer]:
    """Every requested contact's barometer decayed to `now` (empty if unseen), in one query."""
    # `lock` (PostgreSQL) holds the overall rows until commit, in contact order: read-add-write.
    ids = sorted(set(contact_ids))
    out = {cid: Barometer(cid) for cid in ids}
    if not ids:
        return out
    where = one_list(Pressure.contact_id, ids, conn.dialect.name)
    if lock and conn.dialect.name == "postgresql":
        # Lock the overall rows first, then read in a second statement: under READ COMMITTED a
        # locking read that waited sees the rows it waited for as committed, but not a channel row
        # the other transaction inserted, whose contribution the upsert below would then drop.
        conn.execute(
            select(Pressure.contact_id)
            .where(where, Pressure.channel == OVERALL)
            .order_by(Pressure.contact_id)
            .with_for_update()
        )
    stmt = select(
        Pressure.contact_id, Pressure.channel, Pressure.score, Pressure.updated_at, Pressure.signals
    ).where(where)
    for r in conn.execute(stmt):
        signals = list(r.signals) if isinstance(r.signals, list) else []
        out[r.contact_id].rows[r.channel] = Reading(float(r.score), r.updated_at, signals=signals)
    for barometer in out.values():
        barometer.decay_to(now, cfg)
    return out


def save_barometers(conn: Connection, barometers: Iterable[Barometer], now: datetime) -> int:
    """Upsert the touched rows in one statement; returns how many."""
    # Each row is written as of its own instant (`now` if it has none): callers decay_to(now)
    # first to store the states as of now.
    barometers = list(barometers)
    from engine.store.bulk import BulkWriter

    writer = BulkWriter(conn.dialect.name)
    at, js = writer.converters()
    rows = [
        (b.contact_id, channel, b.rows[channel].score, b.rows[channel].state,
         at(b.rows[channel].at or now), js(b.rows[channel].signals))
        for b in barometers
        for channel in sorted(b.touched)
    ]  # fmt: skip
    if not rows:
        return 0
    # Driver level: this runs for every batch that sends (see engine/store/bulk.py).
    writer.upsert_pressure(conn, rows)
    for b in barometers:
        b.touched.clear()
    return len(rows)


def record_sends(
    conn: Connection, sends: Sequence[SendItem], now: datetime, policy: Policy,
    loaded: dict[int, Barometer] | None = None,
) -> dict[int, Barometer]:  # fmt: skip
    """Add each send's channel weight to its contact's overall and channel rows, as one batch."""
    items = [
        (cid, channel, send_weight(policy, channel), SEND, channel, at)
        for cid, channel, at in sends
    ]
    return _record(conn, items, now, policy.pressure, loaded)


def record_signals(
    conn: Connection, events: Sequence[EventItem], now: datetime, policy: Policy
) -> dict[int, Barometer]:
    """Add the contribution of each event named in `pressure.signals` (to its `channel` too)."""
    contributions = policy.pressure.signals
    items = [
        (cid, event_channel(properties), contributions[name], EVENT, name, at)
        for cid, name, properties, at in events
        if name in contributions
    ]
    return _record(conn, items, now, policy.pressure)


_Item = tuple[int, str | None, float, str, str, datetime]


def _record(
    conn: Connection, items: Sequence[_Item], now: datetime, cfg: PressureConfig,
    loaded: dict[int, Barometer] | None = None,
) -> dict[int, Barometer]:  # fmt: skip
    """Load, add, save: the barometers changed (a zero contribution changes nothing).

    `loaded`: barometers this transaction already read under the contacts' advisory locks (the
    gate's), reused instead of read again.
    """
    kept = [i for i in items if i[2] != 0.0 and math.isfinite(i[2])]
    if not kept:
        return {}
    ids = sorted({i[0] for i in kept})
    if loaded is not None and all(cid in loaded for cid in ids):
        barometers = {cid: loaded[cid] for cid in ids}
    else:
        if conn.dialect.name == "postgresql":
            _claim(conn, ids, now, cfg)
        barometers = load_barometers(conn, ids, now, cfg, lock=True)
    # Oldest first keeps the signal lists in order without sorting; a future instant (clock skew)
    # counts as now, so it cannot push a row ahead of the next batch.
    for cid, channel, delta, kind, name, at in sorted(kept, key=lambda i: i[5]):
        barometers[cid].add(channel, delta, kind, name, min(at, now), cfg)
    for barometer in barometers.values():
        barometer.decay_to(now, cfg)
    save_barometers(conn, barometers.values(), now)
    return barometers


def _claim(conn: Connection, ids: list[int], now: datetime, cfg: PressureConfig) -> None:
    """Make sure each contact has an overall row, so that the read can lock it."""
    # Two workers adding to one contact would otherwise both read the old score, and the last
    # write would win. The overall row is the contact's lock: every contribution touches it.
    # SQLite needs none: a write transaction holds the whole database from BEGIN IMMEDIATE.
    empty = {"score": 0.0, "state": state_of(0.0, cfg), "updated_at": now, "signals": []}
    conn.execute(
        pg_insert(Pressure).on_conflict_do_nothing(index_elements=["contact_id", "channel"]),
        [{"contact_id": cid, "channel": OVERALL, **empty} for cid in ids],  # sorted: no deadlock
    )


def load_policy_views(
    conn: Connection,
    contacts: Mapping[int, ContactView],
    now: datetime,
    cfg: PressureConfig | None = None,
) -> None:
    """Fill `pressure` and `consents` of the views, one query each, for conditions to read."""
    # With `cfg`, states are recomputed as of `now` (a stored state dates from the row's last
    # change) and every contact gets an overall state (no row: NO_READING, as caps read it).
    # Consents read as the gate reads them: an opt-in past its `expires_at` is `expired`.
    if not contacts:
        return
    ids = sorted(contacts)
    for view in contacts.values():
        view.pressure.clear()
        view.consents.clear()
    rows = conn.execute(
        select(
            Pressure.contact_id,
            Pressure.channel,
            Pressure.score,
            Pressure.updated_at,
            Pressure.state,
        ).where(one_list(Pressure.contact_id, ids, conn.dialect.name))
    )
    for r in rows:
        state = r.state
        if cfg is not None:
            state = state_of(decayed(float(r.score), r.updated_at, now, cfg.half_life), cfg)
        contacts[r.contact_id].pressure[r.channel] = state
    if cfg is not None:
        for view in contacts.values():
            view.pressure.setdefault(OVERALL, NO_READING)
    for cid, states in consent_snapshot(conn, ids).items():  # the gate's own reading
        for (channel, topic), (state, expires_at) in states.items():
            contacts[cid].consents[(channel, topic)] = derived_state(state, expires_at, now)
