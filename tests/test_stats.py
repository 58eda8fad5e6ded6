"""Bootstrap confidence intervals (coverage, seeds then clips), the paired test's choice and power, its effect size
and Holm's correction."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cinelora.stats import (
    HIERARCHICAL, MIN_WILCOXON_PAIRS, bootstrap_mean_ci, holm_adjust, paired_test, rank_biserial,
)


def test_bootstrap_ci_covers_the_true_mean_at_about_its_nominal_rate():
    rng = np.random.default_rng(0)
    true_mean, n_clips, repetitions = 2.0, 30, 200  # gamma(shape 2, scale 1): skewed, like per-clip metrics
    covered = 0
    for _ in range(repetitions):
        ci = bootstrap_mean_ci(rng.gamma(2.0, 1.0, n_clips), n_resamples=999)
        covered += ci.low <= true_mean <= ci.high
    assert 0.88 <= covered / repetitions <= 0.99


def test_hierarchical_bootstrap_covers_when_clips_and_seeds_both_vary():
    # value = clip difficulty (shared by the seeds) + seed offset (a whole run) + noise; the true mean is 0
    rng = np.random.default_rng(1)
    n_seeds, n_clips, repetitions = 3, 20, 200
    covered = {"hierarchical": 0, "clips only": 0, "flat": 0}
    for _ in range(repetitions):
        values = (rng.normal(0.0, 1.0, n_clips) + rng.normal(0.0, 0.3, (n_seeds, 1))
                  + rng.normal(0.0, 0.2, (n_seeds, n_clips)))
        cis = {"hierarchical": bootstrap_mean_ci(values, n_resamples=999),
               "clips only": bootstrap_mean_ci(values.mean(axis=0), n_resamples=999),  # ignores the seed offsets
               "flat": bootstrap_mean_ci(values.ravel(), n_resamples=999)}  # pretends 60 independent values
        assert cis["hierarchical"].n == n_seeds * n_clips and cis["hierarchical"].mean == pytest.approx(values.mean())
        for name, ci in cis.items():
            covered[name] += ci.low <= 0.0 <= ci.high
    assert cis["hierarchical"].method == HIERARCHICAL
    assert 0.85 <= covered["hierarchical"] / repetitions <= 0.99
    assert covered["flat"] < covered["clips only"] < covered["hierarchical"]


def test_hierarchical_bootstrap_widens_when_seeds_disagree_and_draws_clips_once_for_all_seeds():
    clips = np.random.default_rng(4).gamma(2.0, 0.1, 30)
    agree = np.tile(clips, (3, 1))
    # the same clips, each seed's run shifted: the seed spread (0.1) is about 4 times the clip mean's standard error
    disagree = agree + np.array([[-0.1], [0.0], [0.1]])
    same, shifted = bootstrap_mean_ci(agree), bootstrap_mean_ci(disagree)
    assert same.method == shifted.method == HIERARCHICAL and same.mean == pytest.approx(shifted.mean)
    assert shifted.half_width > 1.5 * same.half_width  # a clips-only bootstrap would give the same width
    # identical seeds: the interval is the clips' own percentile interval, not 1/sqrt(3) of it as it would be if
    # each seed drew its clips anew
    alone = stats.bootstrap((clips,), np.mean, n_resamples=9999, method="percentile",
                            rng=np.random.default_rng(0)).confidence_interval
    assert same.half_width == pytest.approx((alone.high - alone.low) / 2, rel=0.1)
    assert bootstrap_mean_ci(disagree) == shifted  # a fresh generator per call


def test_bootstrap_ci_is_reproducible_and_handles_degenerate_samples():
    values = np.array([0.2, 0.5, 0.4, 0.9, 0.3])
    assert bootstrap_mean_ci(values) == bootstrap_mean_ci(values)
    assert bootstrap_mean_ci(values[None]) == bootstrap_mean_ci(values)  # one seed: the 1-D interval
    constant = bootstrap_mean_ci(np.full(4, 0.5))
    assert constant.method == "percentile" and constant.low == constant.high == 0.5
    one_clip = bootstrap_mean_ci(np.array([[0.1], [0.3]]))
    assert one_clip.low is None and one_clip.method == "none" and one_clip.n == 2
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean_ci(np.array([0.1, np.nan]))


def test_paired_test_finds_a_clear_shift_and_not_a_null_one():
    rng = np.random.default_rng(2)
    baseline = rng.normal(0.5, 0.1, 24)
    shifted = paired_test(baseline - 0.05 + rng.normal(0, 0.02, 24), baseline)
    assert shifted.test_name == "Wilcoxon signed-rank" and shifted.n == 24
    assert shifted.p_value < 1e-3
    null = paired_test(baseline + rng.normal(0, 0.02, 24), baseline)
    assert null.test_name == "Wilcoxon signed-rank" and null.p_value > 0.2


def test_paired_test_choice_follows_the_documented_rule():
    few = paired_test(np.array([0.5, 0.6, 0.7, 0.5]), np.array([0.4, 0.45, 0.6, 0.42]))
    assert few.test_name == "paired t-test" and few.n == 4 and 0.0 < few.p_value < 0.05
    # enough pairs but mostly identical outputs: fewer than MIN_WILCOXON_PAIRS nonzero differences
    b = np.linspace(0.1, 0.9, 10)
    a = b.copy()
    a[: MIN_WILCOXON_PAIRS - 1] += np.linspace(0.01, 0.05, MIN_WILCOXON_PAIRS - 1)
    assert paired_test(a, b).test_name == "paired t-test"
    a[: MIN_WILCOXON_PAIRS] = b[: MIN_WILCOXON_PAIRS] + np.linspace(0.01, 0.06, MIN_WILCOXON_PAIRS)
    assert paired_test(a, b).test_name == "Wilcoxon signed-rank"
    for none in (paired_test(b, b), paired_test(b[:1] + 0.1, b[:1]), paired_test(b[:4] + 0.1, b[:4])):
        assert none.test_name == "none" and none.p_value is None and none.statistic is None
    with pytest.raises(ValueError, match="equal length"):
        paired_test(b, b[:3])


def test_rank_biserial_on_constructed_differences():
    assert rank_biserial(np.array([0.1, 0.4, 0.2])) == 1.0
    assert rank_biserial(np.array([-0.1, -0.4])) == -1.0
    # ranks of |d| 1, 2, 3, 4: T+ = 1 + 2 + 4 = 7, T- = 3, r = (7 - 3) / 10; zeros are dropped
    assert rank_biserial(np.array([0.0, 1.0, 2.0, -3.0, 4.0, 0.0])) == pytest.approx(0.4)
    assert rank_biserial(np.array([1.0, -1.0, 2.0])) == pytest.approx(0.5)  # tied ranks 1.5: (4.5 - 1.5) / 6
    assert rank_biserial(np.zeros(3)) is None


def test_paired_test_carries_the_rank_biserial_of_method_minus_baseline():
    rng = np.random.default_rng(5)
    baseline = rng.normal(0.5, 0.1, 12)
    better = paired_test(baseline - 0.05, baseline)  # every clip lower
    assert better.test_name == "Wilcoxon signed-rank" and better.rank_biserial == -1.0
    mixed = paired_test(baseline + rng.normal(0.01, 0.02, 12), baseline)
    total = 12 * 13 / 2  # T+ + T-, and the two-sided statistic is min(T+, T-)
    assert abs(mixed.rank_biserial) == pytest.approx(1 - 2 * mixed.statistic / total)
    few = paired_test(np.array([0.5, 0.6, 0.7]), np.array([0.4, 0.8, 0.4]))  # d = 0.1, -0.2, 0.3: ranks 1, 2, 3
    assert few.test_name == "paired t-test" and few.rank_biserial == pytest.approx((1 + 3 - 2) / 6)
    assert paired_test(baseline, baseline).rank_biserial is None


def test_holm_adjusts_a_hand_checked_example_and_passes_none_through():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm_adjust([None, 0.01, 0.04, None, 0.03, 0.005])
    assert adjusted[0] is None and adjusted[3] is None  # no test: not counted in m either
    assert [adjusted[i] for i in (1, 2, 4, 5)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.4, 0.7, 0.45]) == [1.0, 1.0, 1.0]  # 3 x 0.4 capped at 1, then the running maximum
    assert holm_adjust([]) == [] and holm_adjust([None]) == [None]


def test_holm_is_monotone_and_rejects_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(6)
    alpha = 0.05
    for _ in range(50):
        p = list(rng.uniform(0, 0.1, 8) ** rng.uniform(1, 3))
        adjusted = holm_adjust(p)
        order = np.argsort(p, kind="stable")
        assert all(np.diff([adjusted[i] for i in order]) >= 0)  # the order of the raw p-values kept
        assert all(a >= q for a, q in zip(adjusted, p)) and max(adjusted) <= 1.0
        rejected = set()  # Holm (1979): reject in ascending order while p_(k) <= alpha / (m - k)
        for k, i in enumerate(order):
            if p[i] > alpha / (len(p) - k):
                break
            rejected.add(i)
        assert {i for i, a in enumerate(adjusted) if a <= alpha} == rejected
