"""The R-LPIPS training-radius search: one result pair per ε, kept on a rerun, and the table of all of them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cinelora.config import load_config
from cinelora.metrics import rlpips_eps_search as search

from conftest import tiny_metric_config

REPO = Path(__file__).resolve().parent.parent


def test_proxy_trains_r_lpips_at_the_searched_radius_with_full_eps_steps():
    r = load_config(REPO / search.CONFIG, "proxy").rlpips
    assert r.attack_eps_255 == r.attack_step_255 == 2.0
    assert load_config(REPO / search.CONFIG, "full").rlpips.attack_eps_255 == 4.0  # the recipe's, untouched


def test_search_writes_one_pair_per_radius_keeps_them_and_tabulates(tmp_path, monkeypatch):
    config = tiny_metric_config(tmp_path, eval_eps_255=[1.0, 4.0])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / search.NAME / "smoke"
    with pytest.raises(FileNotFoundError, match="no eps"):
        search.summary_table(out)
    search.main(["--config", str(config), "--eps", "4", "0.5"])
    assert sorted(p.name for p in out.iterdir()) == ["eps0.5.csv", "eps0.5.json", "eps4.csv", "eps4.json",
                                                      search.TABLE]
    record = json.loads((out / "eps0.5.json").read_text())
    assert record["provenance"]["extra"]["train_attack"]["eps_255"] == 0.5 and len(record["epochs"]) == 1
    rows = (out / "eps0.5.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + 2 * 2 * 3 and all(",cnn,all," in line for line in rows[1:])
    table = (out / search.TABLE).read_text().splitlines()
    assert table[0].split(" | ")[1:4] == ["clean", "pgd_eps1", "pgd_eps4"]
    assert [line.split(" | ")[0] for line in table[2:]] == ["| 0.5", "| 4"]  # ascending radius
    stamp = (out / "eps4.csv").stat().st_mtime_ns
    search.main(["--config", str(config), "--eps", "4"])
    assert (out / "eps4.csv").stat().st_mtime_ns == stamp
