"""`parcours report`, `parcours programs` and the program files' lint, on real databases."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session

from engine.audience.ingest import upsert_contacts
from engine.cli import cli
from engine.spec.lint import lint_paths
from engine.store.db import make_engine, utcnow
from engine.store.models import KpiDaily, Pressure

ROOT = Path(__file__).resolve().parents[1]
Run = Callable[..., Result]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios", folder)
    return folder


@pytest.fixture
def run(engine_url: str, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    for key in list(os.environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARCOURS_DATABASE_URL", engine_url)
    monkeypatch.setenv("PARCOURS_SCENARIOS_DIR", str(workspace))
    engine = make_engine(engine_url)
    day = date(2026, 3, 2)
    with Session(engine) as session, session.begin():
        session.add_all([
            KpiDaily(scenario_id="cart-abandonment", day=day, step_id="", channel="", arm="",
                     entries=10, conversions=2, revenue=150.0),
            KpiDaily(scenario_id="cart-abandonment", day=day, step_id="reminder-email",
                     channel="email", arm="", sends=10, opens=4, cost=0.02),
            KpiDaily(scenario_id="win-back", day=day, step_id="", channel="", arm="", entries=3),
        ])  # fmt: skip
    engine.dispose()
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args), catch_exceptions=False)


def test_report_of_a_program_as_json_and_csv(run: Run) -> None:
    body = json.loads(run("report", "--program", "basket-growth", "--by", "scenario",
                          "--json").output)  # fmt: skip
    assert [r["scenario"] for r in body["rows"]] == ["cart-abandonment"]  # win-back is not in it
    assert body["totals"]["conversion_rate"] == pytest.approx(0.2)
    assert body["timezone"] == "Europe/Paris"
    rows = list(csv.DictReader(io.StringIO(run("report", "--by", "channel", "--csv").output)))
    assert rows[0]["channel"] == "email" and rows[0]["opens"] == "4"
    text = run("report", "--from", "2026-03-02", "--to", "2026-03-02").output
    assert "2026-03-02" in text and "total" in text


def test_report_refuses_unknown_programs_and_backwards_ranges(run: Run) -> None:
    unknown = run("report", "--program", "loyalti")
    assert unknown.exit_code == 2 and "no program 'loyalti'" in unknown.output
    backwards = run("report", "--from", "2026-03-05", "--to", "2026-03-01")
    assert backwards.exit_code == 2 and "--from is after --to" in backwards.output


def test_programs_lists_panel_pressure_and_targets(
    run: Run, engine_url: str, workspace: Path
) -> None:
    (workspace / "programs" / "everyone.yaml").write_text(
        "format_version: 1\nid: everyone\nname: Everyone\nobjective: other\n"
        "scenarios: [birthday]\nkpis:\n  - {kpi: entries, target: 1, period: quarter}\n"
    )  # no panel: every contact
    (workspace / "programs" / "loyalty.yaml").write_text(
        (workspace / "programs" / "loyalty.yaml").read_text().replace("birthday, ", "")
    )
    engine = make_engine(engine_url)
    now = utcnow()
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": f"c{i}"} for i in range(5)], now)
        ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM contacts ORDER BY id")]
        conn.execute(Pressure.__table__.insert(), [
            {"contact_id": ids[0], "channel": "*", "score": 9.0, "state": "over", "updated_at": now},
            {"contact_id": ids[1], "channel": "*", "score": 0.1, "state": "under",
             "updated_at": now},
        ])  # fmt: skip
    engine.dispose()
    found = {p["id"]: p for p in json.loads(run("programs", "--json").output)}
    everyone = found["everyone"]
    assert everyone["panel"] == {"size": 5, "pressure": {"under": 1, "equilibrium": 3, "over": 1}}
    assert everyone["kpis"][0]["kpi"] == "entries" and everyone["kpis"][0]["met"] in (True, False)
    assert found["basket-growth"]["panel"]["size"] == 0  # the segment has no members yet


def test_lint_locates_program_problems(workspace: Path) -> None:
    (workspace / "programs" / "other.yaml").write_text(
        "format_version: 1\nid: other\nname: Other\nobjective: other\n"
        "panel: {segment: premum}\nscenarios: [win-back, welcom-series]\n"
        "kpis:\n  - {kpi: revenu, target: 1}\n"
    )
    found = {
        (p.code, p.line)
        for p in lint_paths([workspace])
        if p.file and p.file.endswith("other.yaml")
    }
    assert found == {
        ("segment.unknown", 5),
        ("program.scenario_taken", 6),  # win-back is loyalty's
        ("program.unknown_scenario", 6),
        ("schema.invalid", 8),
    }
    assert not [p for p in lint_paths([ROOT / "scenarios"]) if p.severity == "error"]


def test_report_ends_with_the_pressure_health_of_its_scenarios(run: Run, engine_url: str) -> None:
    from datetime import timedelta

    from tests.health_seed import seed

    engine = make_engine(engine_url)
    yesterday = utcnow() - timedelta(days=1)
    seed(engine, "cart-abandonment", 200, 20, yesterday)  # bounce rate 10%: raised
    seed(engine, "win-back", 300, 0, yesterday)
    engine.dispose()
    everyone = json.loads(run("report", "--json").output)["health"]
    assert everyone["scenarios"] is None and everyone["channels"]["email"]["recent"]["sends"] == 500
    program = json.loads(run("report", "--program", "basket-growth", "--json").output)["health"]
    assert program["scenarios"] == ["cart-abandonment", "post-purchase-cross-sell"]
    assert program["channels"]["email"]["recent"]["sends"] == 200
    assert program["raised"] == [{"channel": "email", "signal": "bounce_rate",
                                  "crossed": "max"}]  # fmt: skip
    alone = json.loads(run("report", "--scenario", "win-back", "--json").output)["health"]
    assert alone["channels"]["email"]["recent"]["sends"] == 300 and alone["raised"] == []
    text = run("report", "--program", "basket-growth").output
    assert text.index("total") < text.index("pressure health:")
    assert "bounce_rate" in text and "RAISED" in text
    assert "pressure health" not in run("report", "--csv").output
