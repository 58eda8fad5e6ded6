"""Statistics of per-clip metrics: bootstrap confidence intervals of means and paired tests between methods.

Runs never call these (HOUSE_STYLE 8): the report does, so a change of statistic never needs a GPU. Every
resampling uses a fresh `numpy.random.default_rng(BOOTSTRAP_SEED)`, so an interval does not depend on how many
others were computed before it, and tables rebuild byte for byte.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
# The exact two-sided Wilcoxon signed-rank p-value cannot fall below 2 / 2**n: 0.0625 at n = 5, 0.031 at n = 6.
MIN_WILCOXON_PAIRS = 6
TEST_NAMES = ("Wilcoxon signed-rank", "paired t-test", "none")


@dataclass(frozen=True)
class MeanCI:
    """Sample mean of `n` values and its bootstrap CI; `low`/`high` are None when there is one clip."""

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str  # "BCa", "percentile", or "none" (one clip)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def _mean_over_seeds_and_clips(*rows: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorised statistic for scipy: one row of clip values per seed → the mean over seeds and clips."""
    return np.mean([np.mean(row, axis=axis) for row in rows], axis=0)


def bootstrap_mean_ci(values: np.ndarray, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                      seed: int = BOOTSTRAP_SEED) -> MeanCI:
    """Mean of per-clip values with a bootstrap CI (scipy.stats.bootstrap, BCa; Efron 1987).

    `values`: [n_clips], or [n_seeds, n_clips] with the same clips for every seed. With several seeds the clip is
    the resampling unit (a cluster bootstrap: a resample draws clips and keeps all seeds of each), since values of
    one clip under different seeds are correlated; seeds are not resampled, as 2-3 seeds give only a handful of
    distinct resamples. BCa is undefined for degenerate samples (e.g. all values equal), which fall back to the
    percentile interval. `n` counts values (seeds × clips); one clip gives no interval.
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
    if values.ndim == 1:
        data, statistic, paired = (values,), np.mean, False
    else:
        data, statistic, paired = tuple(values), _mean_over_seeds_and_clips, True
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on degenerate BCa; the fallback handles it
            interval = stats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=confidence,
                                       method=method, paired=paired,
                                       rng=np.random.default_rng(seed)).confidence_interval
        if np.isfinite(interval.low) and np.isfinite(interval.high):
            return MeanCI(mean, float(interval.low), float(interval.high), values.size, method)
    raise ValueError(f"bootstrap_mean_ci: no finite interval for {values.tolist()}")


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired test of method vs baseline on the same clips; `test_name` is for table captions.

    `statistic` and `p_value` are None when no test applies (`test_name == "none"`); `n` counts the pairs given.
    """

    statistic: float | None
    p_value: float | None
    test_name: str
    n: int


def paired_test(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Two-sided paired test of a[i] vs b[i] (the same clip, and seed, under two methods).

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
        return PairedTest(float(result.statistic), float(result.pvalue), TEST_NAMES[0], len(d))
    # differences equal up to round-off (a constant shift added to floats) have no variance to test against
    if len(d) >= 2 and np.ptp(d) > 1e-9 * np.abs(d).max():
        result = stats.ttest_rel(a, b, alternative="two-sided")
        return PairedTest(float(result.statistic), float(result.pvalue), TEST_NAMES[1], len(d))
    return PairedTest(None, None, TEST_NAMES[2], len(d))


__all__ = ["CONFIDENCE", "N_RESAMPLES", "BOOTSTRAP_SEED", "MIN_WILCOXON_PAIRS", "TEST_NAMES", "MeanCI",
           "bootstrap_mean_ci", "PairedTest", "paired_test"]
