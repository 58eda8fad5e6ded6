"""The CLI, the experiment folders and the committed results that `make table2` reads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cinelora.cli import build_parser, main
from cinelora.config import config_hash, load_config

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("data", "train", "generate", "evaluate", "run", "report", "rlpips-train", "rlpips-eval")
EXPERIMENTS = ("base", "lora_r8")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "python -m cinelora " + command in capsys.readouterr().out


def test_dry_run_prints_resolved_config_and_hash(capsys):
    path = ROOT / "experiments" / "lora_r8" / "config.yaml"
    with pytest.raises(SystemExit):
        main(["run", "--config", str(path), "--profile", "smoke", "--dry-run"])
    out = capsys.readouterr().out
    assert f"# sha256: {config_hash(load_config(path, 'smoke'))}" in out and "profile: smoke" in out


def test_seed_option_replaces_the_configs_seed_for_generator_experiments_only(capsys):
    path = ROOT / "experiments" / "lora_r8" / "config.yaml"
    with pytest.raises(SystemExit):
        main(["run", "--config", str(path), "--profile", "smoke", "--seed", "2", "--dry-run"])
    seeded = capsys.readouterr().out
    assert "\nseed: 2\n" in seeded and config_hash(load_config(path, "smoke")) not in seeded
    with pytest.raises(SystemExit, match="kind 'metric'; only generator experiments take --seed"):
        main(["run", "--config", str(ROOT / "experiments" / "rlpips_metric" / "config.yaml"), "--seed", "1"])
    with pytest.raises(SystemExit, match="--seed -1: expected a seed >= 0"):
        main(["run", "--config", str(path), "--seed", "-1", "--dry-run"])


def test_dry_run_resolves_without_importing_torch_and_takes_a_hardware_preset():
    code = ("import sys\nfrom cinelora.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    args = ["run", "--config", "experiments/robust_lpips_r8/config.yaml", "--profile", "full", "--hardware",
            "h200-141gb", "--dry-run"]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.rstrip().endswith("no torch")
    assert "hardware: h200-141gb" in done.stdout and "keep_ffn_blocks: 40" in done.stdout


def test_a_command_given_the_other_kind_of_config_says_so():
    with pytest.raises(SystemExit, match="takes a `kind: metric` config"):
        main(["rlpips-train", "--config", str(ROOT / "experiments" / "lora_r8" / "config.yaml")])


def test_bad_config_stops_before_work_with_the_key(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text((ROOT / "experiments" / "lora_r8" / "config.yaml").read_text().replace("rank: 8", "rnak: 8"))
    with pytest.raises(SystemExit, match=r"lora\.rnak"):
        main(["train", "--config", str(bad), "--profile", "smoke"])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_run_script_is_thin_and_uses_its_folder_and_profile(name):
    script = ROOT / "experiments" / name / "run.sh"
    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert f"--config experiments/{name}/config.yaml" in text and '"${PROFILE:-smoke}"' in text
    assert "/raid" not in text and "CUDA_VISIBLE_DEVICES" not in text


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_committed_smoke_results_match_the_frozen_config(name):
    out = ROOT / "results" / name / "smoke"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config_sha256"] == config_hash(load_config(ROOT / "experiments" / name / "config.yaml", "smoke"))
    assert (out / "config.sha256").read_text().strip() == prov["config_sha256"]
    assert (out / "metrics.csv").read_text().startswith("experiment,profile,seed,domain,clip,condition,metric,value")


def test_table2_rebuilds_byte_for_byte(tmp_path):
    out = tmp_path / "table2.tex"
    subprocess.run([sys.executable, "-m", "cinelora", "report", "table2", "--out", str(out)], cwd=ROOT, check=True)
    assert out.read_bytes() == (ROOT / "paper" / "tables" / "table2.tex").read_bytes()
    assert "\\input{tables/table2}" in (ROOT / "paper" / "main.tex").read_text()


def test_make_rebuilds_table2_when_a_results_file_changes():
    dry = subprocess.run(["make", "-n", "-W", "results/lora_r8/smoke/metrics.csv", "paper/tables/table2.tex"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "cinelora report table2" in dry


def test_full_profile_without_inputs_stops_before_work_listing_everything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        main(["run", "--config", str(ROOT / "experiments" / "robust_lpips_r8" / "config.yaml"), "--profile", "full"])
    message = str(err.value)
    for missing in ("data.train", "eval.domains.actors", "perceptual.heads", "eval.i3d_weights", "eval.clip_model"):
        assert missing in message
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_a_malformed_commit_id_stops_before_work(tmp_path, monkeypatch):
    from cinelora import provenance, runner

    monkeypatch.setenv(provenance.GIT_SHA_VARIABLE, "9631265")  # a short id: provenance needs all 40 digits
    monkeypatch.setattr(runner, "run_experiment", lambda *a, **k: pytest.fail("the run started"))
    with pytest.raises(SystemExit, match="CINELORA_GIT_SHA='9631265': expected a 40-character"):
        main(["run", "--config", str(ROOT / "experiments" / "lora_r8" / "config.yaml"), "--results-root",
              str(tmp_path / "r")])


def test_a_full_or_read_only_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import errno

    from cinelora import atomic

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "open", full_disk)
    out = tmp_path / "tables" / "table2.tex"
    with pytest.raises(SystemExit) as err:
        main(["report", "table2", "--out", str(out)])
    assert str(err.value) == f"cannot write {out}: No space left on device"
    assert not out.exists() and not list(out.parent.iterdir())  # no temporary left behind


def test_skip_finished_keeps_a_finished_seed_run_and_does_no_work(tmp_path, monkeypatch, capsys):
    from cinelora import rundir, runner

    monkeypatch.setattr(rundir, "_roots", list(rundir._roots))  # --results-root sets them for the process
    monkeypatch.setattr(runner, "run_experiment", lambda *a, **k: pytest.fail("a finished run was run again"))
    finished = tmp_path / "r" / "lora_r8" / "smoke" / "seed1"
    finished.mkdir(parents=True)
    (finished / "provenance.json").write_text("{}")
    args = ["run", "--config", str(ROOT / "experiments" / "lora_r8" / "config.yaml"), "--results-root",
            str(tmp_path / "r"), "--skip-finished"]
    main(args + ["--seed", "1"])
    assert f"lora_r8 seed 1: finished ({finished}), kept" in capsys.readouterr().out
    ran = []
    monkeypatch.setattr(runner, "run_experiment", lambda cfg, *a, **k: ran.append(cfg.seed))
    main(args + ["--seed", "2"])  # not finished: it runs
    assert ran == [2]
