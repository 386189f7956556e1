"""The experiment statistics over generated populations with a known truth (seeded, pure).

Counts are drawn with numpy's binomial directly (the same law as simulating every contact, a
thousand times faster), so each check runs hundreds of experiments of 50,000 contacts.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.insights.experiment_stats import (
    ArmCounts,
    bandit_weights,
    bonferroni,
    chi_squared,
    minimum_sample,
    msprt_p_value,
    pairwise_vs_control,
    probability_best,
    sequential_p_values,
    uplift,
    wilson,
)

RUNS = 400


def test_wilson_intervals_cover_the_true_rate_at_the_stated_rate() -> None:
    rng = np.random.default_rng(11)
    n, truth = 2_000, 0.10
    covered = 0
    for converted in rng.binomial(n, truth, size=RUNS):
        low, high = wilson(int(converted), n)
        covered += low <= truth <= high
    assert 0.93 <= covered / RUNS <= 0.97


def test_newcombe_uplift_interval_covers_the_true_difference() -> None:
    """10% in the holdout, 12% treated, 50,000 contacts (10% of them held out)."""
    rng = np.random.default_rng(12)
    treated_n, holdout_n = 45_000, 5_000
    covered_abs = covered_rel = 0
    for _ in range(RUNS):
        t = ArmCounts("a", treated_n, int(rng.binomial(treated_n, 0.12)))
        h = ArmCounts("holdout", holdout_n, int(rng.binomial(holdout_n, 0.10)))
        result = uplift(t, h)
        assert result is not None and result.relative_interval is not None
        covered_abs += result.absolute_interval[0] <= 0.02 <= result.absolute_interval[1]
        covered_rel += result.relative_interval[0] <= 0.2 <= result.relative_interval[1]
    assert 0.93 <= covered_abs / RUNS <= 0.97
    assert 0.93 <= covered_rel / RUNS <= 0.97


def test_uplift_counts_incremental_conversions_and_revenue() -> None:
    t = ArmCounts("a", 10_000, 1_200, revenue=60_000.0)
    h = ArmCounts("holdout", 1_000, 100, revenue=4_000.0)
    result = uplift(t, h)
    assert result is not None
    assert result.absolute == pytest.approx(0.02)
    assert result.relative == pytest.approx(0.2)
    assert result.incremental_conversions == pytest.approx(200)
    # 6.00 per treated contact against 4.00 per held-out one, over 10,000 treated
    assert result.incremental_revenue == pytest.approx(20_000)


def test_the_difference_test_finds_a_real_effect_and_holm_corrects_several_arms() -> None:
    control = ArmCounts("a", 25_000, 2_500)
    better = ArmCounts("b", 25_000, 3_000)
    same = ArmCounts("c", 25_000, 2_510)
    adjusted = pairwise_vs_control(control, [better, same])
    assert adjusted["b"] is not None and adjusted["b"] < 1e-6
    assert adjusted["c"] is not None and adjusted["c"] > 0.5
    p = chi_squared([control, better, same])
    assert p is not None and p < 1e-6
    assert chi_squared([ArmCounts("a", 10, 0), ArmCounts("b", 10, 0)]) is None


def test_holm_keeps_the_family_wise_false_positive_rate() -> None:
    """Three arms equal to the control: any arm 'significant' is a false positive."""
    rng = np.random.default_rng(13)
    false = 0
    for _ in range(RUNS):
        n = 5_000
        control = ArmCounts("a", n, int(rng.binomial(n, 0.1)))
        others = [ArmCounts(x, n, int(rng.binomial(n, 0.1))) for x in "bcd"]
        adjusted = pairwise_vs_control(control, others)
        false += any(p is not None and p < 0.05 for p in adjusted.values())
    assert false / RUNS <= 0.065  # at most alpha, plus the sampling noise of 400 runs


def test_probability_best_follows_the_evidence() -> None:
    clear = probability_best([ArmCounts("a", 25_000, 2_500), ArmCounts("b", 25_000, 3_000)])
    assert clear["b"] > 0.999
    assert sum(clear.values()) == pytest.approx(1)
    even = probability_best([ArmCounts("a", 100, 10), ArmCounts("b", 100, 10)])
    assert 0.4 < even["a"] < 0.6
    # the same counts, the same answer (fixed seed)
    assert probability_best([ArmCounts("a", 100, 10), ArmCounts("b", 100, 12)]) == (
        probability_best([ArmCounts("a", 100, 10), ArmCounts("b", 100, 12)])
    )


def test_minimum_sample_matches_the_textbook_figure() -> None:
    # 10% → 12% at alpha = 0.05 and 80% power: about 3,840 per arm (arcsine effect size)
    n = minimum_sample(0.10, 0.02)
    assert 3_700 < n < 4_000
    assert minimum_sample(0.10, 0.02, comparisons=3) > n
    assert minimum_sample(0.10, 0.01) > 3 * n


def _peek_days(
    rng: np.random.Generator, rates: tuple[float, float], days: int, per_day: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative entries and conversions of a control and an arm, one row per day."""
    n = np.arange(1, days + 1) * per_day
    conv_a = np.cumsum(rng.binomial(per_day, rates[0], size=days))
    conv_b = np.cumsum(rng.binomial(per_day, rates[1], size=days))
    return n, conv_a, conv_b


def _sequential_stops(n: np.ndarray, ca: np.ndarray, cb: np.ndarray, tau: float) -> int | None:
    """The first day whose always-valid p-value falls under 0.05 (None: never)."""
    p = 1.0
    for day in range(len(n)):
        p = msprt_p_value(ArmCounts("a", int(n[day]), int(ca[day])),
                          ArmCounts("b", int(n[day]), int(cb[day])), tau, p)  # fmt: skip
        if p <= 0.05:
            return day
    return None


def _fixed_stops(n: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> bool:
    """A fixed-horizon z test read every day, stopping at the first p < 0.05 (the mistake)."""
    for day in range(len(n)):
        control, arm = (
            ArmCounts("a", int(n[day]), int(ca[day])),
            ArmCounts("b", int(n[day]), int(cb[day])),
        )
        p = pairwise_vs_control(control, [arm])["b"]
        if p is not None and p < 0.05:
            return True
    return False


def test_sequential_mode_keeps_false_positives_under_alpha_with_daily_peeks() -> None:
    """No effect, a look every day for 30 days, 600 runs: the always-valid p-value stays honest,
    while the fixed test read daily stops wrongly far more often than 5%."""
    rng = np.random.default_rng(14)
    runs, sequential, fixed = 600, 0, 0
    for _ in range(runs):
        n, ca, cb = _peek_days(rng, (0.10, 0.10), days=30, per_day=300)
        sequential += _sequential_stops(n, ca, cb, tau=0.02) is not None
        fixed += _fixed_stops(n, ca, cb)
    assert sequential / runs <= 0.05
    assert fixed / runs > 0.10  # peeking at a fixed test inflates alpha (usually near 0.2 here)


def test_sequential_mode_stops_when_the_effect_is_real() -> None:
    rng = np.random.default_rng(15)
    stops = []
    for _ in range(50):
        n, ca, cb = _peek_days(rng, (0.10, 0.12), days=60, per_day=500)
        stops.append(_sequential_stops(n, ca, cb, tau=0.02))
    assert sum(s is not None for s in stops) >= 45
    # the running minimum never goes back up
    previous = 0.01
    assert (
        msprt_p_value(ArmCounts("a", 100, 10), ArmCounts("b", 100, 10), 0.02, previous) == previous
    )


def test_sequential_p_values_are_corrected_over_the_arms() -> None:
    control = ArmCounts("a", 10_000, 1_000)
    raw = sequential_p_values(
        control, [ArmCounts("b", 10_000, 1_100), ArmCounts("c", 10_000, 1_010)], 0.02
    )
    corrected = bonferroni(raw)
    assert corrected["b"] == pytest.approx(min(1.0, raw["b"] * 2))
    assert raw["b"] < raw["c"]


def test_bandit_moves_traffic_to_the_better_arm_and_keeps_the_floor() -> None:
    """10% against 15%: each round sends 1,000 entries by the current weights."""
    rng = np.random.default_rng(16)
    truth = {"a": 0.10, "b": 0.15}
    counts = {name: [0, 0] for name in truth}
    weights = {"a": 0.5, "b": 0.5}
    history = []
    for _round in range(8):
        entries = rng.multinomial(1_000, [weights["a"], weights["b"]])
        for name, n in zip(truth, entries, strict=True):
            counts[name][0] += int(n)
            counts[name][1] += int(rng.binomial(int(n), truth[name]))
        arms = [ArmCounts(name, e, c) for name, (e, c) in counts.items()]
        weights = bandit_weights(arms, floor=0.1)
        history.append(weights["b"])
        assert min(weights.values()) >= 0.1 - 1e-12
        assert sum(weights.values()) == pytest.approx(1)
    assert history[-1] > 0.5
    assert history[-1] >= history[0] or history[0] > 0.85
    assert weights["a"] >= 0.1  # the loser keeps learning


def test_holm_equals_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    from engine.insights.experiment_stats import holm

    rng = np.random.default_rng(17)
    for size in (1, 2, 3, 5):
        for _ in range(4):  # multipletests collects garbage each call: a few suffice
            raw = {f"arm{i}": float(p) for i, p in enumerate(rng.uniform(0, 0.2, size=size))}
            expected = multipletests(list(raw.values()), method="holm")[1]
            assert list(holm(raw).values()) != [] and [holm(raw)[k] for k in raw] == pytest.approx(
                list(expected)
            )
