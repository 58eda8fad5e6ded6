"""Statistics of per-clip metrics: bootstrap confidence intervals of means, paired tests between methods with
their effect sizes, and Holm's correction over a table's tests.

Runs never call these (HOUSE_STYLE 8): the report does, so a change of statistic never needs a GPU. Every
resampling uses a fresh `numpy.random.default_rng(BOOTSTRAP_SEED)`, so an interval does not depend on how many
others were computed before it, and tables rebuild byte for byte.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
# The exact two-sided Wilcoxon signed-rank p-value cannot fall below 2 / 2**n: 0.0625 at n = 5, 0.031 at n = 6.
MIN_WILCOXON_PAIRS = 6
TEST_NAMES = ("Wilcoxon signed-rank", "paired t-test", "none")
HIERARCHICAL = "hierarchical percentile"  # `MeanCI.method` of the seeds-then-clips bootstrap
# Resamples per chunk of the hierarchical bootstrap: a chunk's [rows, n_clips] arrays (~1 MiB) stay in the CPU cache.
_CHUNK_VALUES = 2**17


@dataclass(frozen=True)
class MeanCI:
    """Sample mean of `n` values and its bootstrap CI; `low`/`high` are None when there is one clip."""

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str  # "BCa", "percentile", HIERARCHICAL (several seeds), or "none" (one clip)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def _hierarchical_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` two-stage resamples of `values` [n_seeds, n_clips]: seeds with replacement, then
    clips with replacement, one clip draw shared by the drawn seeds."""
    n_seeds, n_clips = values.shape
    drawn = np.sort(rng.integers(0, n_seeds, (n_resamples, n_seeds)), axis=1)  # a seed set: order is irrelevant
    # each distinct seed set's values averaged over its seeds, once (2-3 seeds give 3-10 sets), then indexed
    _, first, which = np.unique(np.ravel_multi_index(drawn.T, (n_seeds,) * n_seeds), return_index=True,
                                return_inverse=True)
    pooled = values[drawn[first]].mean(axis=1).ravel()  # [n_sets * n_clips]
    offsets = (which * n_clips)[:, None]
    means = np.empty(n_resamples)
    rows = max(1, _CHUNK_VALUES // n_clips)
    for start in range(0, n_resamples, rows):
        chunk = offsets[start:start + rows]
        clips = rng.integers(0, n_clips, (len(chunk), n_clips))
        clips += chunk  # each resample's clips, indexed into its seed set's row of `pooled`
        means[start:start + rows] = pooled[clips].mean(axis=1)
    return means


def bootstrap_mean_ci(values: np.ndarray, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                      seed: int = BOOTSTRAP_SEED) -> MeanCI:
    """Mean of per-clip values with a bootstrap CI.

    `values`: [n_clips], or [n_seeds, n_clips] with the same clips for every seed (one seed row is [n_clips]).
    - [n_clips]: BCa (scipy.stats.bootstrap; Efron 1987); BCa is undefined for degenerate samples (e.g. all
      values equal), which fall back to the percentile interval.
    - several seeds: a hierarchical bootstrap, percentile interval (method `HIERARCHICAL`). Each resample draws
      seeds with replacement, then clips with replacement within the drawn seeds. The clips are crossed with the
      seeds (one clip draw for all drawn seeds): a clip is as hard under every seed, and drawing clips anew per
      seed would count its values as different clips, shrinking the clip variance by the number of seeds. BCa is
      not defined for this two-stage scheme (its jackknife acceleration assumes one level of independent units).
      With 2-3 seeds the seed stage sees only a handful of distinct seed sets and its variance is biased low by
      (n_seeds - 1) / n_seeds.
    `n` counts values (seeds × clips); one clip gives no interval.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2) or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"bootstrap_mean_ci: expected finite values [n_clips] or [n_seeds, n_clips], "
                         f"found shape {values.shape}")
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    mean = float(values.mean())
    if values.shape[-1] == 1:
        return MeanCI(mean, None, None, values.size, "none")
    if values.ndim == 2:
        means = _hierarchical_means(values, n_resamples, np.random.default_rng(seed))
        low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        return MeanCI(mean, float(low), float(high), values.size, HIERARCHICAL)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on degenerate BCa; the fallback handles it
            interval = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                       method=method, rng=np.random.default_rng(seed)).confidence_interval
        if np.isfinite(interval.low) and np.isfinite(interval.high):
            return MeanCI(mean, float(interval.low), float(interval.high), values.size, method)
    raise ValueError(f"bootstrap_mean_ci: no finite interval for {values.tolist()}")


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired test of method vs baseline on the same clips; `test_name` is for table captions.

    `rank_biserial` is the effect size, `rank_biserial(a - b)`. `statistic`, `p_value` and `rank_biserial` are None
    when no test applies (`test_name == "none"`); `n` counts the pairs given.
    """

    statistic: float | None
    p_value: float | None
    test_name: str
    n: int
    rank_biserial: float | None


def rank_biserial(d: np.ndarray) -> float | None:
    """Matched-pairs rank-biserial correlation of paired differences `d` (Kerby 2014): (T+ - T-) / (T+ + T-),
    T+ and T- the sums of the ranks of |d| (ties averaged) over the positive and the negative d, zeros dropped as
    the Wilcoxon test drops them. In [-1, 1]: +1 when every nonzero d > 0, -1 when every one is < 0. None when
    all d are zero.

    The one effect size of every paired comparison, whichever test ran: one scale across a table's cells; the
    Wilcoxon test's own effect size (its statistic, rescaled), robust to the skewed per-clip metrics. Cohen's d_z
    would be undefined for constant differences and erratic on the 2-5 pairs where the t-test runs.
    """
    d = np.asarray(d, dtype=np.float64)
    d = d[d != 0]
    if not len(d):
        return None
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def paired_test(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Two-sided paired test of a[i] vs b[i] (the same clip, and seed, under two methods), with the rank-biserial
    correlation of a - b as its effect size (> 0: a is larger).

    Rule, on the differences d = a - b:
    - ≥ MIN_WILCOXON_PAIRS nonzero d: Wilcoxon signed-rank test (zeros dropped, Wilcoxon's convention; scipy's
      exact null distribution up to 50 pairs, exhaustive permutations up to 13 pairs with ties, normal above);
    - fewer nonzero d but ≥ 2 pairs whose d are not all equal: paired t-test, since below 6 pairs no Wilcoxon
      p-value can reach 0.05 (it assumes roughly normal differences, which so few pairs cannot check);
    - otherwise (one pair, or all differences equal up to round-off, e.g. identical outputs): no test.
    Average seeds per clip first when clips repeat over seeds, or the pairs are not independent.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"paired_test: expected two finite 1-D arrays of equal length, found {a.shape} and {b.shape}")
    d = a - b
    if np.count_nonzero(d) >= MIN_WILCOXON_PAIRS:
        result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        return PairedTest(float(result.statistic), float(result.pvalue), TEST_NAMES[0], len(d), rank_biserial(d))
    # differences equal up to round-off (a constant shift added to floats) have no variance to test against
    if len(d) >= 2 and np.ptp(d) > 1e-9 * np.abs(d).max():
        result = stats.ttest_rel(a, b, alternative="two-sided")
        return PairedTest(float(result.statistic), float(result.pvalue), TEST_NAMES[1], len(d), rank_biserial(d))
    return PairedTest(None, None, TEST_NAMES[2], len(d), None)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the order given: the i-th smallest of the m p-values times
    (m - i + 1), made monotone by a running maximum and capped at 1, so that adjusted p < alpha is Holm's step-down
    rejection at family-wise level alpha. None (no test) stays None and does not count in m."""
    order = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    adjusted, running = list(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


__all__ = ["CONFIDENCE", "N_RESAMPLES", "BOOTSTRAP_SEED", "MIN_WILCOXON_PAIRS", "TEST_NAMES", "HIERARCHICAL",
           "MeanCI", "bootstrap_mean_ci", "PairedTest", "rank_biserial", "paired_test", "holm_adjust"]
