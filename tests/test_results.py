"""The tidy metrics format and provenance (the run folder itself: test_runner.py)."""
from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from cinelora import provenance, results
from cinelora.config import ExperimentConfig, config_hash
from cinelora.provenance import collect_provenance, git_sha
from cinelora.results import METRIC_COLUMNS, METRICS, Metric, read_metrics, read_results, write_metrics

REPO = Path(__file__).resolve().parent.parent
HEADER = ",".join(METRIC_COLUMNS) + "\n"


def metric_row(**changes) -> dict:
    row = dict(experiment="lora_r8", profile="smoke", seed=0, domain="actors", clip="0000", condition="clean",
               metric="lpips", value=0.25)
    return row | changes


def test_write_metrics_rejects_a_missing_or_unexpected_column(tmp_path):
    row = metric_row()
    row["clip_id"] = row.pop("clip")
    with pytest.raises(ValueError, match=r"metrics row 0: .*missing \['clip'\], unexpected \['clip_id'\]"):
        write_metrics([row], tmp_path / "metrics.csv")
    assert not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize(("column", "bad"), [
    ("value", float("nan")), ("value", float("inf")), ("value", "0.3"), ("value", True),
    ("seed", -1), ("seed", 1.0), ("profile", "tiny"), ("condition", "noisy"), ("metric", "fid"), ("clip", ""),
])
def test_write_metrics_rejects_a_bad_value_naming_row_and_column(tmp_path, column, bad):
    rows = [metric_row(), metric_row(clip="0001") | {column: bad}]
    with pytest.raises(ValueError, match=rf"metrics row 1: column '{column}': found"):
        write_metrics(rows, tmp_path / "metrics.csv")


def test_write_metrics_rejects_a_duplicate_key(tmp_path):
    with pytest.raises(ValueError, match="duplicate key"):
        write_metrics([metric_row(value=0.1), metric_row(value=0.2)], tmp_path / "metrics.csv")


def test_write_metrics_sorts_by_every_key_and_fixes_the_float_format(tmp_path, monkeypatch):
    monkeypatch.setitem(METRICS, "clip_sim", Metric(label="CLIP-SIM", direction="higher", decimals=3, unit="cosine"))
    rows = [
        metric_row(seed=10, value=0.5),
        metric_row(domain="cinematic", value=1 / 3),
        metric_row(seed=2, clip="0010", value=2),
        metric_row(seed=2, clip="0002", metric="clip_sim", value=0.125),
        metric_row(seed=2, clip="0002", value=1e-9),
    ]
    path = tmp_path / "metrics.csv"
    write_metrics(rows, path)
    # seed sorts as a number (2 < 10), the rest as text; every value has exactly six decimals.
    assert path.read_text() == HEADER + (
        "lora_r8,smoke,0,cinematic,0000,clean,lpips,0.333333\n"
        "lora_r8,smoke,2,actors,0002,clean,clip_sim,0.125000\n"
        "lora_r8,smoke,2,actors,0002,clean,lpips,0.000000\n"
        "lora_r8,smoke,2,actors,0010,clean,lpips,2.000000\n"
        "lora_r8,smoke,10,actors,0000,clean,lpips,0.500000\n"
    )
    write_metrics(list(reversed(rows)), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == path.read_bytes()


def test_read_metrics_round_trips_types(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics([metric_row(clip="0007", value=0.125), metric_row(clip="nan", seed=3)], path)
    frame = read_metrics([path])
    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert frame["clip"].tolist() == ["0007", "nan"]  # ids stay text, never numbers or NaN
    assert frame["seed"].tolist() == [0, 3] and frame["value"].tolist() == [0.125, 0.25]


def test_read_metrics_names_the_file_with_a_wrong_header(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    write_metrics([metric_row()], good)
    bad.write_text(HEADER.replace("clip", "clip_id") + "lora_r8,smoke,0,actors,0000,clean,lpips,0.1\n")
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*header"):
        read_metrics([good, bad])


def test_read_metrics_names_the_file_with_a_non_finite_value(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + "lora_r8,smoke,0,actors,0000,clean,lpips,nan\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": line 2: column 'value': found nan"):
        read_metrics([path])


@pytest.mark.parametrize("line", ["lora_r8,smoke,0,actors,0000,clean,lpips,0.1,9",
                                  "lora_r8,smoke,0,actors,0000,clean,lpips"])
def test_read_metrics_names_the_line_with_a_wrong_field_count(tmp_path, line):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + "lora_r8,smoke,0,actors,0001,clean,lpips,0.1\n" + line + "\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": line 3: [79] fields, expected 8"):
        read_metrics([path])


def test_read_results_rejects_rows_filed_under_another_run(tmp_path):
    path = tmp_path / "lpips_r8" / "smoke" / "metrics.csv"
    path.parent.mkdir(parents=True)
    (path.parent / "provenance.json").write_text("{}")
    write_metrics([metric_row(experiment="lora_r8")], path)
    with pytest.raises(ValueError, match="folder says \\(.lpips_r8., .smoke., 0\\)"):
        read_results(tmp_path)


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_provenance_has_the_required_facts_and_nothing_identifying():
    cfg = ExperimentConfig(name="lora_r8", profile="smoke", seed=7)
    record = collect_provenance(cfg, phase_seconds={"train": 1.5, "eval": 0.25}, extra={"trainable_params": 12})
    assert {"experiment", "profile", "seed", "config_sha256", "git", "versions", "device", "determinism",
            "wall_seconds", "peak_memory", "extra"} <= set(record)
    assert (record["experiment"], record["profile"], record["seed"]) == ("lora_r8", "smoke", 7)
    assert record["config_sha256"] == config_hash(cfg)
    assert record["git"]["sha"] == git_sha() and re.fullmatch(r"[0-9a-f]{40}|unknown", record["git"]["sha"])
    assert record["versions"]["torch"] and record["versions"]["numpy"] and record["versions"]["python"]
    assert record["device"]["cpu"]
    assert isinstance(record["determinism"]["deterministic_algorithms"], bool)
    assert record["wall_seconds"] == {"phases": {"train": 1.5, "eval": 0.25}, "total": 1.75}
    assert record["peak_memory"]["cpu_max_rss_bytes"] > 2**20
    text = json.dumps(record)  # JSON-ready as it is
    assert socket.gethostname() not in text and str(Path.home()) not in text and str(REPO) not in text
    assert not [s for s in _strings(record) if os.path.isabs(s)]


def test_provenance_refuses_an_absolute_path_in_extra():
    with pytest.raises(ValueError, match="provenance key 'provenance.extra.weights'"):
        collect_provenance(ExperimentConfig(name="x"), phase_seconds={}, extra={"weights": str(REPO / "w.pt")})


def test_bench_provenance_names_the_commit_and_refuses_an_absolute_path():
    record = provenance.bench_provenance(1.23456, config="experiments/robust_lpips_r8/config.yaml")
    assert record["git"]["sha"] == git_sha() and record["wall_seconds"] == 1.235
    assert record["config"] == "experiments/robust_lpips_r8/config.yaml" and "torch" in record["versions"]
    with pytest.raises(ValueError, match="provenance key 'bench provenance.config'"):
        provenance.bench_provenance(1.0, config=str(REPO / "experiments"))


def test_schema_defines_exactly_the_registered_metrics_with_their_direction():
    schema = (REPO / "results" / "SCHEMA.md").read_text()
    section = schema.split("## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|.*\| (lower|higher) \| ([^|]+) \|$", section, flags=re.MULTILINE)
    assert {name: (direction, unit.strip()) for name, direction, unit in rows} == {
        name: (m.direction, m.unit) for name, m in METRICS.items()}
    for column in METRIC_COLUMNS:
        assert f"| `{column}` |" in schema
    assert set(results.CONDITIONS) <= set(re.findall(r"`(clean|attacked)`", schema))


def test_git_sha_named_in_the_environment_wins_over_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)  # a copy of the tree without .git
    monkeypatch.delenv(provenance.GIT_SHA_VARIABLE, raising=False)
    assert provenance.git_sha() == "unknown" and provenance.git_dirty() is None
    monkeypatch.setenv(provenance.GIT_SHA_VARIABLE, "ab" * 20)
    assert provenance.git_sha() == "ab" * 20 and provenance.git_dirty() is None
    monkeypatch.setattr(provenance, "REPO_ROOT", REPO)  # a checkout: the variable still names the commit
    assert provenance.git_sha() == "ab" * 20
    monkeypatch.setenv(provenance.GIT_SHA_VARIABLE, "main")
    with pytest.raises(ValueError, match="CINELORA_GIT_SHA='main'"):
        provenance.git_sha()


def test_read_results_leaves_out_an_unfinished_run_and_says_so(tmp_path, capsys):
    for name, finished in (("lora_r8", True), ("lpips_r8", False)):
        folder = tmp_path / name / "smoke"
        write_metrics([metric_row(experiment=name)], folder / "metrics.csv")
        if finished:
            (folder / "provenance.json").write_text("{}")
    rerun = tmp_path / "lora_r8" / ".smoke.replacing"  # a --force rerun being built beside the finished run
    write_metrics([metric_row(experiment="lora_r8", value=0.75)], rerun / "metrics.csv")
    (rerun / "provenance.json").write_text("{}")
    assert read_results(tmp_path)["experiment"].tolist() == ["lora_r8"]
    assert read_results(tmp_path)["value"].tolist() == [0.25]
    assert "lpips_r8/smoke: unfinished run (no provenance.json)" in capsys.readouterr().err


def test_read_results_reads_the_seed_folders_and_checks_their_seed(tmp_path):
    for seed in (0, 1, 2):
        folder = tmp_path / "lora_r8" / "smoke" / (f"seed{seed}" if seed else "")
        write_metrics([metric_row(seed=seed, value=0.1 * seed)], folder / "metrics.csv")
        (folder / "provenance.json").write_text("{}")
    assert read_results(tmp_path)["seed"].tolist() == [0, 1, 2]
    wrong = tmp_path / "lora_r8" / "smoke" / "seed3"
    write_metrics([metric_row(seed=1)], wrong / "metrics.csv")
    (wrong / "provenance.json").write_text("{}")
    with pytest.raises(ValueError, match=r"seed3/metrics.csv: rows name .*'smoke', 1\)\], but the folder says "
                                         r"\('lora_r8', 'smoke', 3\)"):
        read_results(tmp_path)
