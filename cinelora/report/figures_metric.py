"""Paper figure, metric vs attack ε: 2AFC score of LPIPS and R-LPIPS as the L∞ attack on the reference grows.

One panel per 2AFC validation set; ε = 0 is the clean score; PGD solid, FGSM dashed. The figure shows
the most real profile in the results (full, else proxy, else smoke) and says which in its title. Output goes
through `cinelora.report.save_figure` (byte-stable; the PNG copy sits next to the PDF).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from cinelora.report import STYLE, most_real_profile, save_figure
from cinelora.report.table1 import ATTACKS, METRIC_ROWS, set_sort_key, two_afc_rows
from cinelora.results import read_results
from cinelora.study import PROFILE_TEXT

COLOURS = {"2afc_lpips": "#1f77b4", "2afc_rlpips": "#d62728"}
LINES = {"pgd": ("-", "o"), "fgsm": ("--", "s")}


def make_metric_vs_eps(metrics: pd.DataFrame) -> plt.Figure:
    """The figure for the chosen profile; a pure function of `metrics`. Curves are means over seeds."""
    rows = two_afc_rows(metrics)
    profile = most_real_profile(rows["profile"])
    rows = rows[rows["profile"] == profile]
    experiments = sorted(rows["experiment"].unique())
    if len(experiments) != 1:
        raise ValueError(f"metric-vs-eps figure: profile {profile} has 2AFC rows from {experiments}; "
                         "expected one experiment")
    means = rows.groupby(["domain", "metric", "attack", "eps"], sort=True)["value"].mean() * 100
    sets = sorted(rows["domain"].unique(), key=set_sort_key)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sets), figsize=(2.4 * len(sets) + 0.4, 2.4), sharey=True, squeeze=False)
        for ax, name in zip(axes[0], sets):
            for metric, label in METRIC_ROWS.items():
                clean = means.get((name, metric, "clean", 0.0))
                for attack, attack_label in ATTACKS.items():
                    if (name, metric, attack) not in means.index.droplevel("eps"):
                        continue
                    curve = means.loc[(name, metric, attack)]
                    eps = ([0.0] if clean is not None else []) + list(curve.index)
                    score = ([clean] if clean is not None else []) + list(curve.values)
                    linestyle, marker = LINES[attack]
                    ax.plot(eps, score, linestyle=linestyle, marker=marker, markersize=3, linewidth=1,
                            color=COLOURS[metric], label=f"{label}, {attack_label}")
            ax.set_title(name)
            ax.set_xlabel(r"$\epsilon \cdot 255$ ($L_\infty$, pixel units)")
            ax.grid(True, linewidth=0.3)
        axes[0][0].set_ylabel("2AFC score (%)")
        axes[0][-1].legend(loc="upper right", frameon=False)
        fig.suptitle(f"{experiments[0]}, {PROFILE_TEXT[profile].metric_title}", fontsize=8)
        fig.tight_layout()
    return fig


def main(results_root: Path, out: Path) -> None:
    """Read every `results_root/*/*/metrics.csv` and write the figure to `out` (PDF) and its PNG copy.

    `python -m cinelora report metric-vs-eps` calls this with `results` and `paper/figures/metric_vs_eps.pdf`.
    """
    save_figure(make_metric_vs_eps(read_results(results_root)), out)


__all__ = ["make_metric_vs_eps", "main"]
