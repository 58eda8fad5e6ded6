"""Results → paper: one module per table or figure, each a pure function of the tidy metrics.

Shared here: the bootstrap confidence interval every table uses (runs never compute CIs, so a change of
statistic never needs a GPU) and LaTeX escaping. Outputs are byte-stable: fixed resampling generator,
sorted rows, fixed number formats, no timestamps.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class MeanCI:
    """Sample mean of `n` values and its bootstrap CI; `low`/`high` are None when n == 1."""

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str  # "BCa", "percentile", or "none" (n == 1)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def bootstrap_mean_ci(values: np.ndarray) -> MeanCI:
    """Mean of `values` (1-D) with a 95% bootstrap CI from `numpy.random.default_rng(0)`.

    BCa by default; BCa is undefined for degenerate samples (e.g. all values equal), which fall back to
    the percentile interval. A fresh generator per call makes each
    interval independent of how many others were computed before it.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"bootstrap_mean_ci: expected a non-empty 1-D array, found shape {values.shape}")
    mean = float(values.mean())
    if len(values) == 1:
        return MeanCI(mean, None, None, 1, "none")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on degenerate BCa; the fallback handles it
            interval = stats.bootstrap((values,), np.mean, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                                       method=method, rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        if np.isfinite(interval.low) and np.isfinite(interval.high):
            return MeanCI(mean, float(interval.low), float(interval.high), len(values), method)
    raise ValueError(f"bootstrap_mean_ci: no finite interval for {values.tolist()}")


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (names of experiments, domains, profiles)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


__all__ = ["MeanCI", "bootstrap_mean_ci", "latex_escape", "CONFIDENCE", "N_RESAMPLES", "BOOTSTRAP_SEED"]
