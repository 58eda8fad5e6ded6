"""Paper Table 2, cross-domain generalization: methods × (domain, metric) on clean conditions.

Each cell is the mean over (clip, seed) values with ± half the width of its 95% bootstrap CI; the best
mean of each column within a profile is bold. Rows are grouped by profile (full, proxy, smoke) and the
caption says which profiles the numbers come from, so smoke or proxy numbers never pass for full ones.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cinelora.config import PROFILES
from cinelora.report import CONFIDENCE, N_RESAMPLES, MeanCI, bootstrap_mean_ci, latex_escape
from cinelora.results import KEY_COLUMNS, METRICS, atomic_write_text, read_results

TABLE2_METRICS = ("lpips",)  # column order; a metric appears when it is in the results
CONDITION = "clean"
_ARROWS = {"lower": r"$\downarrow$", "higher": r"$\uparrow$"}
_PROFILE_NOTES = {
    "proxy": "Proxy: a small Wan pre-trained by this project on its procedural world and scored by "
             "evaluators trained there; proxy-scale numbers, not Wan2.1-14B ones.",
    "smoke": "Smoke: random-weight tiny models; a pipeline check only, not evidence.",
}

Row = tuple[str, str]  # (profile, experiment)
Column = tuple[str, str]  # (domain, metric)


@dataclass(frozen=True)
class Cell:
    """One table cell: the mean and CI of its values, and how many clips and seeds they come from."""

    ci: MeanCI
    clips: int
    seeds: int


def _cells(clean: pd.DataFrame) -> dict[tuple[Row, Column], Cell]:
    cells = {}
    for (profile, experiment, domain, metric), group in clean.groupby(
            ["profile", "experiment", "domain", "metric"], sort=True):
        cells[(profile, experiment), (domain, metric)] = Cell(
            bootstrap_mean_ci(group["value"].to_numpy()), group["clip"].nunique(), group["seed"].nunique())
    return cells


def _best_rows(cells: dict[tuple[Row, Column], Cell], rows: list[Row], columns: list[Column]) -> set[tuple[Row, Column]]:
    """(row, column) pairs holding the best displayed mean of their column within their profile."""
    best = set()
    for profile in {p for p, _ in rows}:
        for column in columns:
            metric = METRICS[column[1]]
            shown = {row: round(cells[row, column].ci.mean, metric.decimals)
                     for row in rows if row[0] == profile and (row, column) in cells}
            if len(shown) < 2:  # a lone entry is not "best" of anything
                continue
            target = (min if metric.direction == "lower" else max)(shown.values())
            best |= {(row, column) for row, mean in shown.items() if mean == target}
    return best


def _format_cell(cell: Cell | None, metric: str, bold: bool) -> str:
    if cell is None:
        return "--"
    digits = METRICS[metric].decimals
    if cell.ci.n == 1:
        number = f"{cell.ci.mean:.{digits}f}"
        return (rf"$\mathbf{{{number}}}$" if bold else f"${number}$") + " (n=1)"
    number = rf"{cell.ci.mean:.{digits}f} \pm {cell.ci.half_width:.{digits}f}"
    return rf"$\mathbf{{{number}}}$" if bold else f"${number}$"


def _header(columns: list[Column]) -> list[str]:
    domains = sorted({d for d, _ in columns})
    spans, rules, start = [], [], 2
    for domain in domains:
        width = sum(1 for d, _ in columns if d == domain)
        spans.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(domain)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    labels = [f"{METRICS[m].label} {_ARROWS[METRICS[m].direction]}" for _, m in columns]
    return [" & ".join(["", *spans]) + r" \\", " ".join(rules), " & ".join(["Method", *labels]) + r" \\"]


def _count(counts: set[int], noun: str) -> str:
    """"3 clips", "1 seed", or "2--3 clips" when cells differ."""
    if len(counts) > 1:
        return f"{min(counts)}--{max(counts)} {noun}s"
    return f"{min(counts)} {noun}" + ("" if min(counts) == 1 else "s")


def _caption(profiles: list[str], cells: dict[tuple[Row, Column], Cell]) -> str:
    clips = _count({c.clips for c in cells.values()}, "clip")
    seeds = _count({c.seeds for c in cells.values()}, "seed")
    values = _count({c.ci.n for c in cells.values()}, "value")
    text = (rf"Cross-domain generalization ({CONDITION} conditioning frames). Each cell: mean $\pm$ half the "
            rf"width of its {round(CONFIDENCE * 100)}\% bootstrap CI (BCa, {N_RESAMPLES} resamples, percentile where BCa "
            rf"is undefined) over {clips} $\times$ {seeds} ({values} per cell); "
            r"$\downarrow$/$\uparrow$: lower/higher is better; bold: best mean of its column within a "
            rf"profile. Profiles: {', '.join(profiles)}.")
    notes = [_PROFILE_NOTES[p] for p in profiles if p in _PROFILE_NOTES]
    if notes:
        text += " These are not full-scale numbers. " + " ".join(notes)
    return text


def make_table2(metrics: pd.DataFrame, metric_names: Sequence[str] = TABLE2_METRICS) -> str:
    """Table 2 as a booktabs `table` fragment (label `tab:cross-domain`); a pure function of `metrics`.

    `metrics` has the columns of `results.METRIC_COLUMNS`; only `condition == "clean"` rows of
    `metric_names` are used. Raises ValueError when none are present.
    """
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise ValueError(f"make_table2: metrics {unknown} are not in results.METRICS")
    clean = metrics[(metrics["condition"] == CONDITION) & metrics["metric"].isin(list(metric_names))]
    if clean.empty:
        raise ValueError(f"make_table2: no {CONDITION} rows for metrics {list(metric_names)}")
    # Sorting first makes each cell's bootstrap sample (and so every byte) independent of row order.
    cells = _cells(clean.sort_values(list(KEY_COLUMNS), kind="stable"))
    rows = sorted({row for row, _ in cells}, key=lambda r: (PROFILES.index(r[0]), r[1]))
    columns = sorted({column for _, column in cells}, key=lambda c: (c[0], list(metric_names).index(c[1])))
    bold = _best_rows(cells, rows, columns)
    profiles = [p for p in PROFILES if any(r[0] == p for r in rows)]

    lines = [
        r"% Generated by `python -m cinelora report table2` from results/*/*/metrics.csv: do not edit.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_caption(profiles, cells)}}}",
        r"\label{tab:cross-domain}",
        r"\small",
        rf"\begin{{tabular}}{{l{'c' * len(columns)}}}",
        r"\toprule",
        *_header(columns),
    ]
    for profile in profiles:
        lines += [r"\midrule", rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\emph{{profile: {profile}}}}} \\"]
        for row in (r for r in rows if r[0] == profile):
            entries = [_format_cell(cells.get((row, c)), c[1], (row, c) in bold) for c in columns]
            lines.append(" & ".join([rf"\texttt{{{latex_escape(row[1])}}}", *entries]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def main(results_root: Path, out: Path) -> None:
    """Read every `results_root/*/*/metrics.csv` and write Table 2 to `out` atomically.

    `python -m cinelora report table2` calls this with `results` and `paper/tables/table2.tex`.
    """
    text = make_table2(read_results(results_root))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)


__all__ = ["make_table2", "main", "TABLE2_METRICS"]
