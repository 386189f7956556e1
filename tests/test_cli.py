"""The `parcours` command as developers and operators use it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from designer.cli import cli
from engine.spec.lint import NOT_SCENARIOS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key in list(__import__("os").environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_lint_examples_is_clean(run) -> None:  # type: ignore[no-untyped-def]
    result = run("lint", str(ROOT / "scenarios"))
    assert result.exit_code == 0, result.output
    assert "0 errors" in result.output


def test_lint_reports_every_problem_with_its_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "broken.yaml"
    bad.write_text(
        "format_version: 1\n"
        "id: broken\n"
        "name: Broken\n"
        "objective: basket\n"
        "triggers:\n"
        "  - event: cart_abandoned\n"
        "steps:\n"
        "  first:\n"
        "    type: wait\n"
        "    duraton: 1h\n"  # line 10: misspelled
        "    next: secnd\n"  # line 11: missing step
        "  second:\n"
        "    type: send\n"
        "    channel: emial\n"  # line 14: unknown channel
        "    content:\n"
        "      subject: Hi\n"
        "      text: Hi\n",
        encoding="utf-8",
    )
    result = run("lint", str(bad))
    assert result.exit_code == 1
    out = result.output
    assert f"{bad}:10:" in out and "duration" in out
    assert f"{bad}:11:" in out and "second" in out
    assert f"{bad}:14:" in out and "email" in out
    data = json.loads(run("lint", "--json", str(bad)).output)
    assert {p["line"] for p in data if p["severity"] == "error"} >= {10, 11, 14}


def test_lint_reports_what_would_fail_later_in_one_run(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "later.yaml"
    bad.write_text(
        "format_version: 1\n"
        "id: later\n"
        "name: Later\n"
        "objective: other\n"
        "triggers: [{manual: true}]\n"
        "entry: {reentry: cooldwn}\n"  # line 6
        "steps:\n"
        "  check:\n"
        "    type: condition\n"
        '    if: {expr: "contact.__class__ is defined"}\n'  # line 10
        "    then: hook\n"
        "  hook:\n"
        "    type: webhook\n"
        "    url: http://[::ffff:127.0.0.1]/hooks\n"  # line 14
        "  orphan:\n"  # line 15
        "    type: exit\n",
        encoding="utf-8",
    )
    result = run("lint", str(bad))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[-1] == "4 errors, 0 warnings in 1 file"
    assert lines[:4] == [
        f"{bad}:6:18: error [schema.invalid] field entry.reentry: Unknown value 'cooldwn'. "
        "(did you mean 'cooldown'?)",
        f"{bad}:10:16: error [expression.private_attribute] step 'check' field steps.check.if.expr: "
        "expression reads the private attribute '__class__', which templates may not read.",
        f"{bad}:14:10: error [webhook.refused] step 'hook' field steps.hook.url: The webhook "
        "channel will refuse this URL: plain http refused, https only (see allow_http). "
        "(use https, or set allow_http for the webhook channel in channels.yaml)",
        f"{bad}:15:3: error [graph.unreachable] step 'orphan' field steps.orphan: No path from "
        "the start step 'check' leads to this step. (link it from another step's next, or "
        "delete it)",
    ]


def test_schema_is_json(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "schema.json"
    assert run("schema", "-o", str(out)).exit_code == 0
    schema = json.loads(out.read_text())
    assert schema["title"] == "Parcours scenario"


def test_lint_covers_the_segments_folder(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    folder = tmp_path / "scenarios"
    clean = run("lint", str(folder))
    assert clean.exit_code == 0, clean.output
    # counted only when they have problems
    scenarios = len([p for p in folder.glob("*.yaml") if p.name not in NOT_SCENARIOS])
    segments = len(list((folder / "segments").glob("*.yaml")))
    programs = len(list((folder / "programs").glob("*.yaml")))
    assert clean.output.splitlines()[-1] == (
        f"0 errors, 0 warnings in {scenarios + segments + programs} files"
    )
    premium = folder / "segments" / "premium.yaml"
    premium.write_text(
        premium.read_text(encoding="utf-8").replace("segment: repeat-buyers", "segment: repeat"),
        encoding="utf-8",
    )
    (folder / "segments" / "lapsed.yaml").write_text(
        "format_version: 1\nid: lapsed\nname: Lapsed\ncondition: {segment: lapsed}\n",
        encoding="utf-8",
    )
    win_back = folder / "win-back.yaml"
    head, rest = win_back.read_text(encoding="utf-8").split("audience:\n", 1)
    tail = rest.split("triggers:\n", 1)[1]
    win_back.write_text(
        f"{head}audience:\n  segment: lapsed-90-day\ntriggers:\n{tail}", encoding="utf-8"
    )
    result = run("lint", str(folder))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert (
        f"{premium}:8:16: error [segment.unknown] field condition.all.0.segment: No segment "
        "with id 'repeat' in segments/. (did you mean 'repeat-buyers'?)"
    ) in lines
    assert (
        f"{folder / 'segments' / 'lapsed.yaml'}:4:22: error [segment.cycle] field "
        "condition.segment: Segments refer to each other in a cycle: lapsed → lapsed. "
        "(a segment cannot contain itself; remove one of the references)"
    ) in lines
    assert any(
        line.startswith(f"{win_back}:12:12: error [segment.unknown]")
        and "did you mean 'lapsed-90-days'?" in line
        for line in lines
    ), lines


def test_schema_of_segment_files(run) -> None:  # type: ignore[no-untyped-def]
    schema = json.loads(run("schema", "--segment").output)
    assert schema["title"] == "Parcours segment"
    assert {"condition", "manual"} <= set(schema["properties"])


def test_import_contacts_keeps_good_rows_and_rejects_bad_ones(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(
        "external_id,email,timezone,first_name,score\n"
        "a1,a1@example.com,Europe/Paris,Ann,10\n"
        "a2,not-an-email,Europe/Paris,Bob,3\n"
        ",c@example.com,Europe/Paris,Cy,1\n"
        "a4,d@example.com,Mars/Olympus,Di,2\n"
        "a5,e@example.com,America/Montreal,Eve,x\n"
        "a6,f@example.com,,Fay,7\n",
        encoding="utf-8",
    )
    result = run("import", "contacts", str(csv_file))
    assert result.exit_code == 1
    assert "2 contacts imported" in result.output and "4 rejected" in result.output
    with (tmp_path / "contacts.rejects.csv").open(newline="") as fh:
        rejects = list(csv.DictReader(fh))
    assert [(r["_rejected_row"], r["_rejected_field"]) for r in rejects] == [
        ("3", "email"),
        ("4", "external_id"),
        ("5", "timezone"),
        ("6", "score"),
    ]
    # the rejects file keeps the original columns: fix it and import it again
    assert rejects[0]["email"] == "not-an-email" and rejects[0]["first_name"] == "Bob"
    fixed = (
        (tmp_path / "contacts.rejects.csv").read_text().replace("not-an-email", "bob@example.com")
    )
    (tmp_path / "fixed.csv").write_text(fixed)
    assert (
        "1 contacts imported (1 new"
        in run("import", "contacts", str(tmp_path / "fixed.csv")).output
    )
    again = run("import", "contacts", str(csv_file))
    assert "0 new, 2 updated" in again.output


def test_import_events_with_a_bad_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        '{"contact": "a1", "name": "signed_up", "occurred_at": "2026-01-05T10:00:00Z", "event_key": "k1"}\n'
        "{not json\n"
        '{"contact": "a1", "name": "bad name!", "occurred_at": "2026-01-05T10:00:00Z"}\n'
        '{"contact": "a1", "name": "signed_up", "occurred_at": "2026-01-05T10:00:00Z", "event_key": "k1"}\n',
        encoding="utf-8",
    )
    result = run("import", "events", str(jsonl))
    assert "1 events recorded, 1 duplicates ignored, 2 rejected" in result.output
    rejects = (tmp_path / "events.rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["row"] for r in rejects] == [2, 3]


def test_simulate_json_report(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios", scenarios)
    result = run(
        "simulate",
        str(scenarios / "cart-abandonment.yaml"),
        "--generate",
        "60",
        "--start",
        "2026-01-05T00:00:00Z",
        "--days",
        "10",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["contacts"] == 60
    entries = report["entries"]["cart-abandonment"]
    assert 0 < entries <= 60
    assert report["steps"]["cart-abandonment"]["reminder-email"] <= entries
    assert sum(report["sends"].get("email", {}).values()) >= 1
    # the KPIs of the run, per scenario and per program of the folder that groups it
    kpis = report["kpis"]["cart-abandonment"]
    assert kpis["entries"] == entries
    assert kpis["sends"] == sum(sum(days.values()) for days in report["sends"].values())
    assert kpis["conversions"] == report["converted"].get("cart-abandonment", 0)
    program = report["programs"]["basket-growth"]
    assert program["scenarios"] == ["cart-abandonment"]  # the program's one simulated journey
    assert program["kpis"]["sends"] == kpis["sends"]


def test_publish_is_idempotent_and_versions_changes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios", scenarios)
    first = run("publish", str(scenarios))
    assert first.exit_code == 0 and "cart-abandonment: version 1 published" in first.output
    assert "cart-abandonment: version 1 unchanged" in run("publish", str(scenarios)).output
    path = scenarios / "cart-abandonment.yaml"
    path.write_text(path.read_text().replace("duration: 1h", "duration: 2h"))
    assert "cart-abandonment: version 2 published" in run("publish", str(scenarios)).output
    listing = run("scenarios").output
    assert "cart-abandonment" in listing and "live" in listing
    assert "paused" in run("pause", "cart-abandonment").output
    assert "error: no scenario 'nope'" in run("pause", "nope").output
