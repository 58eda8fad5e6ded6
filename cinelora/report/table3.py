"""Paper Table 3, ablations: each ablation next to its parent run, on the domains the LoRA never saw.

An ablation is a generator experiment outside Table 2's methods whose config names a `parent`; its config's
`varies` lists the keys it changes, shown as parent value → ablation value (both read from the runs'
`config.resolved.yaml`). Columns: LPIPS and CLIP-SIM on clean conditioning frames, and robustness, the
per-clip change attacked − clean of the same metrics; all pooled over the held-out domains' clips, as mean ±
half the width of the 95% bootstrap CI. ${}^{*}$: differs from the parent on the same clips (a paired test,
Holm-corrected over all the table's tests); subscript: the test's rank-biserial effect size.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml

from cinelora.atomic import atomic_write_text
from cinelora.config import PROFILES
from cinelora.report import (
    ARROWS, CONFIDENCE, bootstrap_mean_ci, ci_phrase, count_phrase, format_mean_ci, latex_escape, scale_notes,
)
from cinelora.report.table2 import (
    Cell, clip_matrix, effect, holm_corrected, paired_on_clips, significant, tests_sentence,
)
from cinelora.results import KEY_COLUMNS, METRICS, read_results
from cinelora.study import METHODS, TRAIN_DOMAIN

TABLE3_METRICS = ("lpips", "clip_sim")
COLUMNS = tuple((kind, m) for kind in ("clean", "delta") for m in TABLE3_METRICS)  # (clean | delta, metric)
Configs = dict[tuple[str, str], dict]  # (profile, experiment) -> resolved config
Key = tuple[str, str, tuple[str, str]]  # (profile, experiment, column)


def read_configs(results_root: Path) -> Configs:
    """Every `results_root/<experiment>/<profile>/config.resolved.yaml`, keyed by (profile, experiment)."""
    return {(path.parent.name, path.parent.parent.name): yaml.safe_load(path.read_text())
            for path in sorted(Path(results_root).glob("*/*/config.resolved.yaml"))}


def natural_key(name: str) -> list:
    """"robust_lpips_r4" before "robust_lpips_r16": digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def ablations(configs: Configs) -> dict[tuple[str, str], str]:
    """(profile, ablation) -> parent, for generator runs outside Table 2's methods that name a parent."""
    return {key: cfg["parent"] for key, cfg in configs.items()
            if cfg.get("kind") == "generator" and cfg.get("parent") and key[1] not in METHODS}


def held_out_values(metrics: pd.DataFrame, column: tuple[str, str]) -> pd.DataFrame:
    """Rows (profile, experiment, seed, domain, clip, value) of one column on the held-out domains: the clean
    metric, or attacked − clean of the same (seed, clip)."""
    kind, metric = column
    rows = metrics[(metrics["metric"] == metric) & (metrics["domain"] != TRAIN_DOMAIN)]
    keys = ["profile", "experiment", "seed", "domain", "clip"]
    clean = rows[rows["condition"] == "clean"][[*keys, "value"]]
    if kind == "clean":
        return clean
    attacked = rows[rows["condition"] == "attacked"][[*keys, "value"]]
    both = clean.merge(attacked, on=keys, suffixes=("_clean", "_attacked"))
    return both.assign(value=both["value_attacked"] - both["value_clean"])[[*keys, "value"]]


def table3_cells(metrics: pd.DataFrame, configs: Configs) -> dict[Key, Cell]:
    """Every cell of Table 3 (ablations and their parents) keyed by (profile, experiment, column); an ablation's
    cell carries its paired test against the parent, Holm-corrected over the table's."""
    parents = ablations(configs)
    wanted = set(parents) | {(p, parent) for (p, _), parent in parents.items()}
    metrics = metrics.sort_values(list(KEY_COLUMNS), kind="stable")
    cells: dict[Key, Cell] = {}
    for column in COLUMNS:
        groups = {k: g for k, g in held_out_values(metrics, column).groupby(["profile", "experiment"], sort=True)}
        for (profile, experiment), group in groups.items():
            if (profile, experiment) not in wanted:
                continue
            parent = groups.get((profile, parents.get((profile, experiment), "")))
            test = paired_on_clips(group, parent) if parent is not None else None
            cells[profile, experiment, column] = Cell(bootstrap_mean_ci(clip_matrix(group)),
                                                      group[["domain", "clip"]].drop_duplicates().shape[0],
                                                      group["seed"].nunique(), test)
    return holm_corrected(cells)


def lookup(cfg: dict, dotted: str):
    """`cfg["a"]["b"]` for "a.b"; None when a key is missing."""
    value = cfg
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return latex_escape("--" if value is None else str(value))


def varies_text(cfg: dict, parent: dict | None) -> str:
    """"\\texttt{lora.rank} 8 $\\to$ 4, ..." for the keys the ablation varies (parent value when it ran)."""
    if not cfg.get("varies"):
        return "varies nothing: the parent's settings, run again"
    parts = []
    for key in cfg["varies"]:
        change = format_value(lookup(cfg, key))
        if parent is not None:
            change = rf"{format_value(lookup(parent, key))} $\to$ {change}"
        parts.append(rf"\texttt{{{latex_escape(key)}}} {change}")
    return "varies " + ", ".join(parts)


def _header() -> list[str]:
    labels = [f"{METRICS[m].label} {ARROWS[METRICS[m].direction]}" for _, m in COLUMNS]
    half = len(TABLE3_METRICS)
    return [rf" & \multicolumn{{{half}}}{{c}}{{clean}} & "
            rf"\multicolumn{{{half}}}{{c}}{{robustness: attacked $-$ clean}} \\",
            rf"\cmidrule(lr){{2-{1 + half}}} \cmidrule(lr){{{2 + half}-{1 + 2 * half}}}",
            " & ".join(["Run", *labels]) + r" \\"]


def _attack_phrase(configs: Configs, runs: set[tuple[str, str]]) -> str:
    eps = sorted({lookup(configs[r], "eval.attack_eps_255") for r in runs if r in configs} - {None})
    steps = sorted({lookup(configs[r], "eval.attack_steps") for r in runs if r in configs} - {None})
    if not eps:
        return "PGD on the conditioning frame"
    return (r"PGD on the conditioning frame, $L_\infty$ $\epsilon = " + ", ".join(f"{e:g}" for e in eps)
            + r"/255$ (pixel units), " + "/".join(str(s) for s in steps) + " steps")


def _caption(profiles: list[str], cells: dict[Key, Cell], configs: Configs, held_out: list[str]) -> str:
    runs = {(p, e) for p, e, _ in cells}
    text = (r"Ablations: each ablation below its parent run, with the config keys it varies (parent value $\to$ "
            "ablation value). Metrics pooled over the clips of the held-out domains"
            f" ({', '.join(latex_escape(d) for d in held_out)})"
            + rf": mean $\pm$ half the width of its {round(CONFIDENCE * 100)}\% bootstrap CI "
            f"({ci_phrase({c.ci.method for c in cells.values()})}) over "
            f"{count_phrase({c.clips for c in cells.values()}, 'clip')} $\\times$ "
            f"{count_phrase({c.seeds for c in cells.values()}, 'seed')}. Robustness: per clip, the metric with the "
            f"conditioning frame attacked ({_attack_phrase(configs, runs)}) minus the metric on the clean frame. "
            + tests_sentence([c.test for c in cells.values() if c.test is not None], "its parent")
            + f" Profiles: {', '.join(profiles)}.")
    notes = scale_notes(profiles)
    return text + (" " + notes if notes else "")


def make_table3(metrics: pd.DataFrame, configs: Configs) -> str:
    """Table 3 as a booktabs `table` fragment (label `tab:ablations`); a pure function of tidy `metrics` and the
    runs' resolved configs. Raises ValueError when no ablation has held-out results."""
    cells = table3_cells(metrics, configs)
    parents = ablations(configs)
    rows = sorted({(p, e) for p, e, _ in cells if (p, e) in parents}, key=lambda r: (PROFILES.index(r[0]), r[1]))
    if not rows:
        raise ValueError("make_table3: no ablation (a generator run outside Table 2's methods with a parent) has "
                         "held-out clean results: run its experiments/<name>/run.sh first")
    profiles = [p for p in PROFILES if any(r[0] == p for r in rows)]
    runs = {(p, e) for p, e, _ in cells}
    held_out = sorted({d for p, e, d in zip(metrics["profile"], metrics["experiment"], metrics["domain"])
                       if (p, e) in runs and d != TRAIN_DOMAIN})
    width = len(COLUMNS) + 1

    def entries(profile: str, experiment: str) -> list[str]:
        out = []
        for column in COLUMNS:
            cell = cells.get((profile, experiment, column))
            # a change is smaller than the metric itself: one more digit
            digits = METRICS[column[1]].decimals + (column[0] == "delta")
            out.append("--" if cell is None
                       else format_mean_ci(cell.ci, digits, mark=significant(cell), effect=effect(cell)))
        return out

    lines = [
        r"% Generated by `python -m cinelora report table3` from results/*/*/{metrics.csv,config.resolved.yaml}: "
        "do not edit.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_caption(profiles, cells, configs, held_out)}}}",
        r"\label{tab:ablations}",
        r"\footnotesize",
        r"\setlength{\tabcolsep}{3pt}",  # five columns of CIs with effect-size subscripts
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",  # shrunk only if wider than the page
        rf"\begin{{tabular}}{{l{'c' * len(COLUMNS)}}}",
        r"\toprule",
        *_header(),
    ]
    for profile in profiles:
        lines += [r"\midrule", rf"\multicolumn{{{width}}}{{l}}{{\emph{{profile: {profile}}}}} \\"]
        groups = sorted({parents[r] for r in rows if r[0] == profile}, key=natural_key)
        for i, parent in enumerate(groups):
            if i:
                lines.append(r"\addlinespace")
            lines.append(" & ".join([rf"\texttt{{{latex_escape(parent)}}} (parent)", *entries(profile, parent)])
                         + r" \\")
            for experiment in sorted((e for p, e in rows if p == profile and parents[p, e] == parent), key=natural_key):
                lines.append(" & ".join([rf"\quad\texttt{{{latex_escape(experiment)}}}", *entries(profile, experiment)])
                             + r" \\")
                note = varies_text(configs[profile, experiment], configs.get((profile, parent)))
                # a paragraph cell: a long list of varied keys wraps instead of widening the table
                lines.append(rf"\multicolumn{{{width}}}{{p{{0.8\textwidth}}}}{{\qquad\emph{{{note}}}}} \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def main(results_root: Path, out: Path) -> None:
    """Read `results_root/*/*/metrics.csv` and `config.resolved.yaml` and write Table 3 to `out` atomically.

    `python -m cinelora report table3` calls this with `results` and `paper/tables/table3.tex`.
    """
    text = make_table3(read_results(results_root), read_configs(results_root))
    atomic_write_text(out, text)


__all__ = ["make_table3", "table3_cells", "main", "read_configs", "ablations", "held_out_values", "varies_text",
           "natural_key", "lookup", "TABLE3_METRICS", "COLUMNS"]
