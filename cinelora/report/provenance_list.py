"""`make provenance`: for every number in paper/, the results file it came from, its run's git sha and config hash.

One tab-separated line per (output, item, results file): the item names a table cell (profile/domain/experiment/
metric for Table 2), a Table 4 row, a figure's run or sample, or a `numbers.tex` macro. The git sha, its state
(clean or dirty working tree when the run ran) and the config hash come from the `provenance.json` of the run
that wrote the file (`results/bench/provenance_<label>.json` for bench files, which have no experiment config).
A run without `provenance.json` is unfinished, and says so.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cinelora.atomic import atomic_write_text
from cinelora.report import figures, most_real_profile, numbers, table2, table3, table4
from cinelora.report.main_comparison import main_comparison
from cinelora.report.table1 import METRIC_ROWS, two_afc_rows
from cinelora.results import read_results
from cinelora.rundir import run_folder
from cinelora.study import BASELINE, MAIN

COLUMNS = ("output", "item", "file", "git_sha", "git_state", "config_sha256")
Entry = tuple[str, str, Path]  # (output, item, results file)


def _run_seeds(metrics: pd.DataFrame) -> dict[tuple[str, str], list[int]]:
    """(experiment, profile) -> the seeds whose runs `metrics` holds."""
    return {key: sorted(int(k) for k in seeds) for key, seeds in
            metrics.groupby(["experiment", "profile"])["seed"].unique().items()}


def _metrics_files(results_root: Path, seeds: dict[tuple[str, str], list[int]], experiment: str,
                   profile: str) -> list[Path]:
    """The metrics.csv of every seed's run of `experiment` at `profile`."""
    return [run_folder(results_root, experiment, profile, k) / "metrics.csv"
            for k in seeds.get((experiment, profile), [0])]


def table_entries(metrics: pd.DataFrame, configs: table3.Configs, compute: table4.ComputeInputs,
                  results_root: Path) -> list[Entry]:
    """Every cell of Tables 1-3 and every row of Table 4, with the files it reads."""
    entries: list[Entry] = []
    seeds = _run_seeds(metrics)

    def files(experiment: str, profile: str) -> list[Path]:
        return _metrics_files(results_root, seeds, experiment, profile)

    if metrics["metric"].isin(list(METRIC_ROWS)).any():
        keys = ["profile", "experiment", "domain", "metric", "condition"]
        for (p, e, d, m, c), _ in two_afc_rows(metrics).groupby(keys):
            entries += [("tables/table1.tex", f"{p}/{e}/{d}/{m}/{c}", f) for f in files(e, p)]
    cells = table2.table2_cells(metrics)
    for (p, d, e, m), cell in cells.items():
        entries += [("tables/table2.tex", f"{p}/{d}/{e}/{m}", f) for f in files(e, p)]
        if cell.test is not None:
            entries += [("tables/table2.tex", f"{p}/{d}/{e}/{m}", f) for f in files(BASELINE, p)]
    entries += [("tables/table2.tex", f"{p}/{d}/real vs real/fvd", floor.path)
                for (p, d), floor in table2.read_fvd_floors(results_root).items() if any(k[:2] == (p, d) for k in cells)]
    comparison = main_comparison(metrics, table2.read_fvd_floors(results_root))
    if comparison is not None:
        runs = [f for e in (MAIN, BASELINE) for f in files(e, comparison.profile)]
        entries += [("tables/main_comparison.tex", f"{comparison.profile}/{item}", f)
                    for item in (*(f"lpips/{c}" for c in comparison.lpips), *(f"fvd/{d}/{c}" for d, c in comparison.fvd))
                    for f in runs]
        entries += [("tables/main_comparison.tex", f"{comparison.profile}/floor/{d}", floor.path)
                    for d, floor in comparison.floors.items()]
    parents = table3.ablations(configs)
    for (p, e, (kind, m)), cell in table3.table3_cells(metrics, configs).items():
        item = f"{p}/{e}/{kind}:{m}"
        entries += [("tables/table3.tex", item, f) for f in files(e, p)]
        entries.append(("tables/table3.tex", item, Path(results_root) / e / p / "config.resolved.yaml"))
        if cell.test is not None:
            entries += [("tables/table3.tex", item, f) for f in files(parents[p, e], p)]
    entries += [("tables/table4.tex", row.label, source)
                for row in table4.table4_rows(compute) for source in row.sources]
    return entries


def figure_entries(metrics: pd.DataFrame, results_root: Path) -> list[Entry]:
    """The runs and files behind each figure (each figure shows one profile)."""
    entries: list[Entry] = []
    seeds = _run_seeds(metrics)
    if metrics["metric"].isin(list(METRIC_ROWS)).any():
        rows = two_afc_rows(metrics)
        profile = most_real_profile(rows["profile"])
        entries += [("figures/metric_vs_eps.pdf", f"{profile}/{e}", f)
                    for e in sorted(rows.loc[rows["profile"] == profile, "experiment"].unique())
                    for f in _metrics_files(results_root, seeds, e, profile)]
    profile, paths = figures.strip_paths(results_root)
    entries += [("figures/frame_strips.pdf", f"{profile}/{m}/{d}", path) for (m, d), path in sorted(paths.items())]
    profile, runs = figures.read_training(results_root)
    entries += [("figures/training_curves.pdf", f"{profile}/{e}", path)
                for e in sorted(runs) for path in figures.training_files(results_root, profile, e)]
    profile, bars = figures.bar_rows(metrics)
    entries += [("figures/domain_bars.pdf", f"{profile}/{e}", f) for e in sorted(bars["experiment"].unique())
                for f in _metrics_files(results_root, seeds, e, profile)]
    return entries


def run_facts(path: Path) -> tuple[str, str, str]:
    """(git sha, git state, config sha256) of the run that wrote `path`, from its provenance file."""
    if path.parent.name == "bench":
        record_path = path.parent / f"provenance_{path.stem.split('_', 1)[1]}.json"
    else:
        run_dir = path.parent.parent if path.parent.name == "samples" else path.parent
        record_path = run_dir / "provenance.json"
    if not record_path.is_file():
        return ("unfinished run: no " + record_path.name, "", "")
    record = json.loads(record_path.read_text())
    git = record.get("git", {})
    state = {True: "dirty", False: "clean"}.get(git.get("dirty"), "unknown")
    config = record.get("config_sha256") or f"bench plan {record.get('plan', '?')} (no experiment config)"
    return (git.get("sha", "unknown"), state, config)


def make_provenance(entries: list[Entry]) -> str:
    """The TSV text: header, then one sorted line per distinct entry with its run's facts."""
    facts: dict[Path, tuple[str, str, str]] = {}
    lines = ["\t".join(COLUMNS)]
    for output, item, path in sorted(set(entries), key=lambda e: (e[0], e[1], str(e[2]))):
        if path not in facts:
            facts[path] = run_facts(path)
        lines.append("\t".join([output, item, str(path), *facts[path]]))
    return "\n".join(lines) + "\n"


def main(results_root: Path, out: Path) -> None:
    """`python -m cinelora report provenance`: results/ → `out` (paper/generated/provenance.tsv)."""
    metrics = read_results(results_root)
    compute = table4.read_compute(results_root)
    entries = table_entries(metrics, table3.read_configs(results_root), compute, results_root)
    entries += figure_entries(metrics, results_root)
    macros = numbers.make_numbers(metrics, numbers.read_summaries(results_root), compute,
                                  numbers.figure_inputs(results_root), results_root, numbers.read_search(results_root),
                                  table2.read_fvd_floors(results_root))
    entries += [("generated/numbers.tex", "\\" + m.name, source) for m in macros for source in m.sources]
    atomic_write_text(out, make_provenance(entries))


__all__ = ["make_provenance", "table_entries", "figure_entries", "run_facts", "main", "COLUMNS"]
