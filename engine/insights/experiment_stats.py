"""The statistics of an experiment, over counts only: pure, no database, no clock.

Every formula is a well-kept library's (statsmodels, scipy), except the mixture sequential
probability ratio test, whose statistic is a closed form (Johari, Pekelis & Walsh 2017, "Always
valid inference"). Importing this module loads scipy and statsmodels (about a second): callers on
a hot path import it inside the function that needs it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

BEST_DRAWS = 20_000  # Monte Carlo draws of the Beta posteriors for P(best) and the bandit
BEST_SEED = 0  # fixed: the same counts always give the same probabilities


@dataclass(frozen=True)
class ArmCounts:
    """What an arm collected: entries, conversions within the goal window, goal revenue."""

    name: str
    entered: int
    converted: int
    revenue: float = 0.0

    @property
    def rate(self) -> float:
        return self.converted / self.entered if self.entered else 0.0


def wilson(converted: int, entered: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a conversion rate ((0, 1) with no entries yet)."""
    if entered <= 0:
        return (0.0, 1.0)
    low, high = proportion_confint(converted, entered, alpha=alpha, method="wilson")
    return (float(low), float(high))


def chi_squared(arms: Sequence[ArmCounts]) -> float | None:
    """p-value of "every arm converts alike" (chi-squared on arms by converted/not)."""
    table = [[a.converted, a.entered - a.converted] for a in arms if a.entered]
    if len(table) < 2 or not any(row[0] for row in table) or all(row[1] == 0 for row in table):
        return None  # a column of zeros: nothing to test yet
    result = scipy_stats.chi2_contingency(table)
    return float(result.pvalue)


def pairwise_vs_control(
    control: ArmCounts, others: Sequence[ArmCounts], alpha: float = 0.05
) -> dict[str, float | None]:
    """Holm-adjusted p-values of each arm against the control (two-proportion z test)."""
    raw: dict[str, float] = {}
    for arm in others:
        if not (arm.entered and control.entered) or arm.converted + control.converted == 0:
            continue
        if arm.converted + control.converted == arm.entered + control.entered:
            continue  # everyone converted: the variance is zero
        _z, p = proportions_ztest(
            [arm.converted, control.converted], [arm.entered, control.entered]
        )
        raw[arm.name] = float(p)
    adjusted: dict[str, float | None] = {a.name: None for a in others}
    adjusted.update(holm(raw))
    return adjusted


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment (equal to statsmodels' multipletests(method="holm")).

    Written out because multipletests runs a full garbage collection on every call (40 ms in
    a large process), and this runs on every look at every experiment; a test checks the two
    agree.
    """
    order = sorted(p_values, key=lambda name: p_values[name])
    m, running, out = len(order), 0.0, {}
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[name]))
        out[name] = running
    return out


def probability_best(
    arms: Sequence[ArmCounts], draws: int = BEST_DRAWS, seed: int = BEST_SEED
) -> dict[str, float]:
    """P(each arm has the highest rate) under Beta(1 + conversions, 1 + non-conversions)."""
    if not arms:
        return {}
    rng = np.random.default_rng(seed)
    samples = np.column_stack(
        [
            scipy_stats.beta.rvs(1 + a.converted, 1 + a.entered - a.converted, size=draws,
                                 random_state=rng)
            for a in arms
        ]
    )  # fmt: skip
    wins = np.bincount(samples.argmax(axis=1), minlength=len(arms))
    return {a.name: float(w) / draws for a, w in zip(arms, wins, strict=True)}


def bandit_weights(
    arms: Sequence[ArmCounts], floor: float, seed: int = BEST_SEED
) -> dict[str, float]:
    """Thompson sampling shares: P(best) scaled into what the floors leave, plus the floor each.

    Every arm keeps at least `floor` of the treated entries, so a loser still gets data and the
    posteriors keep learning; the shares sum to 1.
    """
    best = probability_best(arms, seed=seed)
    floor = min(floor, 1 / len(arms)) if arms else floor
    free = 1 - floor * len(arms)
    return {name: floor + free * p for name, p in best.items()}


@dataclass(frozen=True)
class Uplift:
    """What the journey caused: treated rate minus holdout rate, and the totals it implies."""

    absolute: float
    absolute_interval: tuple[float, float]
    relative: float | None  # treated rate / holdout rate - 1
    relative_interval: tuple[float, float] | None
    incremental_conversions: float
    incremental_revenue: float
    p_value: float | None


def uplift(treated: ArmCounts, holdout: ArmCounts, alpha: float = 0.05) -> Uplift | None:
    """Uplift against the holdout: Newcombe interval on the difference, log interval on the ratio.

    Incremental conversions and revenue are the uplift times the treated entries (revenue per
    treated contact minus revenue per holdout contact, times the treated entries).
    """
    if not (treated.entered and holdout.entered):
        return None
    counts = (treated.converted, treated.entered, holdout.converted, holdout.entered)
    low, high = confint_proportions_2indep(*counts, compare="diff", method="newcomb", alpha=alpha)
    diff = treated.rate - holdout.rate
    relative, relative_interval = None, None
    if holdout.converted and treated.converted:
        r_low, r_high = confint_proportions_2indep(*counts, compare="ratio", alpha=alpha)
        relative = treated.rate / holdout.rate - 1
        relative_interval = (float(r_low) - 1, float(r_high) - 1)
    per_contact = treated.revenue / treated.entered - holdout.revenue / holdout.entered
    p_value = pairwise_vs_control(holdout, [treated], alpha)[treated.name]
    return Uplift(
        absolute=diff,
        absolute_interval=(float(low), float(high)),
        relative=relative,
        relative_interval=relative_interval,
        incremental_conversions=diff * treated.entered,
        incremental_revenue=per_contact * treated.entered,
        p_value=p_value,
    )


def minimum_sample(
    baseline: float,
    min_effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    comparisons: int = 1,
) -> int:
    """Entries needed per arm to detect `min_effect` (absolute) over `baseline` at this power.

    Two-sided, Bonferroni over the comparisons (the Holm correction is never more demanding).
    """
    base = min(max(baseline, 1e-4), 1 - 1e-4)
    target = min(base + min_effect, 1 - 1e-4)
    effect = abs(float(proportion_effectsize(target, base)))
    if effect == 0:
        return 0
    n = NormalIndPower().solve_power(
        effect_size=effect, alpha=alpha / max(comparisons, 1), power=power, ratio=1.0
    )
    return math.ceil(float(n))


def msprt_p_value(control: ArmCounts, arm: ArmCounts, tau: float, previous: float = 1.0) -> float:
    """The always-valid p-value of "arm converts like control" after one more look.

    Mixture SPRT on the difference of rates, normal approximation: with θ̂ the observed
    difference, V its estimated variance and a N(0, τ²) mixture over the true difference,
    Λ = sqrt(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²))). The p-value is the running minimum
    of 1/Λ, so it never goes back up, and P(it ever falls under alpha | no effect) ≤ alpha:
    a look every day, or every minute, does not inflate false positives.
    """
    if not (control.entered and arm.entered):
        return previous
    diff = arm.rate - control.rate
    variance = (
        control.rate * (1 - control.rate) / control.entered
        + arm.rate * (1 - arm.rate) / arm.entered
    )
    if variance <= 0:
        return previous
    t2 = tau * tau
    log_lambda = 0.5 * math.log(variance / (variance + t2)) + t2 * diff * diff / (
        2 * variance * (variance + t2)
    )
    return min(previous, 1.0, math.exp(-log_lambda) if log_lambda < 700 else 0.0)


def sequential_p_values(
    control: ArmCounts,
    others: Sequence[ArmCounts],
    tau: float,
    previous: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Always-valid p-values of each arm against the control, Bonferroni over the arms.

    `previous` holds the running minimum (uncorrected) of earlier looks; the result, before
    correction, is what to keep for the next look (see `correct`).
    """
    prev = previous or {}
    return {a.name: msprt_p_value(control, a, tau, prev.get(a.name, 1.0)) for a in others}


def bonferroni(p_values: Mapping[str, float]) -> dict[str, float]:
    """Each p-value times the number of comparisons, capped at 1."""
    k = len(p_values)
    return {name: min(1.0, p * k) for name, p in p_values.items()}
