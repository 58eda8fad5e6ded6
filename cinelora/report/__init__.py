"""Results → paper: one module per table or figure, each a pure function of the tidy metrics.

Shared here by several outputs: LaTeX escaping and number formatting, the caption notes that keep proxy and
smoke numbers from passing for full-scale ones, the most real profile present, the figure style and saving, and
(re-exported from `cinelora.stats`) the bootstrap confidence interval every table uses. Outputs are byte-stable:
fixed resampling generator, sorted rows, fixed number formats, Agg backend, no timestamps.
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import matplotlib

from cinelora.atomic import atomic_write_bytes
from cinelora.config import PROFILES
from cinelora.stats import BOOTSTRAP_SEED, CONFIDENCE, HIERARCHICAL, N_RESAMPLES, MeanCI, bootstrap_mean_ci
from cinelora.study import PROFILE_TEXT

matplotlib.use("Agg")  # before any figure module imports pyplot: no display needed, the same bytes everywhere

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
ARROWS = {"lower": r"$\downarrow$", "higher": r"$\uparrow$"}  # a metric's better direction, in column headers
# DejaVu Sans embedded as TrueType (`pdf.fonttype` 42) and a fixed `svg.hashsalt`: rebuilds give the same bytes.
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8, "legend.fontsize": 7,
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "cinelora", "figure.dpi": 100, "savefig.dpi": 200,
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (names of experiments, domains, profiles)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def fixed(value: float, decimals: int) -> str:
    """`value` with `decimals` digits; a value that rounds to zero prints without a minus sign."""
    return f"{round(value, decimals) + 0.0:.{decimals}f}"


def format_mean_ci(ci: MeanCI, decimals: int, bold: bool = False, mark: bool = False,
                   effect: float | None = None) -> str:
    """"$0.412 \\pm 0.020$", bold and/or with ${}^{*}$, an effect size as subscript: "$0.412 \\pm 0.020^{*}_{-0.83}$";
    one clip (no interval): "$0.412$ (1 clip)"."""
    number = fixed(ci.mean, decimals)
    if ci.half_width is not None:
        number += rf" \pm {fixed(ci.half_width, decimals)}"
    text = (rf"\mathbf{{{number}}}" if bold else number) + ("^{*}" if mark else "")
    if effect is not None:
        text += f"_{{{round(effect, 2) + 0.0:+.2f}}}"
    return f"${text}$" + (" (1 clip)" if ci.half_width is None else "")


def ci_phrase(methods: set[str]) -> str:
    """How a table's bootstrap CIs were drawn, for its caption, from its cells' `MeanCI.method`s."""
    parts = [part for part, used in (
        ("one seed: BCa over resampled clips, percentile where BCa is undefined", methods & {"BCa", "percentile"}),
        ("several seeds: percentile, each resample drawing seeds, then clips, with replacement",
         HIERARCHICAL in methods)) if used]
    return "; ".join([f"{N_RESAMPLES} resamples", *parts])


def count_phrase(counts: set[int], noun: str) -> str:
    """"3 clips", "1 seed", or "2--3 clips" when cells differ."""
    low, high = min(counts), max(counts)
    return f"{low}--{high} {noun}s" if low != high else f"{low} {noun}" + ("" if low == 1 else "s")


def scale_notes(profiles: list[str]) -> str:
    """The caption sentence that keeps proxy and smoke generator numbers from passing for full-scale ones."""
    notes = [PROFILE_TEXT[p].generator for p in profiles if p != "full"]
    return " ".join(["These are not full-scale numbers.", *notes]) if notes else ""


def most_real_profile(present: Iterable[str]) -> str:
    """The most real profile among `present`: full, else proxy, else smoke."""
    present = set(present)
    return next(p for p in PROFILES if p in present)


def save_figure(fig: matplotlib.figure.Figure, pdf: Path) -> None:
    """Write `fig` to `pdf` and a PNG copy beside it, atomically, with no dates or versions in the files; close
    `fig`."""
    import matplotlib.pyplot as plt  # loaded already by the module that drew `fig`; tables never need it

    with plt.rc_context(STYLE):
        for path, fmt, metadata in ((pdf, "pdf", {"CreationDate": None, "ModDate": None, "Creator": None,
                                                  "Producer": None}),
                                    (pdf.with_suffix(".png"), "png", {"Software": None})):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, metadata=metadata)
            atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)


__all__ = ["MeanCI", "bootstrap_mean_ci", "CONFIDENCE", "N_RESAMPLES", "BOOTSTRAP_SEED", "ARROWS", "STYLE",
           "latex_escape", "fixed", "format_mean_ci", "ci_phrase", "count_phrase", "scale_notes", "most_real_profile",
           "save_figure"]
