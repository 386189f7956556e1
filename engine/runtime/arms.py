"""Which arm of a split a contact belongs to, and how long a holdout contact stays.

The arm is a hash of the contact, never of the enrollment: the same people get the same arms in
whatever order they arrive, each time they re-enter and on every worker, so an experiment compares
stable groups. The holdout is one arm among the branches, weighted by its percentage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from engine.spec import model

HOLDOUT = "holdout"


def split_arm(
    scenario_id: str,
    step: model.SplitStep,
    external_id: str,
    shares: Mapping[str, float] | None = None,
) -> str:
    """The arm (a branch name, or HOLDOUT) of a contact at a split step; changing `salt` reshuffles.

    Branch weights are relative and share what the holdout percentage leaves, so the arms weigh
    `holdout * total` and `weight * (100 - holdout)` out of `100 * total`. A declared winner
    takes every contact outside the holdout; bandit `shares` (branch → share of the treated,
    from engine.worker.experiments) replace the weights. Either way the holdout keeps the same
    people, and the arm is still a hash of the contact: the same shares give the same arm.
    """
    # JSON keeps the parts apart whatever they contain (an external id may hold ":").
    key = json.dumps([scenario_id, step.id, external_id, step.salt or ""])
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    total = sum(b.weight for b in step.branches)
    point = int.from_bytes(digest, "big") % (100 * total)
    point -= step.holdout * total
    if point < 0:
        return HOLDOUT
    if step.experiment.winner is not None:
        return step.experiment.winner
    if shares:
        return _by_shares(step, shares, point / ((100 - step.holdout) * total))
    for branch in step.branches:
        point -= branch.weight * (100 - step.holdout)
        if point < 0:
            break
    return branch.name


def _by_shares(step: model.SplitStep, shares: Mapping[str, float], place: float) -> str:
    """The branch at `place` (0 ≤ place < 1) when the branches split by `shares`."""
    known = [(b.name, max(shares.get(b.name, 0.0), 0.0)) for b in step.branches]
    whole = sum(share for _name, share in known)
    if whole <= 0:
        return step.branches[0].name
    reached = 0.0
    for name, share in known:
        reached += share / whole
        if place < reached:
            return name
    return known[-1][0]  # rounding left the very top of the range


def holdout_until(scenario: model.Scenario, entered_at: datetime) -> datetime | None:
    """When the goal window of a holdout contact closes; None when there is nothing to measure."""
    goal = scenario.goal
    if goal is None or goal.within is None:
        return None
    return entered_at + goal.within
