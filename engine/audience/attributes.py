"""Computed attributes, set-based: RFM, the lifecycle stage and the customer value of every
contact, in a constant number of statements whatever the size of the base.

A full recompute (the worker's daily job) rebuilds `contact_metrics` from the purchase events with
one INSERT ... SELECT over all contacts, finds the R, F and M quintile edges of the customers with
`NTILE(5)` and scores everyone with one UPDATE. A purchase recomputes only its contact, with the
same statements restricted to it and the edges of the last full run, so its scores move at once
without ranking the base again.

Scores: 1 (worst) to 5 (best); equal values always get the same score, the lower one when a tie
straddles two quintiles. Contacts who never purchased have no score and no RFM class.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ScenarioInvalid
from engine.spec.attributes import ATTRIBUTES_FILE, AttributesSpec, load_attributes_file
from engine.spec.metric_names import RFM_CLASSES
from engine.store.db import id_in
from engine.store.models import (
    Contact,
    ContactLeadScore,
    ContactMetricRun,
    ContactMetrics,
    Event,
    UTCDateTime,
)

logger = logging.getLogger(__name__)
TILES = 5
M = ContactMetrics.__table__.c
VIEW_COLUMNS = ("last_purchase_at", "recency_days", "orders", "frequency", "monetary", "value",
                "r", "f", "m", "rfm_class", "lifecycle")  # fmt: skip
# Read with the contact `c` in one statement (engine.worker.enroll.contact_views): these columns
# after the contact's own, brought by these joins. The lead score is the decayed one plus what the
# score gained since the last recompute.
VIEW_SELECT = ", ".join(f"m.{name}" for name in VIEW_COLUMNS) + (
    ", l.lead_score + c.score - l.score_seen AS lead_score"
)
VIEW_JOINS = (
    "LEFT JOIN contact_metrics m ON m.contact_id = c.id "
    "LEFT JOIN contact_lead_scores l ON l.contact_id = c.id"
)


def _amount(spec: AttributesSpec, dialect: str) -> ColumnElement[Any]:
    """The purchase's value when it is a JSON number; anything else counts as no value."""
    if dialect == "postgresql":
        element = Event.properties.op("->")(spec.value)
        number = func.jsonb_typeof(element) == "number"
        return case((number, cast(Event.properties.op("->>")(spec.value), Float)))
    path = f'$."{spec.value}"'
    number = func.json_type(Event.properties, path).in_(("integer", "real"))
    return case((number, func.json_extract(Event.properties, path)))


def _days_since(last: Any, now: datetime, dialect: str) -> ColumnElement[Any]:
    at = literal(now, UTCDateTime())
    if dialect == "postgresql":
        seconds = func.extract("epoch", at - last)
        return cast(func.floor(seconds / 86400), Integer)
    return cast(func.julianday(at) - func.julianday(last), Integer)


def _purchases(
    spec: AttributesSpec, now: datetime, dialect: str, ids: Collection[int] | None
) -> Any:
    """Per contact who purchased: last purchase, orders, frequency, monetary, value."""
    amount = _amount(spec, dialect)
    recent = Event.occurred_at >= now - spec.window
    query = select(
        Event.contact_id,
        func.max(Event.occurred_at).label("last"),
        func.count().label("orders"),
        func.sum(case((recent, 1), else_=0)).label("frequency"),
        func.coalesce(func.sum(case((recent, amount))), 0.0).label("monetary"),
        func.coalesce(func.sum(amount), 0.0).label("value"),
    ).where(Event.name.in_(spec.purchase_events), Event.occurred_at <= now)
    if ids is not None:
        query = query.where(id_in(Event.contact_id, list(ids), dialect))
    return query.group_by(Event.contact_id).subquery("purchases")


def _lifecycle(p: Any, spec: AttributesSpec, now: datetime) -> ColumnElement[str]:
    """The stage along the funnel, the first that applies; the lapses win over the counts."""
    stages = spec.lifecycle
    whens: list[tuple[ColumnElement[bool], str]] = [
        (p.c.orders.is_(None), "prospect"),
        (p.c.last < now - stages.lost_after, "lost"),
        (p.c.last < now - stages.dormant_after, "dormant"),
        (p.c.last < now - stages.at_risk_after, "at_risk"),
    ]
    if stages.premium_value is not None:
        whens.append((p.c.value >= stages.premium_value, "premium"))
    whens += [
        (p.c.frequency >= stages.loyal_orders, "loyal"),
        (p.c.orders >= stages.repeat_orders, "repeat"),
    ]
    return case(*whens, else_="first_purchase")


def _rebuild(
    conn: Connection, spec: AttributesSpec, now: datetime, ids: Collection[int] | None
) -> None:
    """Replace the rows of `ids` (every contact when None) with their aggregates and stage."""
    dialect = conn.dialect.name
    p = _purchases(spec, now, dialect, ids)
    rows = select(
        Contact.id,
        p.c.last,
        _days_since(p.c.last, now, dialect),
        func.coalesce(p.c.orders, 0),
        func.coalesce(p.c.frequency, 0),
        func.coalesce(p.c.monetary, 0.0),
        func.coalesce(p.c.value, 0.0),
        _lifecycle(p, spec, now),
        literal(now, UTCDateTime()),
    ).select_from(Contact.__table__.outerjoin(p, p.c.contact_id == Contact.id))
    gone = delete(ContactMetrics)
    if ids is not None:
        rows = rows.where(id_in(Contact.id, list(ids), dialect))
        gone = gone.where(id_in(ContactMetrics.contact_id, list(ids), dialect))
    columns = ["contact_id", "last_purchase_at", "recency_days", "orders", "frequency",
               "monetary", "value", "lifecycle", "computed_at"]  # fmt: skip
    conn.execute(gone)
    conn.execute(insert(ContactMetrics).from_select(columns, rows))


# Per measure: its column, whether a smaller value is better, the edge each tile contributes.
MEASURES = {"r": ("recency_days", True), "f": ("frequency", False), "m": ("monetary", False)}


def _edges(conn: Connection) -> dict[str, list[float]]:
    """For each measure, one edge per tile but the best, from `NTILE(5)` over the customers:
    the best value of tiles 1..4 (worst first). One statement."""
    parts = []
    for key, (name, smaller_better) in MEASURES.items():
        column = M[name]
        tile = func.ntile(TILES).over(order_by=(column.desc() if smaller_better else column))
        ranked = select(column.label("v"), tile.label("tile")).where(M.orders > 0).subquery()
        edge = func.min(ranked.c.v) if smaller_better else func.max(ranked.c.v)
        parts.append(
            select(literal(key, String()).label("k"), ranked.c.tile, edge.label("edge"))
            .where(ranked.c.tile < TILES)
            .group_by(ranked.c.tile)
        )
    found: dict[str, list[float]] = {key: [] for key in MEASURES}
    rows = conn.execute(union_all(*parts).subquery().select().order_by("k", "tile"))
    for key, _tile, edge in rows:
        found[key].append(float(edge))
    return found


def _score(key: str, edges: Mapping[str, list[float]]) -> ColumnElement[int]:
    """1 plus the number of tiles the value is strictly better than."""
    name, smaller_better = MEASURES[key]
    column = M[name]
    score: ColumnElement[int] = literal_column("1", Integer)
    for edge in edges.get(key, ()):
        better = column < edge if smaller_better else column > edge
        score = score + case((better, 1), else_=0)
    return score


def _rfm_class(r: ColumnElement[int], f: ColumnElement[int]) -> ColumnElement[str]:
    return case(
        *(
            (and_(r.between(r_low, r_high), f.between(f_low, f_high)), name)
            for name, r_low, r_high, f_low, f_high in RFM_CLASSES
        )
    )


def _assign_scores(
    conn: Connection, edges: Mapping[str, list[float]], ids: Collection[int] | None
) -> None:
    """Score the customers of `ids` (all when None) against the edges; one UPDATE."""
    if not any(edges.values()):
        return  # no full run yet: scores wait for the first one
    r, f, m = (_score(key, edges) for key in MEASURES)
    stmt = update(ContactMetrics).where(M.orders > 0)
    if ids is not None:
        stmt = stmt.where(id_in(M.contact_id, list(ids), conn.dialect.name))
    conn.execute(stmt.values(r=r, f=f, m=m, rfm_class=_rfm_class(r, f)))


# (class, object) of a two-key advisory lock: that key space never meets the per-contact
# single-key locks of the policy gate.
LOCK_KEYS = (7201, 1)


def _serialize(conn: Connection) -> None:
    """One writer of contact_metrics at a time until commit: a purchase arriving during the
    full recompute waits for it, rather than colliding with the rows it rewrites. SQLite's
    BEGIN IMMEDIATE already excludes every other writer."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(*LOCK_KEYS)))


def _decay_lead_scores(
    conn: Connection, spec: AttributesSpec, now: datetime, previous: datetime | None
) -> None:
    """Every contact's lead score halved per `half_life` since the previous run, plus what the
    raw score gained since; without a half-life, the lead score is the score (no rows). One
    statement."""
    if spec.lead_half_life is None:
        conn.execute(delete(ContactLeadScore))
        return
    elapsed = max(now - previous, timedelta(0)) if previous else timedelta(0)
    factor = 0.5 ** (elapsed / spec.lead_half_life)
    seen = ContactLeadScore.__table__.alias("seen")
    decayed = seen.c.lead_score * factor + Contact.score - seen.c.score_seen
    rows = (
        select(
            Contact.id,
            func.coalesce(decayed, Contact.score),
            Contact.score,
            literal(now, UTCDateTime()),
        )
        .select_from(Contact.__table__.outerjoin(seen, seen.c.contact_id == Contact.id))
        .where(true())  # SQLite reads ON CONFLICT after a join's ON otherwise
    )
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(ContactLeadScore).from_select(
        ["contact_id", "lead_score", "score_seen", "computed_at"], rows
    )
    fresh = upsert.excluded
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=["contact_id"],
            set_={
                "lead_score": fresh.lead_score,
                "score_seen": fresh.score_seen,
                "computed_at": fresh.computed_at,
            },
        )
    )


def recompute(conn: Connection, spec: AttributesSpec, now: datetime) -> int:
    """Rebuild every contact's metrics and the quintile edges; returns the customers scored."""
    _serialize(conn)
    previous = last_run(conn)
    _decay_lead_scores(conn, spec, now, previous["computed_at"] if previous else None)
    _rebuild(conn, spec, now, None)
    edges = _edges(conn)
    _assign_scores(conn, edges, None)
    customers = conn.execute(select(func.count()).where(M.orders > 0)).scalar_one()
    conn.execute(
        insert(ContactMetricRun).values(
            computed_at=now, customers=customers, edges=edges, spec_hash=spec.content_hash
        )
    )
    return int(customers)


def last_run(conn: Connection) -> dict[str, Any] | None:
    """The latest full recompute (computed_at, customers, edges), or None before the first."""
    runs = ContactMetricRun.__table__.c
    query = select(runs.computed_at, runs.customers, runs.edges)
    row = conn.execute(query.order_by(runs.id.desc()).limit(1)).first()
    return dict(row._mapping) if row else None


def refresh_contacts(
    conn: Connection, spec: AttributesSpec, contact_ids: Collection[int], now: datetime
) -> None:
    """Recompute these contacts at once (after their purchases), scored with the last edges."""
    if not contact_ids:
        return
    _serialize(conn)
    run = last_run(conn)
    _rebuild(conn, spec, now, contact_ids)
    _assign_scores(conn, run["edges"] if run else {}, contact_ids)


def on_events(conn: Connection, events: list[dict[str, Any]], now: datetime) -> None:
    """After ingest: refresh the contacts whose events (ingest rows) include a purchase. A
    replayed duplicate among them only recomputes the same figures."""
    from engine.config import load_settings

    spec = workspace_spec(load_settings().scenarios_dir)
    if spec is not None:
        buyers = {e["contact_id"] for e in events if e["name"] in spec.purchase_events}
        refresh_contacts(conn, spec, buyers, now)


_loaded: dict[Path, tuple[float, AttributesSpec | None]] = {}


def workspace_spec(scenarios_dir: Path) -> AttributesSpec | None:
    """The workspace's declaration, read again when the file changes; None when it is broken
    (lint says why): ingestion goes on, the metrics wait for a valid file."""
    path = scenarios_dir / ATTRIBUTES_FILE
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = -1.0
    cached = _loaded.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        spec: AttributesSpec | None = load_attributes_file(path)
    except ScenarioInvalid as exc:
        logger.warning("%s is invalid, computed attributes paused: %s", path, exc,
                       extra={"action": "attributes"})  # fmt: skip
        spec = None
    _loaded[path] = (stamp, spec)
    return spec


def contact_metrics(
    conn: Connection, contact_id: int, spec: AttributesSpec, now: datetime, limit: int = 10
) -> dict[str, Any]:
    """One contact's computed attributes with the purchases behind them (newest first, each
    marked when inside the window), for `parcours contact show` and the contact page."""
    lead = ContactLeadScore.__table__.c
    row = conn.execute(
        select(*(M[name] for name in VIEW_COLUMNS), M.computed_at, Contact.score,
               (lead.lead_score + Contact.score - lead.score_seen).label("lead_score"))
        .select_from(Contact.__table__.outerjoin(ContactMetrics).outerjoin(
            ContactLeadScore.__table__, lead.contact_id == Contact.id))
        .where(Contact.id == contact_id)
    ).one()  # fmt: skip
    amount = _amount(spec, conn.dialect.name)
    purchases = conn.execute(
        select(Event.name, Event.occurred_at, amount.label("amount"))
        .where(Event.contact_id == contact_id, Event.name.in_(spec.purchase_events))
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(limit)
    ).all()
    since = now - spec.window
    return {
        **metrics_view(dict(row._mapping), row.score),
        "computed_at": row.computed_at,
        "window_days": spec.window.days,
        "lead_half_life_days": spec.lead_half_life.days if spec.lead_half_life else None,
        "purchases": [
            {"name": p.name, "at": p.occurred_at, "value": p.amount,
             "in_window": p.occurred_at >= since}
            for p in purchases
        ],
    }  # fmt: skip


def metrics_view(values: Mapping[str, Any] | None, score: int) -> dict[str, Any]:
    """What conditions and templates read: `rfm.*`, `lifecycle`, `customer_value`,
    `lead_score` (the score itself without decay). A contact with no row yet has never
    purchased: a prospect."""
    v = dict(values or {})
    last = v.get("last_purchase_at")
    if isinstance(last, str):  # SQLite's driver hands back the stored UTC text
        v["last_purchase_at"] = datetime.fromisoformat(last).replace(tzinfo=UTC)
    return {
        "rfm": {
            "recency": v.get("recency_days"), "frequency": v.get("frequency") or 0,
            "monetary": v.get("monetary") or 0.0, "r": v.get("r"), "f": v.get("f"),
            "m": v.get("m"), "class": v.get("rfm_class"),
            "last_purchase_at": v.get("last_purchase_at"), "orders": v.get("orders") or 0,
        },
        "lifecycle": v.get("lifecycle") or "prospect",
        "customer_value": v.get("value") or 0.0,
        "lead_score": score if v.get("lead_score") is None else float(v["lead_score"]),
    }  # fmt: skip


def recompute_when_due(
    engine: Engine, scenarios_dir: Path, now: datetime, every: timedelta
) -> int | None:
    """The scheduled full recompute, when none ran in the last `every`: the customers scored,
    or None when it was not due (or the declaration is broken)."""
    spec = workspace_spec(scenarios_dir)
    if spec is None:
        return None
    with engine.begin() as conn:
        _serialize(conn)  # two workers: the second sees the first's run and stops here
        run = last_run(conn)
        if run is not None and now - run["computed_at"] < every:
            return None
        return recompute(conn, spec, now)
