"""`parcours segments` and `parcours segment show|import` as an operator runs them, on SQLite
and PostgreSQL, and `parcours up` importing a manual list whose file changed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from designer.cli import cli
from engine.audience.ingest import clean_contact, upsert_contacts
from engine.audience.membership import rebuild
from engine.spec.segments import load_segment_text
from engine.store.db import make_engine, utcnow
from engine.store.models import SegmentChange, SegmentCount
from tests.up_process import parcours_up

ROOT = Path(__file__).resolve().parents[1]
Run = Callable[..., Result]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The example segments, and contacts c-1001 and c-1002 of the VIP list (not c-1003)."""
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios" / "segments", scenarios / "segments")
    return tmp_path


@pytest.fixture
def run(engine_url: str, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    for key in list(os.environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARCOURS_DATABASE_URL", engine_url)
    monkeypatch.setenv("PARCOURS_SCENARIOS_DIR", str(workspace / "scenarios"))
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    engine = make_engine(engine_url)
    with engine.begin() as conn:
        rows = [clean_contact({"external_id": x}) for x in ("c-1001", "c-1002", "c-2001")]
        upsert_contacts(conn, rows, utcnow())
    engine.dispose()
    return invoke


def _rebuild(engine_url: str, workspace: Path, segment_id: str) -> None:
    path = workspace / "scenarios" / "segments" / f"{segment_id}.yaml"
    segment = load_segment_text(path.read_text(encoding="utf-8"), str(path))
    assert segment.condition is not None
    engine = make_engine(engine_url)
    with engine.begin() as conn:
        rebuild(conn, segment_id, segment.condition, utcnow())
    engine.dispose()


def test_segments_lists_kinds_counts_and_changes(
    run: Run, engine_url: str, workspace: Path
) -> None:
    assert run("segment", "import", "vip-list").exit_code == 1  # c-1003 is unknown
    _rebuild(engine_url, workspace, "prospects")
    engine = make_engine(engine_url)
    with engine.begin() as conn:
        yesterday = utcnow().date() - timedelta(days=1)
        conn.execute(
            SegmentCount.__table__.insert().values(segment_id="prospects", day=yesterday, members=1)
        )
    engine.dispose()
    result = run("segments")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert lines["vip-list"][:4] == ["vip-list", "manual", "2", "-"]
    assert lines["prospects"][:4] == ["prospects", "condition", "3", "+2"]
    assert lines["premium"][:3] == ["premium", "condition", "0"]
    listed = json.loads(run("segments", "--json").output)
    assert {s["id"]: (s["kind"], s["count"], s["change"]) for s in listed}["prospects"] == (
        "condition", 3, 2,
    )  # fmt: skip


def test_a_broken_segment_file_is_listed_with_its_problem(run: Run, workspace: Path) -> None:
    broken = workspace / "scenarios" / "segments" / "broken.yaml"
    broken.write_text("format_version: 1\nid: broken\nname: Broken\nconditon: {}\n", "utf-8")
    result = run("segments")
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "broken                       -" in result.output
    assert f"{broken}:4:1: error" in result.output and "conditon" in result.output
    assert "vip-list" in result.output  # the others are still listed
    shown = run("segment", "show", "broken")
    assert shown.exit_code == 1 and "segment 'broken' has errors" in shown.output


def test_segment_show_gives_definition_sample_and_trend(
    run: Run, engine_url: str, workspace: Path
) -> None:
    _rebuild(engine_url, workspace, "prospects")
    text = run("segment", "show", "prospects", "--sample", "2")
    assert text.exit_code == 0, text.output
    assert "segment prospects: Prospects (condition)" in text.output
    assert "order_placed count = 0" in text.output
    assert "    op: eq" in text.output  # the YAML as written
    assert "sample (2 of 3)\n  c-1001 c-1002\n" in text.output
    assert "(rebuild)" in text.output
    found = json.loads(run("segment", "show", "prospects", "--json").output)
    assert found["count"] == 3 and found["sample"] == ["c-1001", "c-1002", "c-2001"]
    assert found["definition"]["condition"] == {
        "event": "order_placed",
        "count": {"op": "eq", "value": 0},
    }
    assert found["trend"] == [{"day": utcnow().date().isoformat(), "members": 3}]
    assert found["last_change"]["reason"] == "rebuild"
    premium = json.loads(run("segment", "show", "premium", "--json").output)
    assert premium["definition"]["text"] == (
        "all of (member of segment repeat-buyers; sum of order_placed.total ≥ 500)"
    )
    assert premium["count"] == 0 and premium["last_change"] is None


def test_an_unknown_segment_says_did_you_mean(run: Run) -> None:
    result = run("segment", "show", "premum")
    assert result.exit_code == 1
    assert "no segment 'premum'" in result.output and "did you mean 'premium'?" in result.output
    assert "Traceback" not in result.output


def test_segment_import_from_the_named_list_writes_rejects(run: Run, workspace: Path) -> None:
    result = run("segment", "import", "vip-list")
    assert result.exit_code == 1
    source = workspace / "scenarios" / "segments" / "vip-list.csv"
    assert f"{source}:4: 'c-1003': no contact has this external id" in result.output
    assert "3 lines read from vip-list.csv, 2 contacts matched; 2 entered, 0 left, 1 rejected" in (
        result.output
    )
    rejects = source.with_name("vip-list.rejects.csv").read_text(encoding="utf-8")
    assert rejects.splitlines()[1].startswith("c-1003,4,external_id,no contact")


def test_segment_import_modes_and_refusals(run: Run, workspace: Path, engine_url: str) -> None:
    extra = workspace / "extra.csv"
    extra.write_text("external_id,note\nc-2001,new\n", encoding="utf-8")
    run("segment", "import", "vip-list")
    added = run("segment", "import", "vip-list", str(extra), "--mode", "add")
    assert added.exit_code == 0 and "1 entered, 0 left, 0 rejected; 3 members now" in added.output
    removed = run("segment", "import", "vip-list", str(extra), "--mode", "remove")
    assert "0 entered, 1 left" in removed.output and "2 members now" in removed.output
    engine = make_engine(engine_url)
    with engine.connect() as conn:
        reasons = conn.execute(select(SegmentChange.reason).order_by(SegmentChange.id)).scalars()
        assert list(reasons)[-2:] == ["import:add", "import:remove"]
    engine.dispose()
    refused = run("segment", "import", "premium", str(extra))
    assert refused.exit_code == 1 and "'premium' is a condition segment" in refused.output
    bad = workspace / "bad.csv"
    bad.write_text("id\nc-1001\n", encoding="utf-8")
    header = run("segment", "import", "vip-list", str(bad))
    assert header.exit_code == 1 and f"{bad}:1: no external_id column" in header.output


# --- parcours up -------------------------------------------------------------------------------


def _up(env: dict[str, str]) -> str:
    """Start `parcours up`, wait until it answers, stop it; its output."""
    with parcours_up(env) as up:
        pass
    return up.output


@pytest.mark.slow
def test_up_imports_a_list_once_and_again_when_its_file_changed(
    run: Run, workspace: Path, engine_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(
        PARCOURS_DATABASE_URL=engine_url,
        PARCOURS_SCENARIOS_DIR=str(workspace / "scenarios"),
        PARCOURS_DATA_DIR=str(workspace / "data"),
        PARCOURS_API_KEY="k",
    )
    first = _up(env)
    assert "vip-list: 3 lines read from vip-list.csv, 2 contacts matched" in first, first
    assert "Traceback" not in first
    assert "vip-list:" not in _up(env)  # unchanged: not imported again
    source = workspace / "scenarios" / "segments" / "vip-list.csv"
    source.write_text("external_id\nc-2001\n", encoding="utf-8")
    third = _up(env)
    assert "1 entered, 2 left, 0 rejected; 1 members now" in third, third
