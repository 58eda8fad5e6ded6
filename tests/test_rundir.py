"""The run folder's one owner (`cinelora.rundir`): claiming (refuse, resume, force), file names, atomic writes, the
resolved config."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import pytest
import yaml

from cinelora import atomic
from cinelora.atomic import atomic_directory, atomic_write_text
from cinelora.config import ExperimentConfig, config_hash
from cinelora.rundir import ConfigChangedError, ResultsExistError, RunDir, RunLockedError, claim, locked


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the runner's results/ and runs/ are relative to the working directory
    return tmp_path


def test_run_dir_is_experiment_then_profile_and_refuses_a_path_as_name(tmp_path):
    run = RunDir.of(ExperimentConfig(name="lora_r8", profile="proxy"), tmp_path / "results", tmp_path / "runs")
    assert (run.out, run.state) == (tmp_path / "results" / "lora_r8" / "proxy", tmp_path / "runs" / "lora_r8" / "proxy")
    assert run.stage("style").checkpoints == tmp_path / "runs" / "lora_r8" / "proxy" / "style" / "checkpoints"
    for name in ("", "a/b", ".."):
        with pytest.raises(ValueError, match="cannot name a results folder"):
            RunDir.of(ExperimentConfig(name=name))


def test_claim_refuses_a_finished_run_without_force(in_tmp):
    cfg = ExperimentConfig(name="lora_r8", profile="smoke")
    run = claim(cfg, force=False)
    run.metrics.write_text("kept")
    (run.out / "provenance.json").write_text("{}")
    with pytest.raises(ResultsExistError, match="--force"):
        claim(cfg, force=False)
    assert run.metrics.read_text() == "kept"


def test_force_reruns_beside_a_finished_run_and_replaces_it_only_when_finished(in_tmp):
    cfg = ExperimentConfig(name="run", profile="smoke")
    run = claim(cfg, force=False)
    run.metrics.write_text("old")
    run.finish(cfg, {}, {})
    run.checkpoints.mkdir(parents=True)
    rerun = claim(cfg, force=True)
    assert rerun.out != run.out and rerun.replaces == run.out and not run.state.exists()
    assert run.finished and run.metrics.read_text() == "old"  # a --force rerun killed now loses nothing
    assert RunDir.of(cfg) == rerun  # the same command again resumes the rerun
    assert RunDir.of(cfg).out.name.startswith(".")  # hidden: readers never take the rerun being built
    rerun.metrics.write_text("new")
    final = rerun.finish(cfg, {}, {})
    assert final == RunDir.of(cfg) == RunDir(run.out, run.state) and final.metrics.read_text() == "new"
    assert [p.name for p in run.out.parent.iterdir()] == ["smoke"]


def test_claim_reuses_an_unfinished_run(in_tmp):
    cfg = ExperimentConfig(name="run", profile="smoke")
    run = claim(cfg, force=False)
    run.append_log({"step": 1})
    claim(cfg, force=False)
    assert run.log.read_text() == '{"step":1}\n'


def test_log_appends_one_parsable_line_per_record_and_drops_a_redone_part(tmp_path):
    run = RunDir(tmp_path / "out", tmp_path / "state")
    for step in (1, 2, 3):
        run.append_log({"step": step, "loss": 1 / step})
    run.keep_log(lambda record: record["step"] <= 2)
    assert [json.loads(line) for line in run.log.read_text().splitlines()] == [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_atomic_write_that_fails_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "provenance.json"
    atomic_write_text(target, "old")

    def killed_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["provenance.json"]


def test_atomic_directory_killed_midway_leaves_the_old_folder_and_a_hidden_temporary_only(tmp_path):
    folder = tmp_path / "step_0000002"
    with atomic_directory(folder) as tmp:
        (tmp / "state.json").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(folder, overwrite=True) as tmp:
        (tmp / "state.json").write_text("")
        raise KeyboardInterrupt
    assert (folder / "state.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000002"]  # temporaries are hidden
    assert atomic._sibling(folder, "tmp").name.startswith(".")


def test_write_config_hash_matches_the_written_yaml(tmp_path):
    cfg = ExperimentConfig(name="lora_r8", profile="smoke", seed=3)
    RunDir(tmp_path, tmp_path / "state").write_config(cfg)
    resolved = yaml.safe_load((tmp_path / "config.resolved.yaml").read_text())
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()
    assert (tmp_path / "config.sha256").read_text() == hashlib.sha256(canonical).hexdigest() + "\n"
    assert resolved["seed"] == 3 and config_hash(cfg) == hashlib.sha256(canonical).hexdigest()


def test_resuming_with_a_changed_config_is_refused_naming_the_keys(in_tmp):
    cfg = ExperimentConfig(name="run", profile="smoke")
    claim(cfg, force=False).append_log({"step": 1})  # an unfinished run
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=1e-3))
    with pytest.raises(ConfigChangedError, match=r"changed: train\.lr 3e-05 -> 0\.001.*--force"):
        claim(changed, force=False)
    assert RunDir.of(cfg).log.is_file()  # nothing lost
    assert yaml.safe_load((RunDir.of(cfg).out / "config.resolved.yaml").read_text())["train"]["lr"] == 3e-5
    assert claim(changed, force=True).out.is_dir()  # --force starts it again
    assert not RunDir.of(cfg).log.exists()


def test_claim_removes_what_a_killed_writer_left(in_tmp):
    cfg = ExperimentConfig(name="run", profile="smoke")
    run = claim(cfg, force=False)
    (run.out / ".metrics.tmp-0a1b2c3d.csv").write_text("half")
    (run.out / "lora").mkdir()
    (run.out / "lora" / ".pytorch_lora_weights.tmp-0a1b2c3d.safetensors").write_bytes(b"")
    claim(cfg, force=False)
    assert not [p for p in run.out.rglob(".*") if p.is_file()]


def test_a_second_run_of_the_same_experiment_stops_naming_the_holder(in_tmp):
    cfg = ExperimentConfig(name="run", profile="smoke")
    with locked(cfg):
        with pytest.raises(RunLockedError, match=rf"results/run/smoke is in use by process {os.getpid()}"):
            with locked(cfg):
                pass
        with locked(ExperimentConfig(name="run", profile="proxy")):  # another profile is another run
            pass
    with locked(cfg):  # released
        pass
    assert not (in_tmp / "runs").exists() and not (in_tmp / "results").exists()  # nothing in the project


def test_a_further_seed_runs_in_its_own_folders_inside_and_beside_seed_0s(tmp_path):
    run = RunDir.of(ExperimentConfig(name="lora_r8", profile="proxy", seed=2), tmp_path / "results", tmp_path / "runs")
    assert run.out == tmp_path / "results" / "lora_r8" / "proxy" / "seed2"
    assert run.state == tmp_path / "runs" / "lora_r8" / "proxy-seed2"  # seed 0's --force clears its state alone
    from cinelora.rundir import RESULTS_ROOT
    assert run.committed == RESULTS_ROOT / "lora_r8" / "proxy" / "seed2"  # a rerun elsewhere compares with this


@pytest.mark.parametrize("finished", [True, False])
def test_rerunning_seed_0_keeps_the_other_seeds_runs(in_tmp, finished):
    seed0, seed1 = ExperimentConfig(name="run", profile="smoke"), ExperimentConfig(name="run", profile="smoke", seed=1)
    first = claim(seed1, force=False)
    first.metrics.write_text("seed 1")
    first.finish(seed1, {}, {})
    run = claim(seed0, force=False)
    run.metrics.write_text("old")
    if finished:
        run.finish(seed0, {}, {})
    rerun = claim(seed0, force=True)
    rerun.metrics.write_text("new")
    rerun.finish(seed0, {}, {})
    assert RunDir.of(seed0).metrics.read_text() == "new" and RunDir.of(seed1).metrics.read_text() == "seed 1"
    assert RunDir.of(seed1).finished and sorted(p.name for p in RunDir.of(seed0).out.iterdir()) == [
        "config.resolved.yaml", "config.sha256", "metrics.csv", "provenance.json", "seed1"]
