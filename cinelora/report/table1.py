"""Paper Table 1, metric robustness: 2AFC score of LPIPS vs R-LPIPS, clean and with the reference attacked.

Rows: per profile (full, proxy, smoke) and 2AFC validation set, one row for LPIPS (naturally trained heads,
metric `2afc_lpips`) and one for R-LPIPS (adversarially trained heads, `2afc_rlpips`). Columns: clean, then
FGSM and PGD at each L∞ radius ε found in the results (condition `<attack>_eps<ε>`, ε in pixel units ×255).
Cells are 2AFC scores in percent: the mean over seeds, ± half the width of its 95% bootstrap CI when
there are several; bold marks the higher score of each (set, column) pair.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cinelora.atomic import atomic_write_text
from cinelora.config import PROFILES
from cinelora.report import CONFIDENCE, bootstrap_mean_ci, latex_escape
from cinelora.results import ATTACK_CONDITION, KEY_COLUMNS, read_results
from cinelora.study import METRIC_EXPERIMENT, PROFILE_TEXT

METRIC_ROWS = {"2afc_lpips": "LPIPS", "2afc_rlpips": "R-LPIPS"}  # row order
ATTACKS = {"fgsm": "FGSM", "pgd": "PGD"}
# BAPPS's own order of its 2AFC validation sets; other sets follow alphabetically.
SET_ORDER = ("traditional", "cnn", "mix", "superres", "deblur", "color", "frameinterp")
Column = tuple[str, float]  # ("clean", 0.0) or (attack, ε in pixel units x255)


def parse_condition(condition: str) -> Column:
    """"clean" → ("clean", 0.0); "pgd_eps4" → ("pgd", 4.0)."""
    if condition == "clean":
        return ("clean", 0.0)
    if not ATTACK_CONDITION.fullmatch(condition):
        raise ValueError(f"table1: condition {condition!r} is neither 'clean' nor '<fgsm|pgd>_eps<ε>'")
    attack, eps = condition.split("_eps")
    return (attack, float(eps))


def set_sort_key(name: str) -> tuple[int, str]:
    return (SET_ORDER.index(name) if name in SET_ORDER else len(SET_ORDER), name)


def two_afc_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The 2AFC rows of `metrics`, sorted, with `attack` and `eps` (pixel units ×255) parsed from `condition`."""
    rows = metrics[metrics["metric"].isin(list(METRIC_ROWS))].sort_values(list(KEY_COLUMNS), kind="stable")
    if rows.empty:
        raise ValueError(f"table1: no rows of metrics {list(METRIC_ROWS)}: run experiments/{METRIC_EXPERIMENT}/run.sh "
                         "first")
    parsed = [parse_condition(c) for c in rows["condition"]]
    return rows.assign(attack=[a for a, _ in parsed], eps=[e for _, e in parsed]).reset_index(drop=True)


def _format(values: pd.Series, bold: bool) -> str:
    ci = bootstrap_mean_ci(values.to_numpy() * 100)
    number = f"{ci.mean:.1f}" if ci.n == 1 else rf"{ci.mean:.1f} \pm {ci.half_width:.1f}"
    return rf"$\mathbf{{{number}}}$" if bold else f"${number}$"


def _header(columns: list[Column]) -> list[str]:
    spans, rules, start = [r"\multicolumn{1}{c}{Clean}"], [r"\cmidrule(lr){3-3}"], 4
    for attack, label in ATTACKS.items():
        width = sum(1 for a, _ in columns if a == attack)
        if width:
            spans.append(rf"\multicolumn{{{width}}}{{c}}{{{label}, $\epsilon \cdot 255$}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
    epsilons = ["" if a == "clean" else f"{e:g}" for a, e in columns]
    return [" & ".join(["", "", *spans]) + r" \\", " ".join(rules), " & ".join(["Set", "Metric", *epsilons]) + r" \\"]


def _caption(profiles: list[str], seeds: set[int]) -> str:
    count = f"{min(seeds)}--{max(seeds)}" if len(seeds) > 1 else f"{min(seeds)}"
    text = (r"Metric robustness: 2AFC score (\%, higher is better) of LPIPS (linear heads trained naturally) and "
            r"R-LPIPS (the same heads trained on PGD-attacked triplets) on each 2AFC validation set, clean and "
            r"with the reference patch attacked by FGSM (one full-$\epsilon$ step) or PGD, $L_\infty$, maximising "
            r"the ranking error. $\epsilon$ is in pixel units of $[0, 1]$ images, shown $\times 255$ "
            r"($\epsilon \cdot 255 = 4$ is $4/255$, i.e.\ $8/255$ in the metric's $[-1, 1]$ input range). "
            rf"Each cell: mean over seeds ({count} per profile)"
            + (rf", $\pm$ half the width of its {round(CONFIDENCE * 100)}\% bootstrap CI where there are several"
               if max(seeds) > 1 else "")
            + rf"; bold: the higher score of the pair. Profiles: {', '.join(profiles)}.")
    if any(p != "full" for p in profiles):
        text += " These are not full-scale numbers."
    return " ".join([text, *(PROFILE_TEXT[p].metric for p in profiles)])


def make_table1(metrics: pd.DataFrame) -> str:
    """Table 1 as a booktabs `table` fragment (label `tab:metric-robustness`); a pure function of `metrics`
    (columns of `results.METRIC_COLUMNS`). Raises ValueError when it holds no 2AFC rows."""
    rows = two_afc_rows(metrics)
    columns = sorted({(a, e) for a, e in zip(rows["attack"], rows["eps"])},
                     key=lambda c: (0 if c[0] == "clean" else 1 + list(ATTACKS).index(c[0]), c[1]))
    groups = {key: group["value"] for key, group in rows.groupby(["profile", "experiment", "domain", "metric",
                                                                    "attack", "eps"], sort=True)}
    sections = sorted({(p, e) for p, e, *_ in groups}, key=lambda s: (PROFILES.index(s[0]), s[1]))
    profiles = [p for p in PROFILES if any(s[0] == p for s in sections)]
    seeds = {int(rows.loc[rows["profile"] == p, "seed"].nunique()) for p in profiles}

    lines = [
        r"% Generated by `python -m cinelora report table1` from results/*/*/metrics.csv: do not edit.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_caption(profiles, seeds)}}}",
        r"\label{tab:metric-robustness}",
        r"\small",
        rf"\begin{{tabular}}{{ll{'c' * len(columns)}}}",
        r"\toprule",
        *_header(columns),
    ]
    for profile, experiment in sections:
        lines += [r"\midrule", rf"\multicolumn{{{len(columns) + 2}}}{{l}}{{\emph{{profile: {profile}}} "
                               rf"(\texttt{{{latex_escape(experiment)}}})}} \\"]
        names = sorted({d for p, e, d, *_ in groups if (p, e) == (profile, experiment)}, key=set_sort_key)
        for name in names:
            cells = {(m, c): groups.get((profile, experiment, name, m, *c)) for m in METRIC_ROWS for c in columns}
            means = {k: round(v.mean() * 100, 1) for k, v in cells.items() if v is not None}
            for i, (metric, label) in enumerate(METRIC_ROWS.items()):
                entries = []
                for column in columns:
                    values = cells[metric, column]
                    other = means.get((next(m for m in METRIC_ROWS if m != metric), column))
                    bold = values is not None and other is not None and means[metric, column] > other
                    entries.append("--" if values is None else _format(values, bold))
                first = latex_escape(name) if i == 0 else ""
                lines.append(" & ".join([first, label, *entries]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def main(results_root: Path, out: Path) -> None:
    """Read every `results_root/*/*/metrics.csv` and write Table 1 to `out` atomically.

    `python -m cinelora report table1` calls this with `results` and `paper/tables/table1.tex`.
    """
    text = make_table1(read_results(results_root))
    atomic_write_text(out, text)


__all__ = ["make_table1", "main", "parse_condition", "two_afc_rows", "set_sort_key", "METRIC_ROWS", "SET_ORDER"]
