"""docs/performance.md: rebuilt from the committed results it is byte-identical to the committed file, it lists
every hardware preset value, its figures are the bench CSV rows formatted, and it cannot cite a withdrawn case or
explain a preset it has no reason for."""
import csv
import re
import shutil
from pathlib import Path

import pytest
import yaml

from cinelora import cli
from cinelora.report import performance

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
HARDWARE = REPO / "configs" / "hardware"
DOC = REPO / "docs" / "performance.md"


def _cells(doc: str, *first: str) -> list[list[str]]:
    """The table rows of `doc` whose leading cells are `first`, split into cells."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in doc.splitlines()
            if line.startswith("| ")]
    return [r for r in rows if r[:len(first)] == list(first)]


def _figures(label: str, case: str) -> dict[str, float]:
    with open(RESULTS / "bench" / f"steps_{label}.csv", newline="") as f:
        return {r["metric"]: float(r["value"]) for r in csv.DictReader(f) if r["case"] == case}


def test_the_doc_rebuilds_byte_for_byte_and_equals_the_committed_one(tmp_path):
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    performance.main(RESULTS, first)
    performance.main(RESULTS, second)
    assert first.read_bytes() == second.read_bytes() == DOC.read_bytes(), "run `make performance`"
    assert cli.REPORTS["performance"] == ("performance", "main", "docs/performance.md")


def test_every_preset_value_is_in_the_committed_doc():
    doc = DOC.read_text()
    header = next(r for r in _cells(doc, "Lever", "Default"))
    presets = sorted(HARDWARE.glob("*.yaml"))
    assert len(presets) >= 2
    for path in presets:
        column = header.index(f"`{path.stem}`")
        for key, value in yaml.safe_load(path.read_text()).items():
            lever = key.removeprefix("speed.")
            shown = "true" if value is True else "false" if value is False else str(value)
            (row,) = _cells(doc, f"`{lever}`")
            assert row[column] == f"`{shown}`", f"{path.name} {key}: {value!r}, the doc shows {row[column]}"


def test_figures_are_the_csv_rows_formatted():
    doc = DOC.read_text()
    baseline = _figures("h200-f", "baseline_720p")
    fastest = _figures("h200-f", performance.FFN_720)
    (row,) = {tuple(r) for r in _cells(doc, "h200-f", "H200", "`baseline_720p`")}
    assert row[4] == performance.seconds(baseline["s_per_step_median"])
    assert row[6] == performance.gib(baseline["peak_allocated_gib"])
    assert row[8] == performance.percent(baseline["mfu"])
    (row,) = {tuple(r) for r in _cells(doc, "h200-f", "H200", f"`{performance.FFN_720}`")}
    assert row[4] == performance.seconds(fastest["s_per_step_median"])
    assert row[5] == performance.times(baseline["s_per_step_median"] / fastest["s_per_step_median"])
    assert row[9] == f"{fastest['grad_norm_first_step']:.6f}"
    # a run without a baseline at the case's clip shows no speed-up rather than one against another run
    (row,) = {tuple(r) for r in _cells(doc, "h100-j", "H100 80GB HBM3", f"`{performance.PRESET_720}`")}
    assert row[5] == "—"


def _results_copy(tmp_path: Path) -> Path:
    shutil.copytree(RESULTS / "bench", tmp_path / "results" / "bench")
    return tmp_path / "results"


def test_a_changed_result_changes_the_doc(tmp_path):
    root = _results_copy(tmp_path)
    steps = root / "bench" / "steps_h200-f.csv"
    text = steps.read_text()
    old = _figures("h200-f", "baseline_720p")["s_per_step_median"]
    steps.write_text(text.replace(f"baseline_720p,81,720,1280,native,full,0,0,0,0,0,0,s_per_step_median,{old:.6f}",
                                  "baseline_720p,81,720,1280,native,full,0,0,0,0,0,0,s_per_step_median,60.000000"))
    performance.main(root, tmp_path / "doc.md")
    doc = (tmp_path / "doc.md").read_text()
    assert "where the plain step takes 60.00 s" in doc
    (row,) = {tuple(r) for r in _cells(doc, "h200-f", "H200", f"`{performance.FFN_720}`")}
    assert row[5] == performance.times(60.0 / _figures("h200-f", performance.FFN_720)["s_per_step_median"])


def test_citing_a_withdrawn_case_stops_the_build(tmp_path):
    root = _results_copy(tmp_path)
    with open(root / "bench" / "withdrawn.csv", "a") as f:
        f.write(f"h200-f,{performance.FFN_720},a test withdrew it\n")
    with pytest.raises(ValueError, match="withdrawn: a test withdrew it"):
        performance.main(root, tmp_path / "doc.md")


def test_the_presets_section_follows_the_preset_files(tmp_path):
    hardware = tmp_path / "hardware"
    hardware.mkdir()
    for path in HARDWARE.glob("*.yaml"):
        shutil.copy(path, hardware)
    h200 = hardware / "h200-141gb.yaml"
    h200.write_text(h200.read_text().replace("speed.keep_ffn_blocks: 40", "speed.keep_ffn_blocks: 36"))
    performance.main(RESULTS, tmp_path / "doc.md", hardware)
    doc = (tmp_path / "doc.md").read_text()
    (row,) = _cells(doc, "`keep_ffn_blocks`")
    assert row[-1] == "`36`"
    assert "Presets: `h100-80gb` `0` (default); `h200-141gb` `36`." in doc  # the lever section says so too
    section = doc.split("### `h200-141gb`")[1].split("## ")[0]
    assert "compile_keepffn36_keepattn40_offload40_fa4_720p" in section and performance.FFN_720 not in section
    (hardware / "a100-80gb.yaml").write_text("speed.compile_blocks: true\n")
    with pytest.raises(ValueError, match="a100-80gb.yaml has no reason"):
        performance.main(RESULTS, tmp_path / "doc.md", hardware)


def test_the_makefile_builds_and_checks_the_doc():
    makefile = (REPO / "Makefile").read_text()
    rule = next(line for line in makefile.splitlines() if line.startswith("$(PERFORMANCE):"))
    for need in ("$(BENCH_DOC)", "$(HARDWARE)", "$(R)/performance.py", "$(LIB)"):
        assert need in rule
    assert "cinelora report performance --out $@" in makefile
    assert re.search(r"^PERFORMANCE := \$\(DOCS\)/performance\.md$", makefile, re.M)
    assert "diff -u docs/performance.md $$tmp/docs/performance.md" in makefile
    assert "-m cinelora bench" not in makefile and "cinelora.bench" not in makefile
