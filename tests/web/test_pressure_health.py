"""The Pressure page's Health card: per channel the rates against their baseline, a raised
signal highlighted with what to do, and whether caps are tightened; in English and French."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from designer import Parcours
from engine.audience.ingest import clean_contact, contact_ids, upsert_contacts
from engine.runtime.clock import VirtualClock
from engine.store.models import Event, Send
from tests.web.test_insights import T0, data_block

HEALTH = (
    "  health: {min_sends: 20, signals: {unsubscribe_rate: {max: 0.01}}, tighten: {factor: 0.5}}\n"
)
_keys = count()


def declare_health(workspace: Path, line: str = HEALTH) -> None:
    """Put a `pressure.health` block in the workspace's policy.yaml."""
    path = workspace / "policy.yaml"
    text = path.read_text(encoding="utf-8")
    assert "\npressure:\n" in text
    path.write_text(text.replace("\npressure:\n", "\npressure:\n" + line, 1), encoding="utf-8")


def seed(engine: Engine, now: datetime) -> None:
    """40 emails in the last two days with 4 unsubscribes (10%), 100 quiet ones in the baseline."""
    rows = [clean_contact({"external_id": f"h{i}", "email": f"h{i}@x.io"}) for i in range(10)]
    with engine.begin() as conn:
        upsert_contacts(conn, rows, now - timedelta(days=40))
        ids = list(contact_ids(conn, [r["external_id"] for r in rows], now).values())
        for n, at in ((100, now - timedelta(days=20)), (40, now - timedelta(days=2))):
            conn.execute(insert(Send), [
                {"send_key": f"hk{next(_keys)}", "contact_id": ids[i % 10], "scenario_id": "promo",
                 "step_id": "offer", "channel": "email", "kind": "marketing", "status": "sent",
                 "payload": {}, "attempts": 1, "created_at": at, "sent_at": at}
                for i in range(n)
            ])  # fmt: skip
        conn.execute(insert(Event), [
            {"contact_id": ids[i], "name": "unsubscribed", "properties": {"channel": "email"},
             "occurred_at": now - timedelta(days=1), "received_at": now}
            for i in range(4)
        ])  # fmt: skip


def test_the_health_card_shows_a_raised_signal_and_tightened_caps(
    login: Callable[[str], FlaskClient], state: Parcours, workspace: Path
) -> None:
    state.clock = VirtualClock(T0)
    declare_health(workspace)
    seed(state.engine, T0)
    page = login("viewer").get("/pressure").get_data(as_text=True)
    assert 'data-testid="pressure-health"' in page
    card = re.search(
        r'<div class="healthcard raised" data-channel="email">(.*?)<canvas', page, re.S
    )
    assert card, "no raised email card"
    html = card.group(1)
    assert "1 signal raised" in html and 'data-testid="tightened"' in html
    assert "Caps tightened x0.5" in html
    assert "Unsubscribes are rising" in html and "above 1.00%" in html
    assert "10.00%" in html and "0.00%" in html  # now, and the baseline
    data = data_block(page, "health-data")
    email = next(c for c in data["cards"] if c["channel"] == "email")
    assert (email["sends"], email["baseline_sends"]) == (40, 100)
    assert len(email["series"]["unsubscribe_rate"]) == len(data["days"]) == 36
    french = login("viewer").get("/pressure?lang=fr").get_data(as_text=True)
    assert "Santé" in french and "Plafonds resserrés x0.5" in french
    assert "Les désinscriptions augmentent" in french


def test_a_healthy_channel_without_tightening(
    login: Callable[[str], FlaskClient], state: Parcours, workspace: Path
) -> None:
    state.clock = VirtualClock(T0)
    declare_health(
        workspace, "  health: {min_sends: 50, signals: {unsubscribe_rate: {max: 0.01}}}\n"
    )
    seed(state.engine, T0)  # 40 recent sends: below min_sends, nothing is judged
    page = login("viewer").get("/pressure").get_data(as_text=True)
    assert '<div class="healthcard" data-channel="email">' in page and "Healthy" in page
    assert 'data-testid="tightened"' not in page
    assert "set pressure.health.tighten in policy.yaml" in page
