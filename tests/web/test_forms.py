"""Forms and query strings parsed through marshmallow (designer/forms.py): a wrong value gives
the marketer a message naming the field, in their language, never a traceback."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, g
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from designer.forms import Choice, Date, Form, Integer, Text, parse


class Sample(Form):
    page = Integer(load_default=1)
    start = Date(data_key="from")
    status = Choice(("live", "draft"))
    q = Text(5, load_default="")


def test_parse_gives_values_and_a_message_per_field(designer_app: Flask) -> None:
    with designer_app.test_request_context("/"):
        values, errors = parse(
            Sample(),
            MultiDict(
                [("page", "3"), ("from", "2026-03-31"), ("q", "  abcdefgh "), ("csrf_token", "x")]
            ),
        )
        assert errors == {}
        assert values["page"] == 3 and str(values["start"]) == "2026-03-31"
        assert values["q"] == "abcde"  # trimmed, cut to what fits
        values, errors = parse(Sample(), {"page": "three", "from": "31/03/2026",
                                          "status": "paused", "q": ""})  # fmt: skip
        assert errors == {
            "page": "Enter a whole number.",
            "from": "Enter a date as YYYY-MM-DD, e.g. 2026-03-31.",
            "status": "Choose one of: live, draft.",
        }
        assert values == {"q": ""}  # what parsed: the default of the empty box
        g.lang = "fr"
        _values, errors = parse(Sample(), {"page": "3.5"})
        assert errors == {"page": "Saisissez un nombre entier."}


def test_a_bad_date_in_a_report_address_is_a_400_page_naming_it(
    login: Callable[[str], FlaskClient],
) -> None:
    viewer = login("viewer")
    bad = viewer.get("/programs/loyalty?from=March&to=2026-03-31")
    assert bad.status_code == 400
    page = bad.get_data(as_text=True)
    assert "from: Enter a date as YYYY-MM-DD" in page and "Traceback" not in page
    french = viewer.get("/programs/loyalty?to=2026-02-30&lang=fr")
    assert french.status_code == 400
    assert "to: Saisissez une date au format AAAA-MM-JJ" in french.get_data(as_text=True)
    table = viewer.get("/scenarios/win-back/report.csv?table=week&lang=en")
    assert table.status_code == 400
    assert "table: Choose one of: day, scenario, step, channel." in table.get_data(as_text=True)
    assert viewer.get("/programs/loyalty?from=&to=").status_code == 200  # empty: the default


def test_a_wrong_page_or_status_in_a_list_address_is_a_400_page_naming_it(
    login: Callable[[str], FlaskClient],
) -> None:
    viewer = login("viewer")
    for address, words in [
        ("/contacts?page=two", "page: Enter a whole number."),
        ("/contacts?page=0", "page: Enter a number from 1 up."),
        ("/scenarios?status=archived", "status: Choose one of: live, paused, draft."),
    ]:
        answer = viewer.get(address)
        assert answer.status_code == 400, address
        assert words in answer.get_data(as_text=True), address
    assert viewer.get("/contacts?page=1&q=").status_code == 200
    assert viewer.get("/scenarios?status=&q=WIN").status_code == 200


def test_the_users_page_names_a_wrong_username_role_or_duplicate_in_the_language(
    login: Callable[[str], FlaskClient],
) -> None:
    admin = login("admin")
    post = lambda **data: admin.post("/users", data={**data, "csrf_token": admin.csrf})  # noqa: E731
    bad_name = post(username="anne smith", role="viewer")
    assert bad_name.status_code == 400
    assert "A username is letters, digits, dots and dashes." in bad_name.get_data(as_text=True)
    bad_role = post(username="anne", role="owner")
    assert bad_role.status_code == 400
    assert "Choose one of: admin, marketer, viewer." in bad_role.get_data(as_text=True)
    assert post(username="anne", role="viewer").status_code == 200
    again = admin.post("/users?lang=fr", data={"username": "anne", "csrf_token": admin.csrf})
    assert again.status_code == 400
    assert "utilisateur anne existe déjà." in again.get_data(as_text=True)
    assert post(username="Zoë.d-1").status_code == 200  # letters of any script, dots, dashes


def test_a_wrong_role_or_flag_on_a_user_is_a_400_naming_it(
    login: Callable[[str], FlaskClient], designer_app: Flask
) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from engine.store.models import User

    admin = login("admin")
    admin.post("/users", data={"username": "bob", "role": "viewer", "csrf_token": admin.csrf})
    with Session(designer_app.extensions["parcours"].engine) as db:
        bob = db.scalar(select(User).where(User.username == "bob"))
    assert bob is not None
    wrong = admin.post(f"/users/{bob.id}", data={"role": "owner", "csrf_token": admin.csrf})
    assert wrong.status_code == 400 and "role" in wrong.get_data(as_text=True)
    flag = admin.post(f"/users/{bob.id}", data={"disabled": "maybe", "csrf_token": admin.csrf})
    assert flag.status_code == 400 and "Choose yes or no." in flag.get_data(as_text=True)
    ok = admin.post(f"/users/{bob.id}", data={"disabled": "1", "csrf_token": admin.csrf})
    assert ok.status_code == 302
    with Session(designer_app.extensions["parcours"].engine) as db:
        assert db.scalar(select(User.disabled).where(User.username == "bob")) is True


def test_the_new_journey_form_names_each_wrong_field_and_writes_nothing(
    login: Callable[[str], FlaskClient], workspace: object
) -> None:
    from pathlib import Path

    folder = Path(str(workspace))
    before = sorted(p.name for p in folder.iterdir())
    client = login("marketer")
    form = {"id": "spring", "name": "x" * 201, "objective": "fame", "priority": "101"}
    page = client.post("/scenarios/new", data={**form, "csrf_token": client.csrf})  # type: ignore[attr-defined]
    text = page.get_data(as_text=True)
    assert page.status_code == 400
    for message in ("Give a name (at most 200 characters).", "Choose an objective.",
                    "A priority is a whole number from 0 to 100."):  # fmt: skip
        assert message in text
    assert 'value="spring"' in text  # what was typed is shown back
    form = {"id": "spring", "name": "Spring", "priority": "high"}
    french = client.post("/scenarios/new?lang=fr", data={**form, "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert french.status_code == 400
    assert "priorité" in french.get_data(as_text=True).lower()
    assert sorted(p.name for p in folder.iterdir()) == before


def test_publish_with_an_unknown_status_is_a_400_and_publishes_nothing(
    login: Callable[[str], FlaskClient], designer_app: Flask
) -> None:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from engine.store.models import ScenarioVersion

    client = login("marketer")
    url = "/scenarios/welcome-series/publish"
    wrong = client.post(url, data={"status": "archived", "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert wrong.status_code == 400
    assert "status: Choose one of: live, paused." in wrong.get_data(as_text=True)
    engine = designer_app.extensions["parcours"].engine
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(ScenarioVersion)) == 0
    paused = client.post(url, data={"status": "paused", "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert paused.status_code == 302
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(ScenarioVersion)) == 1
    pdf = client.get("/programs/loyalty?format=pdf")
    assert pdf.status_code == 400 and "format: Choose one of: html, csv." in pdf.get_data(True)
