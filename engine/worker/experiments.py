"""The worker's look at live experiments: bandit shares, always-valid p-values, automatic winners.

Every LOOK_EVERY of the worker's clock (virtual in `simulate`), each watched split step of a live
scenario (bandit, automatic winner or sequential mode, and no winner yet) is counted and judged
once (engine.insights.experiments); the running p-values and the bandit's shares are stored in
`experiment_state`, and an automatic experiment whose rule says so gets its winner declared.
The shares are then handed to the interpreters (which read no database) until the next look.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from engine.errors import ParcoursError
from engine.spec import model
from engine.store.models import ExperimentState

logger = logging.getLogger(__name__)

LOOK_EVERY = timedelta(minutes=5)
AUTO_ACTOR = "auto-winner"  # the audit log's name for a winner the rule declared


def watched(step: model.SplitStep) -> bool:
    """A split step the worker looks at: it adapts (bandit), decides (auto) or keeps p-values."""
    e = step.experiment
    return e.winner is None and (
        e.bandit_floor is not None or e.auto_winner or e.mode == "sequential"
    )


class ExperimentUpkeep:
    """Looks at the watched experiments when due; keeps the shares the interpreters use."""

    def __init__(self, every: timedelta = LOOK_EVERY) -> None:
        self.every = every
        self._next: datetime | None = None
        self.shares: dict[str, dict[str, dict[str, float]]] = {}  # scenario → step → shares
        self.declared = 0

    def run_when_due(
        self, engine: Engine, live: Sequence[tuple[int, model.Scenario]], now: datetime
    ) -> bool:
        """Look when due; True when a winner was declared (a new version is live)."""
        if self._next is not None and now < self._next:
            return False
        self._next = now + self.every
        declared = self.declared
        for _version_id, scenario in live:
            for step in scenario.steps.values():
                if isinstance(step, model.SplitStep) and watched(step):
                    self._look(engine, scenario, step, now)
        self.shares = _stored_shares(engine)
        return self.declared > declared

    def shares_of(self, scenario_id: str) -> Mapping[str, Mapping[str, float]]:
        return self.shares.get(scenario_id, {})

    def _look(
        self, engine: Engine, scenario: model.Scenario, step: model.SplitStep, now: datetime
    ) -> None:
        from engine.insights.experiment_report import bandit_shares, evaluate
        from engine.insights.experiments import (
            arm_results,
            declare_winner,
            goal_value,
            kept_state,
            save_state,
        )

        try:
            with Session(engine) as session, session.begin():
                counts = arm_results(session, scenario.id, step.id, goal_value(scenario))
                kept, _shares = kept_state(session, scenario.id, step.id)
                shares = bandit_shares(step, counts) if step.experiment.bandit_floor else None
                report = evaluate(scenario.id, step, counts, kept, shares)
                save_state(session, scenario.id, step.id, now, report.p_values_kept, shares)
                winner = report.decision.winner
                if step.experiment.auto_winner and report.decision.status == "winner" and winner:
                    declare_winner(session, scenario.id, step.id, winner, AUTO_ACTOR, now)
                    self.declared += 1
                    logger.info(
                        "experiment %s/%s: winner %s declared by its rule",
                        scenario.id, step.id, winner,
                        extra={"action": "declare_winner", "scenario_id": scenario.id},
                    )  # fmt: skip
        except (SQLAlchemyError, ParcoursError):
            # another worker declared at the same instant, or the database is busy: next look
            logger.exception(
                "experiment %s/%s: look failed; trying again at the next one",
                scenario.id, step.id, extra={"action": "experiment_look"},
            )  # fmt: skip


def _stored_shares(engine: Engine) -> dict[str, dict[str, dict[str, float]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ExperimentState.scenario_id, ExperimentState.step_id, ExperimentState.shares)
        ).all()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for scenario_id, step_id, shares in rows:
        if shares:
            out.setdefault(scenario_id, {})[step_id] = {k: float(v) for k, v in shares.items()}
    return out
