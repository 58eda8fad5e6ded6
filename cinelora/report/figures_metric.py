"""Paper figure, metric vs attack ε: 2AFC score of LPIPS and R-LPIPS as the L∞ attack on the reference grows.

One panel per 2AFC validation set; ε = 0 is the clean score; PGD solid, FGSM dashed. The figure shows
the most real profile in the results (full, else proxy, else smoke) and says which in its title. Output is
byte-stable: Agg backend, DejaVu Sans embedded as TrueType (`pdf.fonttype` 42), no dates or software
versions in the file metadata, fixed `svg.hashsalt`; the PNG copy sits next to the PDF.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402

from cinelora.config import PROFILES  # noqa: E402
from cinelora.report.table1 import ATTACKS, METRIC_ROWS, set_sort_key, two_afc_rows  # noqa: E402
from cinelora.results import atomic_write_bytes, read_results  # noqa: E402

STYLE = {
    "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8, "legend.fontsize": 7,
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "cinelora", "figure.dpi": 100, "savefig.dpi": 200,
}
COLOURS = {"2afc_lpips": "#1f77b4", "2afc_rlpips": "#d62728"}
LINES = {"pgd": ("-", "o"), "fgsm": ("--", "s")}
PROFILE_TITLES = {"full": "BAPPS, ImageNet AlexNet trunk", "proxy": "proxy: procedural 2AFC, random trunk",
                  "smoke": "smoke: pipeline check, not evidence"}


def figure_profile(rows: pd.DataFrame) -> str:
    """The most real profile present: full, else proxy, else smoke."""
    return next(p for p in PROFILES if (rows["profile"] == p).any())


def make_metric_vs_eps(metrics: pd.DataFrame) -> plt.Figure:
    """The figure for the chosen profile; a pure function of `metrics`. Curves are means over seeds."""
    rows = two_afc_rows(metrics)
    profile = figure_profile(rows)
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
        fig.suptitle(f"{experiments[0]}, {PROFILE_TITLES.get(profile, profile)}", fontsize=8)
        fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, pdf: Path) -> None:
    """Write `fig` to `pdf` and a PNG copy beside it, atomically, with no dates or versions in the files."""
    with plt.rc_context(STYLE):
        for path, fmt, metadata in ((pdf, "pdf", {"CreationDate": None, "ModDate": None, "Creator": None,
                                                  "Producer": None}),
                                    (pdf.with_suffix(".png"), "png", {"Software": None})):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, metadata=metadata)
            atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)


def main(results_root: Path, out: Path) -> None:
    """Read every `results_root/*/*/metrics.csv` and write the figure to `out` (PDF) and its PNG copy.

    `python -m cinelora report metric-vs-eps` calls this with `results` and `paper/figures/metric_vs_eps.pdf`.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(make_metric_vs_eps(read_results(results_root)), out)


__all__ = ["make_metric_vs_eps", "save_figure", "main", "figure_profile"]
