"""Table 1 (metric robustness) and the metric-vs-ε figure from a small committed results tree."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from cinelora.report import figures_metric
from cinelora.report.table1 import main, make_table1, parse_condition
from cinelora.results import read_results

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RESULTS = FIXTURES / "table1"  # rlpips_metric at proxy (2 seeds, 2 sets) and smoke (1 seed, no FGSM)
SNAPSHOT = FIXTURES / "table1_expected.tex"


@pytest.fixture(scope="module")
def metrics():
    return read_results(RESULTS)


def body(table: str) -> list[list[str]]:
    return [line[:-3].split(" & ") for line in table.splitlines() if re.match(r"^(\w+)? & (LPIPS|R-LPIPS) & ", line)]


def test_table1_matches_the_committed_snapshot_and_writes_the_same_bytes_twice(metrics, tmp_path):
    assert make_table1(metrics) == SNAPSHOT.read_text()
    out = tmp_path / "tables" / "table1.tex"
    main(RESULTS, out)
    first = out.read_bytes()
    main(RESULTS, out)
    assert out.read_bytes() == first == SNAPSHOT.read_bytes()


def test_table1_does_not_depend_on_row_order(metrics):
    assert make_table1(metrics.sample(frac=1.0, random_state=3).reset_index(drop=True)) == make_table1(metrics)


def test_table1_cells_are_percent_means_with_ci_and_bold_the_higher_score(metrics):
    rows = body(make_table1(metrics))
    proxy_traditional_rlpips = rows[1]
    values = metrics.query("profile == 'proxy' and domain == 'traditional' and metric == '2afc_rlpips' "
                           "and condition == 'pgd_eps8'")["value"]
    assert len(values) == 2 and proxy_traditional_rlpips[5] == rf"$\mathbf{{{values.mean() * 100:.1f} \pm 0.2}}$"
    assert rows[0][2].startswith(r"$\mathbf") and not rows[1][2].startswith(r"$\mathbf")  # clean: LPIPS higher
    assert all(not c.startswith(r"$\mathbf") for c in rows[0][3:])  # attacked: R-LPIPS higher everywhere
    smoke_lpips = rows[4]
    assert smoke_lpips[3] == "--" and smoke_lpips[2] == r"$\mathbf{77.1}$"  # no FGSM rows at smoke; one seed: no CI


def test_table1_header_orders_clean_fgsm_pgd_by_eps_and_caption_names_units_and_profiles(metrics):
    table = make_table1(metrics)
    assert "Set & Metric &  & 2 & 2 & 8 \\\\" in table
    assert r"\multicolumn{1}{c}{FGSM, $\epsilon \cdot 255$} & \multicolumn{2}{c}{PGD, $\epsilon \cdot 255$}" in table
    assert "pixel units of $[0, 1]$ images" in table and "$8/255$ in the metric's $[-1, 1]$ input range" in table
    assert "Profiles: proxy, smoke." in table and "not full-scale" in table and "not evidence" in table
    assert table.index("profile: proxy") < table.index("profile: smoke")
    full = make_table1(metrics.assign(profile="full").query("seed == 0 and domain == 'cnn'"))
    assert "Profiles: full." in full and "not full-scale" not in full and "BAPPS 2AFC sets" in full


def test_table1_without_2afc_rows_says_what_to_run(metrics):
    with pytest.raises(ValueError, match="rlpips_metric/run.sh"):
        make_table1(metrics[~metrics["metric"].str.startswith("2afc")])
    assert parse_condition("pgd_eps0.5") == ("pgd", 0.5) and parse_condition("clean") == ("clean", 0.0)
    with pytest.raises(ValueError, match="attacked"):
        parse_condition("attacked")


def test_metric_figure_is_byte_stable_embeds_fonts_and_shows_the_most_real_profile(metrics, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    pdf = tmp_path / "metric_vs_eps.pdf"
    figures_metric.main(RESULTS, pdf)
    first = pdf.read_bytes(), pdf.with_suffix(".png").read_bytes()
    figures_metric.main(RESULTS, pdf)
    assert (pdf.read_bytes(), pdf.with_suffix(".png").read_bytes()) == first
    assert b"/FontFile2" in first[0] and b"CreationDate" not in first[0] and first[1].startswith(b"\x89PNG")
    fig = figures_metric.make_metric_vs_eps(metrics)
    assert "proxy" in fig.get_suptitle()
    labels = sorted(line.get_label() for line in fig.axes[0].get_lines())
    assert labels == ["LPIPS, FGSM", "LPIPS, PGD", "R-LPIPS, FGSM", "R-LPIPS, PGD"]
    pgd = next(line for line in fig.axes[0].get_lines() if line.get_label() == "R-LPIPS, PGD")
    assert list(pgd.get_xdata()) == [0.0, 2.0, 8.0]  # the clean score sits at ε = 0
    plt.close(fig)
