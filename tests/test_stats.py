"""Bootstrap confidence intervals (coverage, clusters over seeds) and the paired test's choice and power."""
from __future__ import annotations

import numpy as np
import pytest

from cinelora.stats import MIN_WILCOXON_PAIRS, bootstrap_mean_ci, paired_test


def test_bootstrap_ci_covers_the_true_mean_at_about_its_nominal_rate():
    rng = np.random.default_rng(0)
    true_mean, n_clips, repetitions = 2.0, 30, 200  # gamma(shape 2, scale 1): skewed, like per-clip metrics
    covered = 0
    for _ in range(repetitions):
        ci = bootstrap_mean_ci(rng.gamma(2.0, 1.0, n_clips), n_resamples=999)
        covered += ci.low <= true_mean <= ci.high
    assert 0.88 <= covered / repetitions <= 0.99


def test_cluster_bootstrap_over_clips_covers_when_seeds_share_clip_effects():
    # value = clip difficulty + seed noise: the seeds of one clip are correlated, so the clip is the unit
    rng = np.random.default_rng(1)
    n_seeds, n_clips, repetitions = 3, 20, 100
    covered_cluster = covered_flat = 0
    for _ in range(repetitions):
        values = rng.normal(0.0, 1.0, n_clips) + rng.normal(0.0, 0.2, (n_seeds, n_clips))
        cluster = bootstrap_mean_ci(values, n_resamples=999)
        flat = bootstrap_mean_ci(values.ravel(), n_resamples=999)  # pretends 60 independent values
        assert cluster.n == n_seeds * n_clips and cluster.mean == pytest.approx(values.mean())
        covered_cluster += cluster.low <= 0.0 <= cluster.high
        covered_flat += flat.low <= 0.0 <= flat.high
    assert 0.85 <= covered_cluster / repetitions <= 1.0
    assert covered_flat < covered_cluster  # too narrow without the clip structure


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
