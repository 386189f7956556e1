"""The experiment panel of the journey page and the experiments API: the win-back example's
split with seeded results (journal rows as the worker writes them), the winner declared by a
marketer (a new version, the file saved, audited), refused to a viewer, and the API's shapes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from designer import Parcours
from engine.spec.loader import scenario_bundle
from engine.store.models import AuditEntry, JournalEntry, ScenarioRecord, ScenarioVersion
from engine.worker.versions import publish_bundle
from tests.problems import assert_problem, field_of

Login = Callable[[str], FlaskClient]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# arm → (entered, converted): email-offer converts better than sms-offer, both beat the holdout
RESULTS = {"sms-offer": (2000, 200), "email-offer": (2000, 270), "holdout": (400, 28)}


def seed(engine: Engine, workspace: Path) -> None:
    """Publish win-back from its file and journal its split as the worker would."""
    path = workspace / "win-back.yaml"
    with Session(engine) as session, session.begin():
        publish_bundle(session, scenario_bundle(path), str(path), by="test", now=T0)
    rows, eid = [], 0
    for arm, (entered, converted) in RESULTS.items():
        for n in range(entered):
            eid += 1
            rows.append({"at": T0, "kind": "step", "enrollment_id": eid, "scenario_id": "win-back",
                         "step_id": "test", "reason": arm, "data": None})  # fmt: skip
            if n < converted:
                rows.append({"at": T0, "kind": "converted", "enrollment_id": eid,
                             "scenario_id": "win-back", "step_id": "test",
                             "reason": "goal:order_placed", "data": {"variant": arm}})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(JournalEntry), rows)


def test_the_journey_page_shows_the_experiment(
    login: Login, state: Parcours, workspace: Path
) -> None:
    seed(state.engine, workspace)
    page = login("viewer").get("/scenarios/win-back").get_data(as_text=True)
    assert 'data-testid="experiment-test"' in page
    assert 'data-testid="rate-test-email-offer">13.5%' in page
    assert 'data-testid="uplift-test"' in page
    assert "Declare winner" not in page  # a viewer sees the results, not the action
    french = login("marketer").get("/scenarios/win-back?lang=fr").get_data(as_text=True)
    assert (
        "Probabilité d&#39;être le meilleur" in french or "Probabilité d'être le meilleur" in french
    )
    assert "Déclarer le gagnant" in french
    assert 'data-testid="rate-test-email-offer">13,5\u00a0%' in french  # the French way


def test_a_marketer_declares_the_winner(login: Login, state: Parcours, workspace: Path) -> None:
    seed(state.engine, workspace)
    client = login("marketer")
    url = "/scenarios/win-back/experiments/test/winner"
    no_arm = client.post(url, data={"arm": " ", "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert no_arm.status_code == 400 and "arm: This field is required." in no_arm.get_data(True)
    assert "winner:" not in (workspace / "win-back.yaml").read_text(encoding="utf-8")
    response = client.post(url, data={"arm": "email-offer", "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert response.status_code == 302
    assert "winner: email-offer" in (workspace / "win-back.yaml").read_text(encoding="utf-8")
    with Session(state.engine) as session:
        numbers = session.scalars(
            select(ScenarioVersion.number).where(ScenarioVersion.scenario_id == "win-back")
        ).all()
        assert sorted(numbers) == [1, 2]
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "declare_winner")
        ).one()
        assert (audit.username, audit.details["arm"]) == ("marketer", "email-offer")
        record = session.get(ScenarioRecord, "win-back")
        assert record is not None
    page = client.get("/scenarios/win-back").get_data(as_text=True)
    assert "email-offer was declared the winner" in page
    assert "unpublished changes" not in page  # the file is the version: nothing to publish


def test_a_viewer_cannot_declare(login: Login, state: Parcours, workspace: Path) -> None:
    seed(state.engine, workspace)
    client = login("viewer")
    response = client.post(
        "/scenarios/win-back/experiments/test/winner",
        data={"arm": "email-offer", "csrf_token": client.csrf},
    )  # type: ignore[attr-defined]
    assert response.status_code == 403
    assert "winner:" not in (workspace / "win-back.yaml").read_text(encoding="utf-8")


def test_the_api_lists_and_declares(designer_app: object, state: Parcours, workspace: Path) -> None:
    seed(state.engine, workspace)
    client = designer_app.test_client()  # type: ignore[attr-defined]
    headers = {"X-Api-Key": "k"}
    body = client.get("/api/scenarios/win-back/experiments", headers=headers).get_json()
    (e,) = body["experiments"]
    arms = {a["name"]: a for a in e["arms"]}
    assert arms["email-offer"]["entered"] == 2000 and arms["email-offer"]["converted"] == 270
    assert arms["email-offer"]["probability_best"] > 0.99
    assert e["uplift"]["incremental_conversions"] > 0
    assert client.get("/api/scenarios/nope/experiments", headers=headers).status_code == 404
    bad = client.post(
        "/api/scenarios/win-back/experiments/test/winner", json={"arm": "push"}, headers=headers
    )
    assert bad.status_code == 422
    assert field_of(bad) == "arm"
    assert "branches: sms-offer, email-offer" in bad.get_json()["detail"]
    missing = client.post(
        "/api/scenarios/win-back/experiments/test/winner", json={}, headers=headers
    )
    assert_problem(missing, 422, "invalid", "arm")
    done = client.post(
        "/api/scenarios/win-back/experiments/test/winner",
        json={"arm": "email-offer"},
        headers=headers,
    )
    assert done.status_code == 201 and done.get_json()["version"] == 2
    after = client.get("/api/scenarios/win-back/experiments", headers=headers).get_json()
    assert after["experiments"][0]["decision"] == {
        "status": "declared",
        "winner": "email-offer",
        "more_per_arm": None,
    }
