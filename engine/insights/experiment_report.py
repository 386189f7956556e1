"""One experiment judged: its arms' counts and its settings in, rates, tests and the decision out.

Pure (counts in, a report out); the database side is engine.insights.experiments. The first
branch is the control the others are tested against; the holdout, when there is one, measures
what the journey as a whole caused (uplift).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.insights.experiment_stats import (
    ArmCounts,
    bandit_weights,
    bonferroni,
    chi_squared,
    minimum_sample,
    pairwise_vs_control,
    probability_best,
    sequential_p_values,
    uplift,
    wilson,
)
from engine.runtime.arms import HOLDOUT
from engine.spec import model

DEFAULT_TAU = 0.02  # sequential mixing spread without a min_effect: effects of a few points


@dataclass(frozen=True)
class Decision:
    """collecting (keep going), winner (the rule says so), no_difference (the planned sample is
    in and nothing beat the control), or declared (a winner routes the new entries)."""

    status: str
    winner: str | None = None
    more_per_arm: int | None = None


@dataclass
class ExperimentReport:
    scenario_id: str
    step_id: str
    label: str | None
    settings: model.Experiment
    control: str
    arms: list[dict[str, Any]]
    chi_squared_p: float | None
    uplift: dict[str, Any] | None
    minimum_sample: int | None
    decision: Decision
    # what to keep for the next look: running minimum of the raw always-valid p-values
    p_values_kept: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        smallest = min((a["entered"] for a in self.arms if not a["holdout"]), default=0)
        return {
            "scenario": self.scenario_id,
            "step": self.step_id,
            "label": self.label,
            "mode": s.mode,
            "alpha": s.alpha,
            "min_effect": s.min_effect,
            "auto_winner": s.auto_winner,
            "bandit_floor": s.bandit_floor,
            "control": self.control,
            "arms": self.arms,
            "chi_squared_p": self.chi_squared_p,
            "uplift": self.uplift,
            "minimum_sample": self.minimum_sample,
            "progress": min(1.0, smallest / self.minimum_sample) if self.minimum_sample else None,
            "decision": {
                "status": self.decision.status,
                "winner": self.decision.winner,
                "more_per_arm": self.decision.more_per_arm,
            },
        }


def tau_of(settings: model.Experiment) -> float:
    return settings.tau or settings.min_effect or DEFAULT_TAU


def evaluate(
    scenario_id: str,
    step: model.SplitStep,
    counts: Mapping[str, ArmCounts],
    kept: Mapping[str, float] | None = None,
    shares: Mapping[str, float] | None = None,
) -> ExperimentReport:
    """Judge a split step from its arms' counts (`kept`: the stored always-valid p-values)."""
    s = step.experiment
    branches = [counts.get(b.name) or ArmCounts(b.name, 0, 0) for b in step.branches]
    control, others = branches[0], branches[1:]
    if s.mode == "sequential":
        raw = sequential_p_values(control, others, tau_of(s), kept)
        p_values: dict[str, float | None] = dict(bonferroni(raw))
    else:
        raw, p_values = {}, pairwise_vs_control(control, others, s.alpha)
    best = probability_best(branches)
    needed = _needed(control, s, len(others))
    holdout = (counts.get(HOLDOUT) or ArmCounts(HOLDOUT, 0, 0)) if step.holdout else None
    arms = [_arm(a, s.alpha, p_values.get(a.name), best.get(a.name), shares) for a in branches]
    if holdout is not None:
        arms.append(_arm(holdout, s.alpha, None, None, None, is_holdout=True))
    return ExperimentReport(
        scenario_id=scenario_id,
        step_id=step.id,
        label=step.label,
        settings=s,
        control=control.name,
        arms=arms,
        chi_squared_p=chi_squared(branches),
        uplift=_uplift(branches, holdout, s.alpha),
        minimum_sample=needed,
        decision=decide(s, branches, p_values, needed),
        p_values_kept=raw,
    )


def _needed(control: ArmCounts, s: model.Experiment, comparisons: int) -> int | None:
    """Entries per arm for the declared effect. The baseline is the control's rate shrunk toward
    one half ((conversions + 1) / (entries + 2)): a young experiment gets the cautious figure."""
    if s.min_effect is None or comparisons < 1:
        return None
    baseline = (control.converted + 1) / (control.entered + 2)
    return minimum_sample(baseline, s.min_effect, s.alpha, s.power, comparisons)


def decide(
    s: model.Experiment,
    branches: Sequence[ArmCounts],
    p_values: Mapping[str, float | None],
    needed: int | None,
) -> Decision:
    """The stopping rule. Fixed mode waits for the minimum sample (when one is declared), then
    tests once; sequential mode may stop at any look, its p-values staying valid."""
    if s.winner is not None:
        return Decision("declared", s.winner)
    smallest = min((a.entered for a in branches), default=0)
    if s.mode == "fixed" and needed is not None and smallest < needed:
        return Decision("collecting", more_per_arm=needed - smallest)
    control, others = branches[0], branches[1:]
    leader = max(branches, key=lambda a: a.rate)

    def beats(p: float | None) -> bool:
        return p is not None and p < s.alpha

    if leader is not control and beats(p_values.get(leader.name)):
        return Decision("winner", leader.name)
    if others and leader is control and all(beats(p_values.get(a.name)) for a in others):
        return Decision("winner", control.name)
    if s.mode == "fixed" and needed is not None:
        return Decision("no_difference")
    return Decision("collecting")


def _arm(
    a: ArmCounts,
    alpha: float,
    p_value: float | None,
    best: float | None,
    shares: Mapping[str, float] | None,
    is_holdout: bool = False,
) -> dict[str, Any]:
    low, high = wilson(a.converted, a.entered, alpha)
    return {
        "name": a.name,
        "holdout": is_holdout,
        "entered": a.entered,
        "converted": a.converted,
        "rate": a.rate,
        "interval": [low, high],
        "revenue": a.revenue,
        "revenue_per_contact": a.revenue / a.entered if a.entered else 0.0,
        "p_value": p_value,
        "probability_best": best,
        "share": (shares or {}).get(a.name),
    }


def _uplift(
    branches: Sequence[ArmCounts], holdout: ArmCounts | None, alpha: float
) -> dict[str, Any] | None:
    """Every treated branch together against the holdout: what the journey caused."""
    if holdout is None:
        return None
    treated = ArmCounts(
        "treated",
        sum(a.entered for a in branches),
        sum(a.converted for a in branches),
        sum(a.revenue for a in branches),
    )
    result = uplift(treated, holdout, alpha)
    if result is None:
        return None
    return {
        "absolute": result.absolute,
        "absolute_interval": list(result.absolute_interval),
        "relative": result.relative,
        "relative_interval": list(result.relative_interval) if result.relative_interval else None,
        "incremental_conversions": result.incremental_conversions,
        "incremental_revenue": result.incremental_revenue,
        "p_value": result.p_value,
    }


def bandit_shares(step: model.SplitStep, counts: Mapping[str, ArmCounts]) -> dict[str, float]:
    """Thompson sampling shares of the step's branches, with the declared floor each."""
    branches = [counts.get(b.name) or ArmCounts(b.name, 0, 0) for b in step.branches]
    return bandit_weights(branches, step.experiment.bandit_floor or 0.0)
