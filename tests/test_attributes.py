"""Computed attributes: RFM scores and classes, lifecycle stages and customer value, computed
set-based from the purchase events, refreshed on a purchase, read by conditions and templates."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select

from engine.audience.attributes import recompute
from engine.audience.ingest import clean_event, record_events
from engine.policy.base import OptOutGate
from engine.runtime.interpreter import Interpreter
from engine.runtime.state import ACTIVE, EnrollmentState, History
from engine.spec.attributes import AttributesSpec, Lifecycle, lint_attributes_text
from engine.spec.lint import lint_paths
from engine.spec.loader import load_scenario_text
from engine.store import db
from engine.store.models import Contact, ContactMetrics, Event
from engine.worker.enroll import contact_views

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SPEC = AttributesSpec(lifecycle=Lifecycle(premium_value=500))
ATTRIBUTES_YAML = """\
format_version: 1
purchase_events: [order_placed]
value: total
window: 365d
lead_score: {half_life: 30d}
lifecycle:
  premium_value: 500
"""


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    eng = db.make_engine(engine_url)
    yield eng
    eng.dispose()


def add_contact(conn: Any, external_id: str) -> int:
    email = f"{external_id}@example.com"
    stmt = insert(Contact).values(external_id=external_id, email=email, attributes={}, tags=[])
    return int(conn.execute(stmt.returning(Contact.id)).scalar_one())


def buy(conn: Any, contact_id: int, at: datetime, total: Any, name: str = "order_placed") -> None:
    conn.execute(
        insert(Event).values(
            contact_id=contact_id, name=name, properties={"total": total}, occurred_at=at
        )
    )


def crafted_base(conn: Any) -> dict[str, int]:
    """Customer c{i} (1..10) bought i times for 10*i each, last (11-i)*3 days ago: R, F and M
    all rank the customers alike, so each score is ceil(i / 2). Two prospects never bought."""
    ids = {}
    for i in range(1, 11):
        cid = ids[f"c{i}"] = add_contact(conn, f"c{i}")
        last = NOW - (11 - i) * 3 * DAY
        for k in range(i):
            buy(conn, cid, last - k * DAY, 10 * i)
    for name in ("p1", "p2"):
        cid = ids[name] = add_contact(conn, name)
        buy(conn, cid, NOW - DAY, 99, name="page_viewed")  # not a purchase
    buy(conn, ids["c1"], NOW - 40 * DAY, "a lot")  # not a number: an order without value
    return ids


def metrics(conn: Any) -> dict[int, Any]:
    return {r.contact_id: r for r in conn.execute(select(ContactMetrics))}


def test_quintiles_classes_and_stages_on_a_crafted_base(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = crafted_base(conn)
        assert recompute(conn, SPEC, NOW) == 10
        rows = metrics(conn)
    classes = {1: "lost", 2: "lost", 3: "hibernating", 4: "hibernating", 5: "need_attention",
               6: "need_attention", 7: "loyal", 8: "loyal", 9: "champions", 10: "champions"}  # fmt: skip
    for i in range(1, 11):
        row = rows[ids[f"c{i}"]]
        score = (i + 1) // 2
        assert (row.r, row.f, row.m) == (score, score, score), i
        assert row.rfm_class == classes[i], i
        assert row.value == pytest.approx(10 * i * i)
        assert row.recency_days == (11 - i) * 3 or i == 1
    c1 = rows[ids["c1"]]
    assert (c1.orders, c1.frequency, c1.monetary, c1.recency_days) == (2, 2, 10, 30)
    stages = {i: rows[ids[f"c{i}"]].lifecycle for i in range(1, 11)}
    assert stages == {1: "repeat", 2: "repeat", 3: "repeat", 4: "loyal", 5: "loyal", 6: "loyal",
                      7: "loyal", 8: "premium", 9: "premium", 10: "premium"}  # fmt: skip
    for name in ("p1", "p2"):
        row = rows[ids[name]]
        assert (row.lifecycle, row.orders, row.r, row.rfm_class) == ("prospect", 0, None, None)


def test_ties_get_the_same_lower_score(engine: Engine) -> None:
    """Eight one-time buyers and two who bought five times: one order is the lowest frequency."""
    with engine.begin() as conn:
        ids = [add_contact(conn, f"t{i}") for i in range(10)]
        for n, cid in enumerate(ids):
            for k in range(5 if n >= 8 else 1):
                buy(conn, cid, NOW - (k + 1) * DAY, 20)
        recompute(conn, SPEC, NOW)
        rows = metrics(conn)
    assert [rows[c].f for c in ids] == [1] * 8 + [5, 5]


def test_lifecycle_moves_with_time_and_purchases(engine: Engine) -> None:
    with engine.begin() as conn:
        cid = add_contact(conn, "ana")
        buy(conn, cid, NOW, 30)
    seen = []
    for days in (1, 91, 181, 366):
        with engine.begin() as conn:
            recompute(conn, SPEC, NOW + days * DAY)
            seen.append(metrics(conn)[cid].lifecycle)
    assert seen == ["first_purchase", "at_risk", "dormant", "lost"]
    with engine.begin() as conn:
        buy(conn, cid, NOW + 366 * DAY, 30)
        recompute(conn, SPEC, NOW + 367 * DAY)
        assert metrics(conn)[cid].lifecycle == "repeat"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "attributes.yaml").write_text(ATTRIBUTES_YAML)
    monkeypatch.setenv("PARCOURS_SCENARIOS_DIR", str(folder))
    return folder


def test_a_purchase_through_ingest_refreshes_its_contact_at_once(
    engine: Engine, workspace: Path
) -> None:
    with engine.begin() as conn:
        ids = crafted_base(conn)
        recompute(conn, SPEC, NOW)
        before = metrics(conn)
    raw = {"contact": "p1", "name": "order_placed", "properties": {"total": 45.5},
           "occurred_at": NOW.isoformat()}  # fmt: skip
    with engine.begin() as conn:
        assert record_events(conn, [clean_event(raw, NOW)], NOW) == (1, 0)
        after = metrics(conn)
    p1 = after[ids["p1"]]
    # scored with the last full run's edges: the most recent buyer, with a single order
    assert (p1.lifecycle, p1.orders, p1.recency_days, p1.value) == ("first_purchase", 1, 0, 45.5)
    assert (p1.r, p1.f, p1.m, p1.rfm_class) == (5, 1, 2, "new_customers")
    unchanged = {k: v for k, v in after.items() if k != ids["p1"]}
    assert unchanged == {k: v for k, v in before.items() if k != ids["p1"]}


def test_conditions_and_templates_read_them_through_the_interpreter(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = crafted_base(conn)
        recompute(conn, SPEC, NOW)
        views = contact_views(conn, [ids["c10"], ids["c1"], ids["p1"]])
    scenario = load_scenario_text(
        textwrap.dedent("""\
        format_version: 1
        id: vip
        name: VIP
        objective: other
        topic: promotions
        triggers:
          - event: go
        steps:
          best:
            type: condition
            if: {all: [{attribute: rfm.class, op: eq, value: champions},
                       {attribute: lifecycle, op: in, value: [loyal, premium]},
                       {attribute: customer_value, op: gte, value: 500}]}
            then: thanks
            else: away
          thanks:
            type: send
            channel: email
            template: thanks
          away:
            type: exit
            reason: not-vip
        """),
        template_sources={"thanks": {"subject": "{{ contact.rfm.class }}",
                                     "text": "{{ contact.lifecycle }} {{ contact.rfm.r }}"}},
    )  # fmt: skip

    def run(contact_id: int) -> Any:
        state = EnrollmentState(1, "vip", 1, contact_id, ACTIVE, scenario.start, NOW)
        it = Interpreter(scenario, OptOutGate(), "Europe/Paris")
        return it.advance(state, views[contact_id], History(), NOW)

    sent = run(ids["c10"])
    assert sent.sends[0].parts == {"subject": "champions", "text": "premium 5"}
    assert not run(ids["c1"]).sends
    assert not run(ids["p1"]).sends
    assert views[ids["p1"]].metrics["lifecycle"] == "prospect"
    assert views[ids["c10"]].metrics["rfm"]["last_purchase_at"] == NOW - 3 * DAY


def test_statements_of_a_recompute_do_not_grow_with_contacts(engine: Engine) -> None:
    counts = []
    for size in (5, 60):
        with engine.begin() as conn:
            for i in range(size):
                cid = add_contact(conn, f"s{size}-{i}")
                buy(conn, cid, NOW - (i + 1) * DAY, i)
        statements: list[str] = []

        def count(*args: Any, seen: list[str] = statements) -> None:
            seen.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        with engine.begin() as conn:
            recompute(conn, SPEC, NOW)
        event.remove(engine, "before_cursor_execute", count)
        counts.append(len(statements))
    # lock or BEGIN IMMEDIATE, last run, lead scores, delete, insert ... select, edges, scores,
    # count, new run
    assert counts[0] == counts[1] <= 9


def test_the_worker_recomputes_once_per_period(
    engine: Engine, engine_url: str, workspace: Path
) -> None:
    from engine.config import load_settings
    from engine.runtime.clock import VirtualClock
    from engine.store.models import ContactMetricRun
    from engine.worker.scheduler import Service

    with engine.begin() as conn:
        ids = crafted_base(conn)
    settings = load_settings(database_url=engine_url, scenarios_dir=workspace)
    service = Service(engine, settings)
    clock = service.worker.clock = VirtualClock(NOW)
    service.recompute_attributes()
    service.recompute_attributes()  # within the day: not due
    clock.advance(timedelta(hours=settings.attributes_every_hours))
    service.recompute_attributes()
    with engine.connect() as conn:
        runs = conn.execute(select(ContactMetricRun.computed_at)).scalars().all()
        assert metrics(conn)[ids["c10"]].rfm_class == "champions"
    assert runs == [NOW, NOW + timedelta(days=1)]


def test_contact_show_lists_them_with_the_purchases_counted(
    engine: Engine, engine_url: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from engine.cli import cli
    from engine.store.db import utcnow

    monkeypatch.setenv("PARCOURS_DATABASE_URL", engine_url)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(workspace.parent / "data"))
    now = utcnow()
    with engine.begin() as conn:
        cid = add_contact(conn, "ana")
        buy(conn, cid, now - 400 * DAY, 120)
        buy(conn, cid, now - 2 * DAY, 35.5)
        recompute(conn, SPEC, now)
    result = CliRunner().invoke(cli, ["contact", "show", "ana"])
    assert result.exit_code == 0, result.output
    for expected in ("computed attributes", "lifecycle      repeat", "customer value 155.5",
                     "lead score     0.0 (halves every 30 days)",
                     "lost (R1 F1 M1)", "order_placed  35.5", "(outside the window)"):  # fmt: skip
        assert expected in result.output, expected
    details = json.loads(CliRunner().invoke(cli, ["contact", "show", "ana", "--json"]).output)
    computed = details["computed"]
    assert (computed["lifecycle"], computed["rfm"]["frequency"]) == ("repeat", 1)
    assert [p["value"] for p in computed["purchases"]] == [35.5, 120]


def test_the_lead_score_decays_with_its_half_life(engine: Engine) -> None:
    from sqlalchemy import update

    decaying = AttributesSpec(lead_half_life=timedelta(days=30))
    with engine.begin() as conn:
        cid = add_contact(conn, "lead")
        conn.execute(update(Contact).where(Contact.id == cid).values(score=40))
        assert contact_views(conn, [cid])[cid].metrics["lead_score"] == 40  # no decay declared
        recompute(conn, decaying, NOW)
        conn.execute(update(Contact).where(Contact.id == cid).values(score=50))
        # what the score gained since the recompute counts at once, in full
        assert contact_views(conn, [cid])[cid].metrics["lead_score"] == 50
        recompute(conn, decaying, NOW + 30 * DAY)
        view = contact_views(conn, [cid])[cid]
    assert view.metrics["lead_score"] == pytest.approx(40 / 2 + 10)
    assert view.score == 50  # the score itself never decays
    with engine.begin() as conn:
        recompute(conn, SPEC, NOW + 31 * DAY)  # the half-life removed: the score again
        assert contact_views(conn, [cid])[cid].metrics["lead_score"] == 50


BROKEN = """\
format_version: 1
purchase_events: []
value: total
windw: 30d
lifecycle:
  repeat_orders: 1
  at_risk_after: 200d
  dormant_after: 100d
"""


def test_lint_reports_a_broken_attributes_file_with_lines(tmp_path: Path) -> None:
    (tmp_path / "attributes.yaml").write_text(BROKEN)
    problems = lint_paths([tmp_path])
    found = {(p.line, p.column, p.code) for p in problems}
    assert all(p.file == str(tmp_path / "attributes.yaml") for p in problems)
    assert (2, 18, "schema.invalid") in found  # no purchase event
    assert (4, 1, "schema.unknown_field") in found
    assert (6, 18, "schema.invalid") in found  # repeat_orders below 2
    typo = next(p for p in problems if p.code == "schema.unknown_field")
    assert typo.hint == "did you mean 'window'?"


def test_the_committed_declaration_lints_clean() -> None:
    path = Path(__file__).parent.parent / "scenarios" / "attributes.yaml"
    spec, problems = lint_attributes_text(path.read_text(), str(path))
    assert problems == [] and spec is not None
    assert spec.purchase_events == ("order_placed",)


def test_stage_thresholds_must_grow() -> None:
    text = ATTRIBUTES_YAML + "  at_risk_after: 200d\n  dormant_after: 100d\n"
    spec, problems = lint_attributes_text(text, "attributes.yaml")
    assert spec is None
    assert [(p.line, p.path) for p in problems] == [(9, ("lifecycle", "dormant_after"))]


@pytest.mark.parametrize(
    ("condition", "message", "hint"),
    [
        ("{attribute: rfm.clas, op: eq, value: champions}",
         "Unknown computed attribute 'rfm.clas'.", "did you mean 'rfm.class'?"),
        ("{attribute: lifecycle, op: in, value: [loyal, at-risk]}",
         "'lifecycle' is never 'at-risk'.", "did you mean 'at_risk'?"),
        ("{attribute: rfm.class, op: ne, value: champion}",
         "'rfm.class' is never 'champion'.", "did you mean 'champions'?"),
        ("{attribute: lifecycle_stage, op: eq, value: anything}", None, None),  # its own
    ],
)  # fmt: skip
def test_lint_names_a_mistyped_computed_attribute_or_value(
    tmp_path: Path, condition: str, message: str | None, hint: str | None
) -> None:
    text = "format_version: 1\nid: vip\nname: VIP\nobjective: other\n"
    text += f"audience:\n  any:\n    - {condition}\n    - {{tag: vip}}\n"
    text += "triggers:\n  - event: go\nsteps:\n  done: {type: exit}\n"
    (tmp_path / "vip.yaml").write_text(text)
    found = [(p.line, p.message, p.hint) for p in lint_paths([tmp_path / "vip.yaml"])]
    assert found == ([(7, message, hint)] if message else [])
