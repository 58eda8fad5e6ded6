"""Table 2 from a small committed results tree, and the bootstrap CI behind every table cell."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cinelora import results
from cinelora.report import bootstrap_mean_ci
from cinelora.report.table2 import main, make_table2
from cinelora.results import Metric, read_metrics, read_results, write_metrics

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RESULTS = FIXTURES / "results"  # lora_r8 and lpips_r8 at smoke: 2 domains x 3 clips of lpips
SNAPSHOT = FIXTURES / "table2_expected.tex"


@pytest.fixture(scope="module")
def metrics():
    return read_results(RESULTS)


def body_rows(table: str) -> dict[str, list[str]]:
    """Experiment name -> its cells, from the tabular body."""
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\\texttt\{(.+?)\} & (.*) \\\\$", line)
        if match:
            rows[match[1].replace("\\_", "_")] = match[2].split(" & ")
    return rows


def test_fixture_metrics_are_in_the_canonical_written_form(metrics, tmp_path):
    for path in sorted(RESULTS.glob("*/*/metrics.csv")):
        write_metrics(read_metrics([path]).to_dict("records"), tmp_path / "rewritten.csv")
        assert (tmp_path / "rewritten.csv").read_bytes() == path.read_bytes()
    assert len(metrics) == 2 * 2 * 3


def test_table2_matches_the_committed_snapshot(metrics):
    assert make_table2(metrics) == SNAPSHOT.read_text()


def test_table2_main_writes_the_same_bytes_twice(tmp_path):
    out = tmp_path / "tables" / "table2.tex"
    main(RESULTS, out)
    first = out.read_bytes()
    main(RESULTS, out)
    assert out.read_bytes() == first == SNAPSHOT.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["table2.tex"]


def test_table2_does_not_depend_on_row_order(metrics):
    shuffled = metrics.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert make_table2(shuffled) == make_table2(metrics)


def test_table2_bolds_the_lower_lpips_mean_of_each_domain(metrics):
    rows = body_rows(make_table2(metrics))
    means = metrics.groupby(["domain", "experiment"])["value"].mean()
    for column, domain in enumerate(["actors", "cinematic"]):
        best = means[domain].idxmin()
        bold = [exp for exp, cells in rows.items() if r"\mathbf" in cells[column]]
        assert bold == [best]
    # The fixture is built so each method wins one domain: a column-blind bold would fail above.
    assert means["actors"].idxmin() != means["cinematic"].idxmin()


def test_table2_cells_show_mean_and_half_width_of_the_ci(metrics):
    cells = body_rows(make_table2(metrics))
    values = metrics.query("experiment == 'lora_r8' and domain == 'actors'")["value"].to_numpy()
    ci = bootstrap_mean_ci(values)
    assert cells["lora_r8"][0] == f"${ci.mean:.3f} \\pm {(ci.high - ci.low) / 2:.3f}$"


def test_table2_caption_labels_smoke_numbers_and_counts_clips(metrics):
    table = make_table2(metrics)
    assert r"\label{tab:cross-domain}" in table and r"\begin{tabular}{lcc}" in table
    assert "over 3 clips $\\times$ 1 seed" in table
    assert "Profiles: smoke." in table and "not evidence" in table and "not full-scale numbers" in table


def test_table2_from_full_runs_carries_no_scale_warning(metrics):
    table = make_table2(metrics.assign(profile="full"))
    assert "Profiles: full." in table and "not full-scale" not in table and "profile: full" in table


def test_table2_keeps_profiles_apart_and_bolds_within_each(metrics):
    mixed = metrics.copy()
    mixed.loc[mixed["experiment"] == "lpips_r8", "profile"] = "proxy"
    table = make_table2(mixed)
    assert table.index("profile: proxy") < table.index(r"\texttt{lpips\_r8}") < table.index("profile: smoke")
    assert "Profiles: proxy, smoke." in table and "Proxy:" in table and "Smoke:" in table
    assert r"\mathbf" not in table  # one method per profile: nothing to be best against


def test_table2_marks_a_single_value_and_a_missing_cell(metrics):
    one = metrics[~((metrics["experiment"] == "lora_r8") & (metrics["domain"] == "actors") & (metrics["clip"] != "0000"))]
    one = one[~((one["experiment"] == "lpips_r8") & (one["domain"] == "cinematic"))]
    rows = body_rows(make_table2(one))
    assert rows["lora_r8"][0] == "$0.412$ (n=1)"
    assert rows["lpips_r8"][1] == "--"


def test_table2_bolds_the_higher_mean_for_a_higher_is_better_metric(metrics, monkeypatch):
    monkeypatch.setitem(results.METRICS, "clip_sim", Metric(label="CLIP-SIM", direction="higher", decimals=3,
                                                            unit="cosine"))
    both = metrics.assign(metric="clip_sim")
    table = make_table2(pd.concat([metrics, both], ignore_index=True), metric_names=("lpips", "clip_sim"))
    rows = body_rows(table)
    assert "CLIP-SIM $\\uparrow$" in table
    # Same numbers, opposite direction: the other method wins each clip_sim column.
    lpips_winner = [exp for exp, cells in rows.items() if r"\mathbf" in cells[0]]
    clip_sim_winner = [exp for exp, cells in rows.items() if r"\mathbf" in cells[1]]
    assert len(lpips_winner) == len(clip_sim_winner) == 1 and lpips_winner != clip_sim_winner


def test_table2_without_rows_for_its_metrics_says_so(metrics):
    with pytest.raises(ValueError, match="no clean rows"):
        make_table2(metrics.assign(condition="attacked"))


def test_table2_main_without_results_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="<experiment>/<profile>/metrics.csv"):
        main(tmp_path, tmp_path / "table2.tex")


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
