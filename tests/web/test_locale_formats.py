"""Figures and times as the viewer's language writes them: 10,002 / 10 002, 25.3% / 25,3 %, and
every time in the workspace zone with its label; a contact's local time beside it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert

from designer import create_app
from designer.auth import create_user
from designer.i18n_formats import day, number, percent, signed, when, zone_label
from engine.config import load_settings
from engine.store import db
from engine.store.models import Contact
from tests.web.conftest import PASSWORD, csrf_of

NNBSP = "\u202f"  # French thousands separator
WINTER = datetime(2026, 12, 3, 13, 5, tzinfo=UTC)  # 14:05 in Paris (CET)
SUMMER = datetime(2026, 7, 3, 13, 5, tzinfo=UTC)  # 15:05 in Paris (CEST)


def test_the_same_figure_in_french_and_in_english(
    designer_app: Flask, login: Callable[[str], FlaskClient]
) -> None:
    engine = designer_app.extensions["parcours"].engine
    with engine.begin() as conn:
        conn.execute(insert(Contact), [{"external_id": f"c{i}"} for i in range(10_002)])
    viewer = login("viewer")
    english = viewer.get("/contacts?lang=en").get_data(as_text=True)
    french = viewer.get("/contacts?lang=fr").get_data(as_text=True)
    assert "Contacts: 10,002" in english and f"10{NNBSP}002" not in english
    assert f"10{NNBSP}002" in french and "10,002" not in french
    assert "10 002" not in french  # a plain space would let the figure break across lines


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", ["10,002", "10,002.50", "25.3%", "+3", "-1,500", "0", "Dec 3, 2026"]),
        ("fr", [f"10{NNBSP}002", f"10{NNBSP}002,50", "25,3\u00a0%", "+3", f"-1{NNBSP}500", "0",
                "3 déc. 2026"]),
    ],
)  # fmt: skip
def test_formats_follow_the_language(designer_app: Flask, lang: str, expected: list[str]) -> None:
    with designer_app.test_request_context(f"/?lang={lang}"):
        shown = [number(10002), number(10002.5, 2), percent(0.253), signed(3), signed(-1500),
                 signed(0.001), day(date(2026, 12, 3))]  # fmt: skip
    assert shown == expected


@pytest.mark.parametrize(
    ("lang", "instant", "expected"),
    [
        ("en", WINTER, "Dec 3, 2026, 14:05 CET"),
        ("en", SUMMER, "Jul 3, 2026, 15:05 CEST"),
        ("fr", WINTER, "3 déc. 2026, 14:05 CET"),
        ("fr", "2026-12-03T13:05:00", "3 déc. 2026, 14:05 CET"),  # naive means UTC
    ],
)
def test_times_are_in_the_workspace_zone_with_their_label(
    designer_app: Flask, lang: str, instant: datetime | str, expected: str
) -> None:
    assert designer_app.extensions["parcours"].settings.timezone == "Europe/Paris"  # the default
    with designer_app.test_request_context(f"/?lang={lang}"):
        assert when(instant) == expected
        assert when(None) == "—"


@pytest.mark.parametrize(
    ("zone", "expected"),
    [("UTC", "UTC"), ("America/New_York", "EST"), ("Asia/Dubai", "UTC+4"),
     ("Asia/Kathmandu", "UTC+5:45"), ("America/Sao_Paulo", "UTC-3")],
)  # fmt: skip
def test_a_zone_without_abbreviation_shows_its_offset(zone: str, expected: str) -> None:
    assert zone_label(WINTER.astimezone(ZoneInfo(zone))) == expected


def test_the_workspace_zone_setting_is_used(tmp_path: Path, workspace: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tz.db'}"
    db.upgrade(url)
    settings = load_settings(
        {"PARCOURS_TIMEZONE": "America/New_York"},
        database_url=url,
        data_dir=tmp_path,
        scenarios_dir=workspace,
    )
    app = create_app(settings, {"TESTING": True})
    with app.test_request_context("/?lang=en"):
        assert when(WINTER) == "Dec 3, 2026, 08:05 EST"
    app.extensions["parcours"].engine.dispose()


def test_the_contact_page_labels_its_times_and_shows_the_local_time(
    designer_app: Flask, login: Callable[[str], FlaskClient]
) -> None:
    engine = designer_app.extensions["parcours"].engine
    with engine.begin() as conn:
        conn.execute(
            insert(Contact),
            [{"external_id": "tokyo-1", "timezone": "Asia/Tokyo", "created_at": WINTER,
              "updated_at": WINTER}],
        )  # fmt: skip
    viewer = login("viewer")
    english = viewer.get("/contacts/tokyo-1?lang=en").get_data(as_text=True)
    assert "Dec 3, 2026, 14:05 CET" in english  # created, in the workspace zone
    assert 'data-testid="local-time">' in english
    local = english.split('data-testid="local-time">', 1)[1].split("<", 1)[0]
    assert local.endswith(" JST"), local  # the contact's own zone
    french = viewer.get("/contacts/tokyo-1?lang=fr").get_data(as_text=True)
    assert "3 déc. 2026, 14:05 CET" in french


def test_the_audit_log_shows_seconds_and_the_zone(tmp_path: Path, designer_app: Flask) -> None:
    engine = designer_app.extensions["parcours"].engine
    create_user(engine, "zoe", "admin", password=PASSWORD)
    client = designer_app.test_client()
    token = csrf_of(client)
    client.post("/login", data={"username": "zoe", "password": PASSWORD, "csrf_token": token})
    page = client.get("/audit?lang=fr").get_data(as_text=True)
    assert re.search(r"\d{1,2} \w+\.? 20\d\d, \d\d:\d\d:\d\d (CET|CEST)", page), page[-3000:]
