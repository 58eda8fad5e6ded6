"""`cinelora.study`, the study's one home: its lists match experiments/ and the Makefile, it runs on the standard
library alone (Make calls it with the system python3), and its profile wording covers every profile."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cinelora import study
from cinelora.config import PROFILES, load_config

REPO = Path(__file__).resolve().parent.parent
MAKE_VARIABLES = {"METHODS": "methods", "ABLATIONS": "ablations", "EXPERIMENTS": "experiments",
                  "CURVES": "curve_experiments", "SEARCH": "search"}


def test_experiments_are_the_folders_under_experiments_and_every_ablation_follows_its_parent():
    named = study.EXPERIMENTS + study.INSTRUMENT + (study.SEARCH,)
    assert sorted(named) == sorted(p.name for p in (REPO / "experiments").iterdir() if p.is_dir())
    assert len(set(named)) == len(named)
    for name in study.INSTRUMENT:  # the instrument exists at proxy and smoke only, never as a study experiment
        kind = yaml.safe_load((REPO / "experiments" / name / "config.yaml").read_text())["kind"]
        assert kind in ("base_model", "evaluators"), (name, kind)
    assert yaml.safe_load((REPO / "experiments" / study.SEARCH / "config.yaml").read_text())["kind"] == "search"
    order = {name: i for i, name in enumerate(study.EXPERIMENTS)}
    for ablation in study.ABLATIONS:
        parent = yaml.safe_load((REPO / "experiments" / ablation / "config.yaml").read_text()).get("parent")
        assert parent in order and order[parent] < order[ablation], (ablation, parent)


def test_the_named_runs_are_among_the_experiments():
    assert {study.BASELINE, study.MAIN} <= set(study.METHODS)
    assert not set(study.METHODS) & set(study.ABLATIONS)
    assert set(study.CURVE_EXPERIMENTS) <= set(study.EXPERIMENTS)


def test_profile_text_covers_every_profile_and_names_its_architecture():
    assert tuple(study.PROFILE_TEXT) == PROFILES  # also the display order of Table 4's blocks
    for profile, text in study.PROFILE_TEXT.items():
        cfg = load_config(REPO / "experiments" / study.BASELINE / "config.yaml", profile)
        assert cfg.model.architecture == text.architecture, profile


def test_study_runs_on_the_standard_library_alone():
    # -S: no site-packages (the venv's included), as for the system python3 the Makefile calls
    for name, values in study.LISTS.items():
        done = subprocess.run([sys.executable, "-S", "-m", "cinelora.study", name], cwd=REPO, capture_output=True,
                              text=True, check=True)
        assert done.stdout.split() == list(values)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_makefile_reads_its_experiment_lists_from_the_study():
    makefile = (REPO / "Makefile").read_text()
    for variable, name in MAKE_VARIABLES.items():
        line = re.search(rf"^{variable}\s*:=(.*)$", makefile, re.M)[1]
        assert line.strip() == f"$(shell python3 -m cinelora.study {name})"
        done = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "print-%: ; @echo $($*)",
                               f"print-{variable}"], cwd=REPO, capture_output=True, text=True, check=True,
                              env={**os.environ, "MAKEFLAGS": ""})
        assert done.stdout.split() == list(study.LISTS[name])
