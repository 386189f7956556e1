"""`parcours experiments` and `parcours experiment declare` on a real database (SQLite), and the
`experiments` key of `parcours simulate --json` (the win-back example's split)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from engine.cli import cli
from engine.store.db import make_engine
from engine.store.models import AuditEntry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(__import__("os").environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    folder = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios", folder)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PARCOURS_SCENARIOS_DIR", str(folder))
    return folder


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, input=input)


def test_list_declare_and_the_file_follows(workspace: Path, tmp_path: Path) -> None:
    assert run("publish", str(workspace / "win-back.yaml")).exit_code == 0
    listed = run("experiments")
    assert listed.exit_code == 0, listed.output
    assert "win-back / test: fixed test, alpha 0.05" in listed.output
    assert "sms-offer" in listed.output and "holdout" in listed.output
    body = json.loads(run("experiments", "win-back", "--json").output)
    assert [a["name"] for a in body[0]["arms"]] == ["sms-offer", "email-offer", "holdout"]
    assert run("experiments", "nope").exit_code == 1

    refused = run("experiment", "declare", "win-back", "test", "push", "--yes")
    assert refused.exit_code == 1 and "'push' is not a branch of 'test'" in refused.output
    asked = run("experiment", "declare", "win-back", "test", "email-offer", input="n\n")
    assert asked.exit_code == 1  # the confirmation said no: nothing published
    done = run("experiment", "declare", "win-back", "test", "email-offer", "--yes")
    assert done.exit_code == 0, done.output
    assert "version 2 sends new entries of test to email-offer" in done.output
    assert "winner: email-offer" in (workspace / "win-back.yaml").read_text(encoding="utf-8")
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'parcours.db'}")
    with engine.connect() as conn:
        audits = conn.execute(select(AuditEntry.action, AuditEntry.details)).all()
    engine.dispose()
    assert [(a, d["arm"]) for a, d in audits if a == "declare_winner"] == [
        ("declare_winner", "email-offer")
    ]
    again = json.loads(run("experiments", "win-back", "--json").output)
    assert again[0]["decision"]["status"] == "declared"


def test_simulate_json_reports_each_split(workspace: Path) -> None:
    from tests.test_experiments import scenario_text

    path = workspace / "promo_test.yaml"
    path.write_text(scenario_text(), encoding="utf-8")
    result = run("simulate", str(path), "--generate", "300", "--days", "3",
                 "--start", "2026-03-02T09:00:00+00:00", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (experiment,) = json.loads(result.output)["experiments"]
    assert experiment["scenario"] == "promo_test" and experiment["step"] == "test"
    arms = {a["name"]: a for a in experiment["arms"]}
    assert set(arms) == {"a", "b", "holdout"}
    assert sum(a["entered"] for a in arms.values()) > 100
    assert experiment["decision"]["status"] in ("collecting", "winner", "no_difference")
