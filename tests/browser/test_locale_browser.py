"""The main pages in French and in English in a real browser: figures written the language's way
by the server (Babel) and by the pages' scripts (Intl), and every time with its zone label.

Screenshots (var/screenshots/locale-*.png) are there to be looked at."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from engine.store.models import Contact, KpiDaily
from engine.worker.versions import publish_dir
from tests.browser.conftest import Site

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]
NNBSP = "\u202f"
ZONE = re.compile(r"\d\d:\d\d (CET|CEST)\b")  # the workspace zone, Europe/Paris by default
FIGURE = {"en": "10,002", "fr": f"10{NNBSP}002"}
OTHER = {"en": f"10{NNBSP}002", "fr": "10,002"}


def _seed(site: Site) -> None:
    engine = site.state.engine
    with Session(engine) as session, session.begin():
        publish_dir(session, site.workspace, by="alice")
        today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Paris")).date()
        session.add(KpiDaily(scenario_id="win-back", day=today, step_id="", channel="", arm="",
                             entries=10_002, conversions=12, revenue=12_345.5))  # fmt: skip
    created = datetime(2026, 12, 3, 13, 5, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(Contact), [{"external_id": f"c{i:05d}"} for i in range(10_001)])
        conn.execute(insert(Contact), [{"external_id": "tokyo-1", "timezone": "Asia/Tokyo",
                                        "created_at": created, "updated_at": created}])  # fmt: skip


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_main_pages_in_each_language(page_for: PageFor, site: Site, lang: str) -> None:
    _seed(site)
    page = page_for("viewer")

    # the journeys list: last publish with its zone
    page.goto(f"{site.url}/scenarios?lang={lang}")
    assert page.get_attribute("html", "lang") == lang
    published = page.inner_text('[data-testid="row-win-back"]')
    assert ZONE.search(published), published
    site.shot(page, f"locale-journeys-{lang}")

    # the contact list: 10,002 contacts
    page.goto(f"{site.url}/contacts")  # the language is remembered
    total = page.inner_text('[data-testid="contact-total"]')
    assert FIGURE[lang] in total and OTHER[lang] not in total, total
    site.shot(page, f"locale-contacts-{lang}")

    # a contact page: times in the workspace zone, and the contact's own local time
    page.goto(f"{site.url}/contacts/tokyo-1")
    profile = page.inner_text('[data-testid="profile"]')
    created = {"en": "Dec 3, 2026, 14:05 CET", "fr": "3 déc. 2026, 14:05 CET"}[lang]
    assert created in profile, profile
    assert page.inner_text('[data-testid="local-time"]').endswith(" JST")
    site.shot(page, f"locale-contact-{lang}")

    # the journey's report: totals from the server, live counts polled, charts drawn by script
    page.goto(f"{site.url}/scenarios/win-back")
    page.wait_for_selector('[data-testid="journey-report"]')
    assert page.inner_text('[data-testid="total-scenario-entries"]').strip() == FIGURE[lang]
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=live-entries]').textContent.trim() "
        f"=== {FIGURE[lang]!r}"
    )
    page.wait_for_function(
        "() => /\\(.+\\)/.test(document.querySelector('[data-live-at]').textContent)"
    )
    assert ZONE.search(page.inner_text("[data-live-at]")), page.inner_text("[data-live-at]")
    tooltip = page.evaluate(
        "() => Chart.getChart('kpi-daily-chart').options.plugins.tooltip.callbacks"
        ".label({dataset: {label: 'x'}, parsed: {y: 10002.5}})"
    )
    assert tooltip == "x: " + FIGURE[lang] + {"en": ".5", "fr": ",5"}[lang]
    ticks = page.evaluate(
        "() => Chart.getChart('kpi-daily-chart').scales.y.ticks.map(t => String(t.label))"
    )
    thousands = {"en": "10,000", "fr": f"10{NNBSP}000"}[lang]
    assert thousands in ticks, ticks  # the axis too, not only the tooltips
    last_day = page.evaluate("() => Chart.getChart('kpi-daily-chart').data.labels.at(-1)")
    month = datetime.now(UTC).astimezone(ZoneInfo("Europe/Paris"))
    assert str(month.day) in last_day and not re.search(r"\d{4}-\d\d", last_day), last_day
    site.shot(page, f"locale-report-{lang}")
