"""Results → paper: one module per table or figure, each a pure function of the tidy metrics.

Shared here: LaTeX escaping, and (re-exported from `cinelora.stats`) the bootstrap confidence interval every
table uses. Outputs are byte-stable: fixed resampling generator, sorted rows, fixed number formats, no timestamps.
"""
from __future__ import annotations

from cinelora.stats import BOOTSTRAP_SEED, CONFIDENCE, N_RESAMPLES, MeanCI, bootstrap_mean_ci

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (names of experiments, domains, profiles)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


__all__ = ["MeanCI", "bootstrap_mean_ci", "latex_escape", "CONFIDENCE", "N_RESAMPLES", "BOOTSTRAP_SEED"]
