"""The report (results/ → paper/) on a small committed results tree: snapshots a reviewer can read, byte-stable
rebuilds, the statistics behind each cell, the Makefile's dependency graph, and the paper's use of every output.

Fixture `tests/fixtures/results/` (smoke profile, seed 0): the four methods and two ablations on `cinematic` (6
clips) and `actors` (3 clips), LPIPS and CLIP-SIM per clip clean and attacked, FVD per domain; training logs of the
three trained methods; tiny sample strips; a true-size bench (`bench/*_h100.*`, one OOM case).
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from cinelora import cli, rundir, study
from cinelora.config import PROFILES, load_config
from cinelora.report import bootstrap_mean_ci, figures, numbers, provenance_list, table2, table3, table4
from cinelora.results import read_metrics, read_results, write_metrics
from cinelora.stats import holm_adjust

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RESULTS = FIXTURES / "results"
SNAPSHOTS = {"table2": FIXTURES / "table2_expected.tex", "table3": FIXTURES / "table3_expected.tex",
             "table4": FIXTURES / "table4_expected.tex", "numbers": FIXTURES / "numbers_expected.tex",
             "provenance": FIXTURES / "provenance_expected.tsv"}
TABLE_MAINS = {"table2": table2.main, "table3": table3.main, "table4": table4.main, "numbers": numbers.main,
               "provenance": provenance_list.main}
FIGURE_MAINS = {"frame_strips": figures.frame_strips_main, "training_curves": figures.training_curves_main,
                "domain_bars": figures.domain_bars_main}


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    return read_results(RESULTS)


@pytest.fixture(scope="module")
def configs() -> table3.Configs:
    return table3.read_configs(RESULTS)


def body_rows(table: str) -> dict[tuple[str, str], list[str]]:
    """(first column, run name) -> the remaining cells of each `\\texttt{run}` row of a tabular."""
    rows, first = {}, ""
    for line in table.splitlines():
        match = re.match(r"(.*?) ?& \\texttt\{(.+?)\} & (.*) \\\\$", line)
        if match:
            first = match[1] or first
            rows[first, match[2].replace("\\_", "_")] = match[3].split(" & ")
    return rows


def ablation_rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        match = re.match(r"(?:\\quad)?\\texttt\{(.+?)\}(?: \(parent\))? & (.*) \\\\$", line)
        if match:
            rows[match[1].replace("\\_", "_")] = match[2].split(" & ")
    return rows


def clip_values(metrics: pd.DataFrame, experiment: str, domain: str, metric: str,
                condition: str = "clean") -> pd.Series:
    rows = metrics.query("experiment == @experiment and domain == @domain and metric == @metric "
                         "and condition == @condition")
    return rows.set_index("clip")["value"].sort_index()


def raw_p(a: pd.Series, b: pd.Series) -> float:
    """The fixture's paired tests by hand: Wilcoxon at 6 clips (cinematic), paired t-test at 3 (actors)."""
    return (stats.wilcoxon(a - b) if len(a) >= 6 else stats.ttest_rel(a, b)).pvalue


def rank_biserial_via_wilcoxon(d: pd.Series) -> float:
    """(T+ - T-) / (T+ + T-) from scipy's one-sided statistic T+, with T+ + T- = n (n + 1) / 2 (no zero d)."""
    total = len(d) * (len(d) + 1) / 2
    return (2 * stats.wilcoxon(d, alternative="greater").statistic - total) / total


def subscript(cell: str) -> float | None:
    match = re.search(r"_\{([+-][0-9.]+)\}\$", cell)
    return float(match[1]) if match else None


# --- the fixture and the snapshots -------------------------------------------------------------------------------


def test_fixture_metrics_are_in_the_canonical_written_form(metrics, tmp_path):
    for path in sorted(RESULTS.glob("*/*/metrics.csv")):
        write_metrics(read_metrics([path]).to_dict("records"), tmp_path / "rewritten.csv")
        assert (tmp_path / "rewritten.csv").read_bytes() == path.read_bytes()
    assert len(metrics) == 6 * (9 * 2 * 2 + 2 * 2 * 2)


@pytest.mark.parametrize("name", sorted(TABLE_MAINS))
def test_output_matches_its_snapshot_and_rebuilds_byte_for_byte(name, tmp_path, monkeypatch):
    # Relative paths, as the Makefile runs it from the repository root: file names in the outputs stay portable.
    monkeypatch.chdir(FIXTURES)
    out = tmp_path / "out" / SNAPSHOTS[name].name
    TABLE_MAINS[name](Path("results"), out)
    first = out.read_bytes()
    TABLE_MAINS[name](Path("results"), out)
    assert out.read_bytes() == first == SNAPSHOTS[name].read_bytes()
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind


@pytest.mark.parametrize("name", sorted(FIGURE_MAINS))
def test_figures_rebuild_byte_for_byte_with_fonts_embedded_and_a_png_copy(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    pdf = tmp_path / f"{name}.pdf"
    FIGURE_MAINS[name](RESULTS, pdf)
    first = pdf.read_bytes(), pdf.with_suffix(".png").read_bytes()
    FIGURE_MAINS[name](RESULTS, pdf)
    assert (pdf.read_bytes(), pdf.with_suffix(".png").read_bytes()) == first
    assert b"/FontFile2" in first[0] and b"CreationDate" not in first[0] and b"Matplotlib" not in first[0]
    assert first[1].startswith(b"\x89PNG") and b"Software" not in first[1]


def test_tables_do_not_depend_on_row_order(metrics, configs):
    shuffled = metrics.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert table2.make_table2(shuffled) == table2.make_table2(metrics)
    assert table3.make_table3(shuffled, configs) == table3.make_table3(metrics, configs)


# --- Table 2 -------------------------------------------------------------------------------------------------------


def test_table2_cells_are_bootstrap_means_and_fvd_shows_its_sample_size(metrics):
    rows = body_rows(table2.make_table2(metrics))
    held_out = "actors (held out)"
    values = clip_values(metrics, "lora_r8", "actors", "lpips").to_numpy()
    ci = bootstrap_mean_ci(values)
    assert rows[held_out, "lora_r8"][2] == f"${ci.mean:.3f} \\pm {ci.half_width:.3f}$"  # the baseline: no mark
    assert rows["cinematic (fine-tuning)", "base"][0] == "$410.0$ (N=6)"
    assert rows[held_out, "base"][0] == "$460.0$ (N=3)"
    assert list(rows) == [(d, m) for d in ("cinematic (fine-tuning)", held_out) for m in study.METHODS]


def test_table2_bolds_the_best_mean_of_each_domain_and_metric(metrics):
    rows = body_rows(table2.make_table2(metrics))
    for domain, label in (("cinematic", "cinematic (fine-tuning)"), ("actors", "actors (held out)")):
        for column, metric in enumerate(table2.TABLE2_METRICS):
            means = {m: clip_values(metrics, m, domain, metric).mean() for m in study.METHODS}
            best = (min if metric != "clip_sim" else max)(means, key=means.get)
            assert [m for m in study.METHODS if r"\mathbf" in rows[label, m][column]] == [best]
    # The fixture is built so different methods win different columns: a column-blind bold would fail above.
    assert len({m for cells in rows.values() for m in cells if r"\mathbf" in m}) > 2


def test_table2_marks_differences_from_the_baseline_by_holm_corrected_paired_tests_with_their_effect_sizes(metrics):
    table = table2.make_table2(metrics)
    rows = body_rows(table)
    tested, raw = [], []
    for domain, label in (("cinematic", "cinematic (fine-tuning)"), ("actors", "actors (held out)")):
        for column, metric in ((1, "clip_sim"), (2, "lpips")):
            base = clip_values(metrics, "lora_r8", domain, metric)
            for method in ("base", "lpips_r8", "robust_lpips_r8"):
                other = clip_values(metrics, method, domain, metric)
                tested.append((label, method, column))
                raw.append(raw_p(other, base))
                assert subscript(rows[label, method][column]) == pytest.approx(
                    rank_biserial_via_wilcoxon(other - base), abs=0.005)
        assert subscript(rows[label, "lora_r8"][2]) is None  # the baseline is not compared with itself
    adjusted = holm_adjust(raw)
    marks = ["^{*}" in rows[label, method][column] for label, method, column in tested]
    assert marks == [p < 0.05 for p in adjusted]
    # the fixture has a mark that the correction removes, and one that survives it
    assert any(r < 0.05 <= a for r, a in zip(raw, adjusted)) and any(marks)
    assert "two-sided Wilcoxon signed-rank or paired t-test (3--6 clips" in table
    assert (r"differs from \texttt{lora\_r8} on the same clips at $p < 0.05$ after Holm's correction over the "
            f"table's {len(raw)} tests") in table


def test_table2_caption_labels_smoke_and_proxy_and_keeps_profiles_apart(metrics):
    table = table2.make_table2(metrics)
    assert "Profiles: smoke." in table and "not evidence" in table and "not full-scale numbers" in table
    mixed = metrics.copy()
    mixed.loc[mixed["experiment"].isin(["lpips_r8", "robust_lpips_r8"]), "profile"] = "proxy"
    table = table2.make_table2(mixed)
    assert table.index("profile: proxy") < table.index(r"\texttt{robust\_lpips\_r8}") < table.index("profile: smoke")
    assert "Profiles: proxy, smoke." in table and "Proxy:" in table and "Smoke:" in table
    full = table2.make_table2(metrics.assign(profile="full"))
    assert "Profiles: full." in full and "not full-scale" not in full


def test_table2_ties_missing_cells_single_clips_and_empty_input(metrics):
    ties = metrics.assign(value=0.5)
    assert r"\mathbf" not in table2.make_table2(ties)  # when every method ties, none is best
    one = metrics[~((metrics["experiment"] == "lora_r8") & (metrics["domain"] == "actors")
                    & ~metrics["clip"].isin(["a0", "all"]))]
    one = one[~((one["experiment"] == "lpips_r8") & (one["domain"] == "actors") & (one["metric"] == "fvd"))]
    rows = body_rows(table2.make_table2(one))
    value = clip_values(metrics, "lora_r8", "actors", "lpips")["a0"]
    assert rows["actors (held out)", "lora_r8"][2] == f"${value:.3f}$ (1 clip)"
    assert rows["actors (held out)", "lpips_r8"][0] == "--"
    with pytest.raises(ValueError, match="no clean rows"):
        table2.make_table2(metrics.assign(condition="attacked"))


# --- Table 3 -------------------------------------------------------------------------------------------------------


def test_table3_lists_each_ablation_under_its_parent_with_what_it_varies(metrics, configs):
    table = table3.make_table3(metrics, configs)
    order = [table.index(s) for s in (r"\texttt{robust\_lpips\_r8} (parent)", r"\quad\texttt{robust\_lpips\_r4}",
                                      r"\texttt{lora.rank} 8 $\to$ 4", r"\quad\texttt{robust\_lpips\_r8\_noadv}",
                                      r"\texttt{adversarial.enabled} true $\to$ false")]
    assert order == sorted(order)
    assert "held-out domains (actors)" in table and r"$\epsilon = 4/255$" in table
    assert set(table3.ablations(configs)) == {("smoke", "robust_lpips_r4"), ("smoke", "robust_lpips_r8_noadv")}


def test_table3_robustness_is_the_per_clip_attacked_minus_clean_change_tested_against_the_parent(metrics, configs):
    rows = ablation_rows(table3.make_table3(metrics, configs))
    delta = {e: clip_values(metrics, e, "actors", "lpips", "attacked") - clip_values(metrics, e, "actors", "lpips")
             for e in ("robust_lpips_r8", "robust_lpips_r4", "robust_lpips_r8_noadv")}
    for experiment, values in delta.items():
        ci = bootstrap_mean_ci(values.to_numpy())
        assert rows[experiment][2].startswith(f"${ci.mean:.4f} \\pm {ci.half_width:.4f}")
        clean = clip_values(metrics, experiment, "actors", "lpips")
        assert rows[experiment][0].startswith(f"${clean.mean():.3f}")
    # Holm over the table's tests: every column but the clip-sim change, whose attack shifts all clips alike
    columns = {0: ("lpips", None), 1: ("clip_sim", None), 2: ("lpips", "attacked")}
    raw, marks = [], []
    for experiment in ("robust_lpips_r4", "robust_lpips_r8_noadv"):
        for column, (metric, attacked) in columns.items():
            a, b = (clip_values(metrics, e, "actors", metric) for e in (experiment, "robust_lpips_r8"))
            if attacked:
                a, b = (clip_values(metrics, e, "actors", metric, attacked) - v
                        for e, v in ((experiment, a), ("robust_lpips_r8", b)))
            raw.append(stats.ttest_rel(a, b).pvalue)
            marks.append("^{*}" in rows[experiment][column])
        assert subscript(rows[experiment][3]) is None and "^{*}" not in rows[experiment][3]
    assert marks == [p < 0.05 for p in holm_adjust(raw)]
    assert not any("^{*}" in cell or subscript(cell) is not None for cell in rows["robust_lpips_r8"])


def test_table3_without_the_parent_run_or_without_ablations(metrics, configs):
    orphan = metrics[metrics["experiment"] != "robust_lpips_r8"]
    table = table3.make_table3(orphan, configs)
    assert ablation_rows(table)["robust_lpips_r8"] == ["--"] * 4 and "^{*}" not in table
    with pytest.raises(ValueError, match="no ablation"):
        table3.make_table3(metrics, {k: v for k, v in configs.items() if k[1] in study.METHODS})


# --- Table 4 -------------------------------------------------------------------------------------------------------


def test_table4_reads_the_bench_and_the_training_runs_and_says_not_measured(tmp_path):
    rows = table4.table4_rows(table4.read_compute(RESULTS))
    by_label = {r.label: r for r in rows}
    baseline = by_label["h100: NVIDIA H100 80GB HBM3 baseline_480p 81x480x832"]
    assert baseline.scale == "true size" and baseline.device == "H100 80GB HBM3"
    assert baseline.cells[2:6] == ("$13.4$", r"$1.00\times$", "$53.2$", r"$31.8\%$")
    assert by_label["h100: NVIDIA H100 80GB HBM3 keepattn_720p 81x720x1280"].cells[2] == "OOM"
    assert by_label["h100: NVIDIA H100 80GB HBM3 build + cache 81x720x1280"].cells[6] == "$95.0$ / $8.5$"
    assert [r.label.split()[-2] for r in rows if r.scale == "true size"] == [
        "cache", "baseline_480p", "keepattn_720p", "offload_720p"]  # build first, then by clip size and case
    assert by_label["smoke/robust_lpips_r8 training"].cells[2] == "CPU"  # a CPU run's wall time is not quoted
    assert by_label["not measured"].scale == "proxy"
    shutil.copytree(RESULTS, tmp_path / "results", ignore=shutil.ignore_patterns("bench"))
    table = table4.make_table4(table4.read_compute(tmp_path / "results"))
    true_size = table[table.index("true size:"):table.index("proxy:")]
    assert r"LoRA training step & -- & \multicolumn{5}{c}{not measured} \\" in true_size and "H100" not in table


def _bench_file(tmp: Path, label: str, cases: dict[str, float]) -> Path:
    """A steps_<label>.csv with one 480p case per entry (its s/step)."""
    path = tmp / "bench" / f"steps_{label}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["device,architecture,case,frames,height,width,attention_backend,checkpointing,keep_attention_blocks,"
             "offload_blocks,compile_blocks,metric,value"]
    lines += [f"GPU,wan2.1-i2v-14b,{case},81,480,832,native,full,0,0,0,s_per_step_median,{seconds:.6f}"
              for case, seconds in cases.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_table4_leaves_out_withdrawn_and_superseded_cases_and_gives_same_run_speedups(tmp_path):
    _bench_file(tmp_path, "a", {"baseline_480p": 12.0, "fast_480p": 8.0, "wrong_480p": 1.0})
    _bench_file(tmp_path, "b", {"fast_480p": 7.5, "other_480p": 10.0})  # no baseline in this run
    (tmp_path / "bench" / "withdrawn.csv").write_text("label,case,reason\na,wrong_480p,wrong gradients\n")
    inputs = table4.read_compute(tmp_path)
    standing = table4.current_bench_steps(inputs)
    assert (standing.withdrawn, standing.superseded) == (1, 1)
    rows = {r.label.split()[-2]: r for r in table4.table4_rows(inputs) if r.scale == "true size"}
    assert sorted(rows) == ["baseline_480p", "fast_480p", "other_480p"]
    assert rows["baseline_480p"].cells[2:4] == ("$12.0$", r"$1.00\times$")
    assert rows["fast_480p"].label.startswith("b:") and rows["fast_480p"].cells[2:4] == ("$7.5$", "--")
    assert "1 case(s) measured again in a later run and 1 withdrawn" in table4.make_table4(inputs)
    # a same-run speed-up where the run has a baseline
    (tmp_path / "bench" / "withdrawn.csv").write_text("label,case,reason\na,wrong_480p,x\nb,fast_480p,x\n")
    rows = {r.label.split()[-2]: r for r in table4.table4_rows(table4.read_compute(tmp_path)) if r.sources}
    assert rows["fast_480p"].cells[2:4] == ("$8$", r"$1.50\times$")


@pytest.mark.parametrize("text, match", [("label,case,reason\nz,fast_480p,x\n", "no steps_<label>.csv holds"),
                                         ("label,case,reason\na,fast_480p,\n", "line 2: expected the columns"),
                                         ("label,case\na,fast_480p\n", "line 2: expected the columns")])
def test_table4_rejects_a_bad_withdrawn_file(tmp_path, text, match):
    _bench_file(tmp_path, "a", {"baseline_480p": 12.0, "fast_480p": 8.0})
    (tmp_path / "bench" / "withdrawn.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        table4.table4_rows(table4.read_compute(tmp_path))


# --- figures -------------------------------------------------------------------------------------------------------


def test_frame_strips_grid_has_a_ground_truth_row_and_one_row_per_method(tmp_path):
    profile, paths = figures.strip_paths(RESULTS)
    assert profile == "smoke" and len(paths) == 4 * 2
    strips = {k: np.asarray(plt.imread(p) * 255, dtype=np.uint8) for k, p in paths.items()}
    fig = figures.make_frame_strips(strips, profile)
    assert len(fig.axes) == (1 + 4) * 2 and "smoke" in fig.get_suptitle()
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["ground truth", *study.METHODS]
    plt.close(fig)
    with pytest.raises(FileNotFoundError, match="samples"):
        figures.frame_strips_main(tmp_path, tmp_path / "x.pdf")


def test_training_curves_mark_the_kept_step_on_the_early_stopping_signal():
    profile, runs = figures.read_training(RESULTS)
    assert profile == "smoke" and sorted(runs) == ["lora_r8", "lpips_r8", "robust_lpips_r8"]
    fig = figures.make_training_curves(runs, profile)
    perceptual = fig.axes[2]
    stars = [line for line in perceptual.get_lines() if line.get_marker() == "*"]
    crosses = [line for line in perceptual.get_lines() if line.get_marker() == "x"]
    assert sorted((int(s.get_xdata()[0]), float(s.get_ydata()[0])) for s in stars) == [(4, 0.1), (4, 0.27), (6, 0.25)]
    assert [(int(c.get_xdata()[0])) for c in crosses] == [8]  # only robust_lpips_r8 stopped early
    plt.close(fig)


def test_domain_bars_error_bars_are_the_bootstrap_cis(metrics):
    fig = figures.make_domain_bars(metrics)
    lpips_axis = fig.axes[0]
    assert lpips_axis.get_title().startswith("LPIPS")
    heights = [patch.get_height() for patch in lpips_axis.patches]
    expected = [clip_values(metrics, m, d, "lpips").mean() for m in study.METHODS for d in ("cinematic", "actors")]
    assert heights == pytest.approx(expected)
    caps = sorted({round(y, 9) for line in lpips_axis.lines for y in line.get_ydata()})
    ci = bootstrap_mean_ci(clip_values(metrics, "lora_r8", "actors", "lpips").to_numpy())
    assert round(ci.low, 9) in caps and round(ci.high, 9) in caps
    plt.close(fig)


# --- numbers.tex, the paper and provenance ------------------------------------------------------------------------


def test_every_macro_is_used_by_the_paper_and_the_paper_uses_every_output(metrics, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    macros = numbers.make_numbers(metrics, numbers.read_summaries(Path("results")),
                                  table4.read_compute(Path("results")), numbers.figure_inputs(Path("results")),
                                  Path("results"))
    paper = (REPO / "paper" / "main.tex").read_text()
    used = set(re.findall(r"\\([A-Z][A-Za-z]+)", paper))
    assert all(re.fullmatch(r"[A-Za-z]+", m.name) for m in macros)
    assert {m.name for m in macros} <= used
    for output in ("tables/table1", "tables/table2", "tables/table3", "tables/table4", "generated/numbers"):
        assert rf"\input{{{output}}}" in paper
    for figure in ("metric_vs_eps", "frame_strips", "training_curves", "domain_bars"):
        assert rf"\includegraphics[width=\linewidth]{{figures/{figure}.pdf}}" in paper
    assert re.search(r"proxy.*smoke", paper, re.S) and "not evidence" not in paper  # the macros carry the labels


def test_numbers_quote_the_main_method_against_the_baseline(metrics):
    from cinelora.report.main_comparison import main_comparison

    values = {m.name: m.value for m in numbers.comparison_macros(main_comparison(metrics, {}), metrics,
                                                                  Path("results"))}
    values |= {m.name: m.value for m in numbers.study_macros(metrics, Path("results"))}
    main, base = (clip_values(metrics, e, "actors", "lpips") for e in ("robust_lpips_r8", "lora_r8"))
    main_a, base_a = (clip_values(metrics, e, "actors", "lpips", "attacked") for e in ("robust_lpips_r8", "lora_r8"))
    assert values["MainMinusLoraHeldOutLpips"] == rf"\ensuremath{{{(main - base).mean():.4f}}}"
    assert values["MainMinusLoraHeldOutLpipsAttacked"] == rf"\ensuremath{{{(main_a - base_a).mean():.4f}}}"
    # Holm-adjusted over the main comparison's two tests, clean and attacked (stated before the runs)
    adjusted = holm_adjust([raw_p(main, base), raw_p(main_a, base_a)])
    assert values["MainVsLoraP"] == rf"\ensuremath{{{adjusted[0]:.2g}}}" and values["MainVsLoraFamily"] == "2"
    assert values["MainVsLoraPAttacked"] == rf"\ensuremath{{{adjusted[1]:.2g}}}"
    assert values["MainVsLoraEffect"] == rf"\ensuremath{{{rank_biserial_via_wilcoxon(main - base):.2f}}}"
    assert values["MainVerdict"] in ("not positive", "undecided")  # smoke: no noise floor, no real effect
    assert values["HeldOutLpipsMain"] == rf"\ensuremath{{{main.mean():.3f}}}"
    assert values["StudyProfile"] == "smoke" and values["StudyHeldOutDomains"] == "actors"


def test_numbers_of_metric_robustness_take_the_most_real_profile():
    two_afc = read_results(FIXTURES / "table1")  # rlpips_metric at proxy and smoke
    values = {m.name: m.value for m in numbers.metric_macros(two_afc, Path("results"))}
    proxy = two_afc.query("profile == 'proxy' and metric == '2afc_rlpips' and condition == 'pgd_eps8'")["value"]
    assert values["MetricProfile"] == "proxy" and values["TwoAfcPgdEps"] == "8"
    assert values["TwoAfcPgdRlpips"] == rf"\ensuremath{{{proxy.mean() * 100:.1f}}}"

def test_true_size_numbers_quote_the_baseline_device_only():
    def rows(device: str, case: str, height: int, seconds: float) -> list[dict]:
        key = {"device": device, "architecture": "wan2.1-i2v-14b", "case": case, "frames": "81", "height": str(height),
               "width": str(height * 16 // 9)}
        return [dict(key, metric="s_per_step_median", value=str(seconds)),
                dict(key, metric="peak_allocated_gib", value="50.0")]
    steps = {Path("results/bench/steps_a.csv"): rows("NVIDIA H100", "baseline_480p", 480, 13.6)
             + rows("NVIDIA H100", "fast_720p", 720, 35.0),
             Path("results/bench/steps_b.csv"): rows("NVIDIA H200", "faster_720p", 720, 34.0)}
    values = {m.name: m.value for m in numbers.compute_macros(table4.ComputeInputs(steps, {}, {}))}
    assert values["TrueSizeDevice"] == "H100"
    assert (values["TrueSizeBestCase"], values["TrueSizeBestSeconds"]) == (r"\texttt{fast\_720p}", r"\ensuremath{35.0}")


def test_numbers_without_results_define_every_macro_as_not_available(metrics):
    full = numbers.make_numbers(metrics, numbers.read_summaries(RESULTS), table4.read_compute(RESULTS),
                                numbers.figure_inputs(RESULTS), Path("results"))
    empty = numbers.make_numbers(metrics.iloc[:0], {}, table4.ComputeInputs({}, {}, {}), (None, None), Path("results"))
    assert [m.name for m in empty] == [m.name for m in full]  # the paper still builds, and says n/a
    assert {m.value for m in empty} == {numbers.NOT_AVAILABLE} and not any(m.sources for m in empty)


def test_provenance_names_each_table2_cell_and_the_sha_of_the_run_that_wrote_it(metrics, tmp_path, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    provenance_list.main(Path("results"), tmp_path / "provenance.tsv")
    lines = [line.split("\t") for line in (tmp_path / "provenance.tsv").read_text().splitlines()]
    assert lines[0] == list(provenance_list.COLUMNS)
    cells = {(row[1], row[2]) for row in lines if row[0] == "tables/table2.tex"}
    for (profile, domain, experiment, metric) in table2.table2_cells(metrics):
        assert (f"{profile}/{domain}/{experiment}/{metric}", f"results/{experiment}/{profile}/metrics.csv") in cells
    bench = next(row for row in lines if row[2] == "results/bench/steps_h100.csv")
    assert bench[3:] == ["89abcdef0123456789abcdef0123456789abcdef", "clean", "bench plan full (no experiment config)"]
    outputs = {row[0] for row in lines[1:]}
    assert outputs == {"tables/table2.tex", "tables/table3.tex", "tables/table4.tex", "tables/main_comparison.tex",
                       "figures/frame_strips.pdf", "figures/training_curves.pdf", "figures/domain_bars.pdf",
                       "generated/numbers.tex"}


# --- Makefile, CLI and configs --------------------------------------------------------------------------------------


def _make(workdir: Path, *targets: str) -> str:
    done = subprocess.run(["make", "--no-print-directory", *targets, f"PY={sys.executable}", "STAMP=stamp"],
                          cwd=workdir, capture_output=True, text=True, env={**os.environ, "MAKEFLAGS": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_table2_twice_gives_identical_bytes_and_rebuilds_only_when_an_input_changes(tmp_path):
    for name in ("Makefile", "cinelora", "requirements.txt", "pyproject.toml"):
        (tmp_path / name).symlink_to(REPO / name)
    shutil.copytree(RESULTS, tmp_path / "results")
    (tmp_path / "stamp").touch()
    assert "report table2" in _make(tmp_path, "table2")
    table = tmp_path / "paper" / "tables" / "table2.tex"
    first = table.read_bytes()
    assert "report table2" not in _make(tmp_path, "table2")  # up to date: nothing runs
    os.utime(tmp_path / "results" / "lora_r8" / "smoke" / "metrics.csv")  # a newer input rebuilds it
    assert "report table2" in _make(tmp_path, "table2")
    assert table.read_bytes() == first == SNAPSHOTS["table2"].read_bytes()


def test_makefile_report_rules_match_the_code():
    makefile = (REPO / "Makefile").read_text()
    for what in ("table2", "table3", "table4", "numbers", "provenance", "frame-strips", "training-curves",
                 "domain-bars"):
        assert f"cinelora report {what} --out" in makefile
    rules = {line.split(":")[0]: line for line in makefile.splitlines() if line.startswith("$(")}
    for target, module in (("$(PAPER)/tables/table2.tex", "table2"), ("$(PAPER)/tables/table3.tex", "table3"),
                           ("$(PAPER)/tables/table4.tex", "table4"), ("$(NUMBERS)", "numbers")):
        assert f"$(R)/{module}.py" in rules[target]


def test_cli_report_dispatches_every_output(tmp_path, monkeypatch):
    for module, function, default in cli.REPORTS.values():
        assert callable(getattr(importlib.import_module(f"cinelora.report.{module}"), function))
        assert default.startswith(("paper/", "docs/", "gallery/"))
    monkeypatch.setattr(rundir, "RESULTS_ROOT", RESULTS)
    cli.main(["report", "table3", "--out", str(tmp_path / "table3.tex")])
    assert (tmp_path / "table3.tex").read_bytes() == SNAPSHOTS["table3"].read_bytes()


def test_the_generator_fine_tunes_on_the_table_domain_in_every_config_and_profile():
    for path in sorted((REPO / "experiments").glob("*/config.yaml")):
        if yaml.safe_load(path.read_text()).get("kind", "generator") != "generator":
            continue
        for profile in PROFILES:
            cfg = load_config(path, profile)
            train = Path(cfg.data.train)
            assert train.parent.name == study.TRAIN_DOMAIN, (path, profile)
            assert Path(cfg.eval.domains[study.TRAIN_DOMAIN]).parent == train.parent, (path, profile)


# --- the bootstrap CI behind every cell ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[0.412, 0.437, 0.398], [0.1, 0.9], [0.3, 0.31, 0.5, 0.2, 0.25, 0.27]])
def test_bootstrap_ci_contains_the_sample_mean(values):
    ci = bootstrap_mean_ci(np.array(values))
    assert ci.mean == pytest.approx(np.mean(values))
    assert ci.low <= ci.mean <= ci.high and ci.low < ci.high
    assert ci.method == "BCa" and ci.n == len(values)
    assert bootstrap_mean_ci(np.array(values)) == ci  # fixed generator: same interval every call


def test_bootstrap_ci_of_identical_values_falls_back_to_a_zero_width_percentile():
    ci = bootstrap_mean_ci(np.array([0.5, 0.5, 0.5]))
    assert (ci.method, ci.low, ci.high, ci.half_width) == ("percentile", 0.5, 0.5, 0.0)


def test_bootstrap_ci_of_one_value_has_no_interval():
    ci = bootstrap_mean_ci(np.array([0.7]))
    assert (ci.mean, ci.low, ci.high, ci.half_width, ci.n) == (0.7, None, None, None, 1)


def test_the_cache_time_is_the_sum_of_the_four_encodings_of_the_largest_true_size_clip():
    def rows(architecture: str, height: int, seconds: dict[str, float]) -> list[dict]:
        key = {"device": "NVIDIA H100", "architecture": architecture, "frames": "81", "height": str(height),
               "width": str(height * 16 // 9)}
        return [dict(key, stage=stage, seconds=str(s)) for stage, s in seconds.items()]
    four = dict(zip(table4.CACHE_STAGES, (5.0, 4.0, 0.5, 0.25)))
    configuration = {Path("results/bench/configuration_a.csv"): rows("wan2.1-i2v-14b", 480, dict(four, build_models=9.0))
                     + rows("wan2.1-i2v-14b", 720, {s: 2 * v for s, v in four.items()}) + rows("proxy", 1080, four)}
    values = {m.name: m.value for m in numbers.cache_macros(table4.ComputeInputs({}, configuration, {}))}
    assert values == {"TrueSizeCacheSeconds": r"\ensuremath{19.5}", "TrueSizeCacheDevice": "H100"}
    incomplete = {p: [r for r in rs if r["stage"] != "vae_latents"] for p, rs in configuration.items()}
    assert {m.value for m in numbers.cache_macros(table4.ComputeInputs({}, incomplete, {}))} == {numbers.NOT_AVAILABLE}


def test_the_proxy_loop_gives_table4_its_cache_generation_and_experiment_rows(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    figures = {"cache_clips": 40, "cache_s_per_clip": 0.0125, "cache_model_load_s": 1.5, "generation_batch": 128,
               "generation_s_per_batch": 0.64, "generation_clips_per_s": 200.0, "experiment_total_s": 52.25}
    for label, device in (("h200", "NVIDIA H200"), ("cpu", "cpu")):
        lines = ["device,profile,frames,height,width,figure,value,unit"] + [
            f"{device},proxy,17,64,64,{name},{value},s" for name, value in figures.items()]
        (bench / f"proxy_loop_{label}.csv").write_text("\n".join(lines) + "\n")
    rows = [r for r in table4.table4_rows(table4.read_compute(tmp_path)) if r.scale == "proxy"]
    gpu = {r.cells[0]: r.cells for r in rows if r.device == "H200"}
    assert gpu["cache the training clips"][6] == "$1.5$ / $0.0125$"
    assert gpu["generate 128 clips ($200$ clips/s)"][1:3] == (r"$17{\times}64{\times}64$", "$0.64$")
    assert gpu[r"one \texttt{robust\_lpips\_r8} experiment-seed"][2] == "$52.2$"
    cpu = [r.cells for r in rows if r.device == "CPU"]
    assert len(cpu) == 3 and not any("$" in cell for cells in cpu for cell in cells[2:])  # CPU times not quoted
    assert "proxy-loop rows" in table4.make_table4(table4.read_compute(tmp_path))


def test_provenance_names_the_metrics_file_of_every_seeds_run():
    from cinelora.report import provenance_list

    frame = pd.DataFrame({"experiment": ["lora_r8"] * 3, "profile": ["proxy"] * 3, "seed": [0, 2, 2]})
    seeds = provenance_list._run_seeds(frame)
    assert provenance_list._metrics_files(Path("results"), seeds, "lora_r8", "proxy") == [
        Path("results/lora_r8/proxy/metrics.csv"), Path("results/lora_r8/proxy/seed2/metrics.csv")]


def test_table2_prints_each_shown_domains_fvd_noise_floor_from_the_evaluators(tmp_path, metrics):
    path = tmp_path / "proxy_evaluators" / "smoke" / "fvd_sanity.csv"
    path.parent.mkdir(parents=True)
    path.write_text("domain,corruption,strength,split,fvd,clips_a,clips_b\n"
                    "actors,none,0,0,1.0,512,512\nactors,none,0,1,2.0,512,512\nactors,noise,0.1,0,90.0,512,512\n"
                    "stills,none,0,0,5.0,512,512\n")
    floors = table2.read_fvd_floors(tmp_path)
    assert {k: (f.fvd, f.clips, f.splits) for k, f in floors.items()} == {
        ("smoke", "actors"): (1.5, 512, 2), ("smoke", "stills"): (5.0, 512, 1)}
    text = table2.make_table2(metrics, floors)
    floor_rows = [line for line in text.splitlines() if r"\emph{real vs real} &" in line]
    assert floor_rows == [r" & \emph{real vs real} & $1.5$ (N=512) & -- & -- \\"]  # stills: no method row there
    lines = text.splitlines()
    actors = next(i for i, line in enumerate(lines) if line.startswith("actors"))
    assert lines.index(floor_rows[0]) > actors and "noise floor" in text
    assert "real vs real" not in table2.make_table2(metrics)


def test_the_setup_quotes_what_the_proxy_search_chose(tmp_path):
    record = {"extra": {"chosen": {"lr": {"train.lr": 0.0003, "train.steps": 250},
                                   "lambda_eps": {"perceptual.weight": 0.3, "adversarial.eps_255": 2.0,
                                                  "adversarial.step_255": 0.5}},
                        "points": {f"p{i}": {} for i in range(10)}}}
    path = tmp_path / "proxy_search" / "proxy" / "provenance.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    macros = {m.name: (m.value, m.sources) for m in numbers.search_macros(numbers.read_search(tmp_path))}
    assert {k: v for k, (v, _) in macros.items()} == {
        "SearchLr": r"\ensuremath{0.0003}", "SearchSteps": r"\ensuremath{250}", "SearchLambda": r"\ensuremath{0.3}",
        "SearchEps": r"\ensuremath{2}", "SearchPoints": "10"}
    assert {s for _, s in macros.values()} == {(path,)}
    assert numbers.read_search(tmp_path / "none") is None
    assert {m.value for m in numbers.search_macros(None)} == {numbers.NOT_AVAILABLE}


def _comparison_rows(shift: float, fvd_main: float) -> pd.DataFrame:
    """MAIN and BASELINE at proxy on one held-out domain: per-clip LPIPS (MAIN lower by `shift` on every clip,
    clean and attacked) and FVD (BASELINE 10, MAIN `fvd_main`)."""
    rows = []
    for experiment, offset, fvd in (("lora_r8", 0.0, 10.0), ("robust_lpips_r8", -shift, fvd_main)):
        for condition in ("clean", "attacked"):
            key = dict(experiment=experiment, profile="proxy", seed=0, domain="actors", condition=condition)
            rows += [dict(key, clip=f"c{i}", metric="lpips", value=0.3 + 0.01 * i + offset + 0.001 * (i % 3) * shift)
                     for i in range(12)]
            rows += [dict(key, clip="all", metric="fvd", value=fvd), dict(key, clip="all", metric="fvd_clips", value=12)]
    return pd.DataFrame(rows)


def test_the_main_comparison_answers_by_the_rule_stated_before_the_runs():
    from cinelora.report import main_comparison as mc

    floor = {("proxy", "actors"): table2.Floor(2.0, 12, 8, Path("floor.csv"))}
    positive = mc.main_comparison(_comparison_rows(0.05, 11.0), floor)  # FVD worse by 1 < floor 2
    assert positive.verdict == "positive" and set(positive.lpips) == {"clean", "attacked"}
    clean, attacked = positive.lpips["clean"], positive.lpips["attacked"]
    assert clean.difference < 0 and clean.test.rank_biserial == -1.0
    assert clean.p_holm == pytest.approx(min(1.0, 2 * min(clean.test.p_value, attacked.test.p_value)))  # Holm, 2
    assert mc.main_comparison(_comparison_rows(0.05, 13.0), floor).verdict == "not positive"  # FVD past the floor
    assert mc.main_comparison(_comparison_rows(0.05, 11.0), {}).verdict == "undecided"  # no floor measured
    assert mc.main_comparison(_comparison_rows(-0.05, 10.0), floor).verdict == "not positive"  # LPIPS higher
    text = mc.make_main_comparison(positive)
    assert r"\textbf{positive}" in text and r"FVD actors [2.0]" in text and r"$10.0 \to 11.0$ (N=12)" in text
    assert mc.main_comparison(_comparison_rows(0.05, 11.0).query("experiment == 'lora_r8'"), floor) is None
    assert "no held-out rows" in mc.make_main_comparison(None)


@pytest.mark.parametrize("lora_shift, valid", [(-0.05, True), (0.05, False)])
def test_the_study_is_valid_only_when_the_lora_beats_base_on_its_own_domain(lora_shift, valid):
    rows = [dict(experiment=e, profile="proxy", seed=0, domain="cinematic", clip=f"c{i}", condition="clean",
                 metric="lpips", value=0.3 + 0.01 * i + (lora_shift if e == "lora_r8" else 0.0) * (1 + 0.1 * (i % 3)))
            for e in ("base", "lora_r8") for i in range(12)]
    values = {m.name: m.value for m in numbers.validity_macros(pd.DataFrame(rows), "proxy", Path("results"))}
    assert values["StudyValidity"] == (numbers.VALID if valid else numbers.NOT_VALID)
    assert values["ValidityLoraMinusBase"].startswith(r"\ensuremath{-" if valid else r"\ensuremath{0.")
    assert {m.value for m in numbers.validity_macros(pd.DataFrame(rows), None, Path("results"))} == {"n/a"}
