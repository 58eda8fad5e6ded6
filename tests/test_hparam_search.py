"""The hyperparameter search (`kind: search`, cinelora.hparam_search): points trained on validation clips only, one
row per point, the argmin chosen, a rerun continuing, a bad spec refused before any work; and how a chosen value
reaches the proxy profile without overwriting the ablations that vary it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from cinelora import cli, config, hparam_search, rundir, runner
from cinelora.config import ConfigError, SearchStageConfig, config_diff, load_config, profile_choices

ROOT = Path(__file__).resolve().parents[1]
SPEC = "experiments/search/config.yaml"
STAGES = [  # two stages on the plain LoRA: the second trains with the first's lr and steps
    {"name": "lr", "experiment": "lora_r8", "criterion": "val_perceptual", "choose_steps": True,
     "grid": {"lr": {"train.lr": [1.0e-4, 1.0e-3]}}},
    {"name": "weight", "experiment": "lora_r8", "criterion": "val_perceptual", "choose_steps": False,
     "grid": {"lam": {"perceptual.weight": [0.1, 0.3]}}},
]


@pytest.fixture
def family(tmp_path, monkeypatch):
    """tmp_path as the repository root: experiments/lora_r8 (a copy, no TensorBoard), experiments/search, and
    configs/ whose smoke profile trains 2 steps, validating at each, on one domain of 2 + 1 (+ 1 test) clips."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    smoke = tmp_path / "configs" / "profiles" / "smoke.yaml"
    raw = yaml.safe_load(smoke.read_text())
    raw["generator"].update({"train.steps": 2, "train.val_every": 1, "train.val_batches": 1, "train.sample_clips": 0,
                             "world.domains": ["cinematic"], "world.splits": {"train": 2, "val": 1, "test": 1}})
    smoke.write_text(yaml.safe_dump(raw))
    lora = yaml.safe_load((ROOT / "experiments" / "lora_r8" / "config.yaml").read_text())
    lora["train"]["tensorboard"] = False
    (tmp_path / "experiments" / "lora_r8").mkdir(parents=True)
    (tmp_path / "experiments" / "lora_r8" / "config.yaml").write_text(yaml.safe_dump(lora))
    monkeypatch.setattr(config, "CONFIGS_ROOT", tmp_path / "configs")
    monkeypatch.setattr(rundir, "_roots", list(rundir._roots))  # the CLI's --results-root sets them per process
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_spec(stages: list[dict], **top) -> Path:
    path = Path(SPEC)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"kind": "search", "name": "search", "seed": 0, "stages": stages, **top},
                                   sort_keys=False))
    return path


def read_csv(path: Path) -> list[dict]:
    header, *rows = path.read_text().splitlines()
    return [dict(zip(header.split(","), row.split(","))) for row in rows]


def test_search_trains_on_validation_only_chooses_the_argmin_and_a_rerun_continues(family, monkeypatch, capsys):
    import cinelora.evaluate
    import cinelora.train

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a search evaluated something")

    write_spec(STAGES)
    read, trained = [], []
    clips, train = cinelora.train.training_clips, runner._train
    monkeypatch.setattr(cinelora.evaluate, "evaluate", no_evaluation)
    monkeypatch.setattr(runner, "_evaluate", no_evaluation)
    monkeypatch.setattr(cinelora.train, "training_clips", lambda d, source: read.append(source) or clips(d, source))
    monkeypatch.setattr(runner, "_train", lambda cfg, run: trained.append(
        (cfg.train.lr, cfg.perceptual.weight, cfg.train.steps)) or train(cfg, run))

    # first chunk: a budget spent at once still trains the chunk's first point, then stops
    cli.main(["run", "--config", SPEC, "--profile", "smoke", "--budget-minutes", "1e-9"])
    out = family / "results" / "search" / "smoke"
    assert len(trained) == 1 and not (out / "provenance.json").exists()
    assert len(read_csv(out / hparam_search.CSV)) == 1 and "Not chosen yet: 1 of 2" in (out / hparam_search.TABLE).read_text()
    first = out / hparam_search.POINTS / "lr" / "lr0.0001.json"
    stamp = first.stat().st_mtime_ns

    cli.main(["run", "--config", SPEC, "--profile", "smoke"])  # the rerun continues: the finished point is kept
    assert len(trained) == 4 and first.stat().st_mtime_ns == stamp
    assert json.loads((out / "chunks.json").read_text())["chunks"][0]["finished"] is False

    rows = read_csv(out / hparam_search.CSV)
    assert [(r["stage"], r["point"]) for r in rows] == [("lr", "lr0.0001"), ("lr", "lr0.001"),
                                                        ("weight", "lam0.1"), ("weight", "lam0.3")]
    for stage in ("lr", "weight"):
        mine = [r for r in rows if r["stage"] == stage]
        assert all(r["criterion"] == "val_perceptual" and r["status"] == "done" and r["score"] for r in mine)
        best = min(mine, key=lambda r: float(r["score"]))
        assert [r["chosen"] for r in mine] == ["1" if r is best else "0" for r in mine]
        for r in mine:  # the score: the validation value of the LoRA the run keeps, at its best step
            record = json.loads((out / hparam_search.POINTS / stage / f"{r['point']}.json").read_text())
            values = {v["step"]: v["val_perceptual"] for v in record["validations"]}
            assert list(values) == list(range(1, record["train"]["steps"] + 1))  # val_every 1
            assert float(r["score"]) == pytest.approx(values[int(r["best_step"])], abs=1e-6)
            assert float(r["score"]) == pytest.approx(float(r["val_perceptual_at_best"]), abs=1e-6)
            assert float(r["score"]) <= min(values.values()) + 1e-3  # train.early_stop_min_delta
            assert record["train"]["val_metric"] == "val_perceptual"
    lr = next(r for r in rows if r["stage"] == "lr" and r["chosen"] == "1")
    assert {(r["train.lr"], r["train.steps"]) for r in rows if r["stage"] == "weight"} == {
        (lr["train.lr"], lr["best_step"])}  # the second stage trains with the first's choice
    assert trained[2:] == [(float(lr["train.lr"]), w, int(lr["best_step"])) for w in (0.1, 0.3)]

    # training only, on the fine-tuning domain's train and validation clips
    world = Path("runs/world/smoke/cinematic")
    assert set(read) == {str(world / "train"), str(world / "val")}
    assert not list(family.rglob("metrics.csv")) and not list(family.rglob("generated"))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["experiment"] == "search" and prov["git"]["sha"] and prov["versions"]["torch"] and prov["device"]["cpu"]
    assert set(prov["extra"]["points"]) == {f"{r['stage']}/{r['point']}" for r in rows}
    assert prov["extra"]["chosen"]["lr"] == {"train.lr": float(lr["train.lr"]), "train.steps": int(lr["best_step"])}
    table = (out / hparam_search.TABLE).read_text()
    assert f"train.lr: {float(lr['train.lr'])!r}" in table and "experiments/lora_r8/config.yaml" in table

    capsys.readouterr()
    cli.main(["run", "--config", SPEC, "--profile", "smoke", "--skip-finished"])  # finished: kept, nothing trained
    assert len(trained) == 4 and "finished" in capsys.readouterr().out


def _record(point: str, best: float | None) -> dict:
    train = None if best is None else {"best_val": best, "best_step": 2, "steps": 4, "stopped_early": False}
    return {"point": point, "status": "diverged" if best is None else "done", "train": train}


def test_the_chosen_point_is_the_argmin_first_of_ties_never_a_diverged_one():
    records = [_record("a", 0.5), _record("b", None), _record("c", 0.2), _record("d", 0.2), _record("e", 0.3)]
    assert hparam_search.choose(records)["point"] == "c"
    assert hparam_search.choose([_record("a", None)]) is None
    stage = SearchStageConfig("lr", "lora_r8", "val_perceptual", True, {"lr": {"train.lr": [1e-4]}})
    assert hparam_search.outcome(stage, {**_record("c", 0.2), "grid": {"train.lr": 1e-4}}) == {
        "train.lr": 1e-4, "train.steps": 2}


def test_grid_points_are_the_product_of_axes_whose_keys_move_together():
    stage = SearchStageConfig("s", "robust_lpips_r8", "val_perceptual", False, {
        "lambda": {"perceptual.weight": [0.1, 1.0]},
        "eps": {"adversarial.eps_255": [2.0, 4.0], "adversarial.step_255": [0.5, 1.0]}})
    assert stage.points() == [
        ("lambda0.1_eps2", {"perceptual.weight": 0.1, "adversarial.eps_255": 2.0, "adversarial.step_255": 0.5}),
        ("lambda0.1_eps4", {"perceptual.weight": 0.1, "adversarial.eps_255": 4.0, "adversarial.step_255": 1.0}),
        ("lambda1_eps2", {"perceptual.weight": 1.0, "adversarial.eps_255": 2.0, "adversarial.step_255": 0.5}),
        ("lambda1_eps4", {"perceptual.weight": 1.0, "adversarial.eps_255": 4.0, "adversarial.step_255": 1.0})]


def _stage(**change) -> list[dict]:
    return [{**STAGES[0], **change}]


@pytest.mark.parametrize("stages, top, key", [
    (_stage(grdi={}), {}, "stages[0].grdi"),  # unknown key
    (_stage(grid={}), {}, "stages[0].grid"),  # empty grid
    (_stage(grid={"lr": {}}), {}, "stages[0].grid.lr"),  # an axis without keys
    (_stage(grid={"lr": {"train.lr": []}}), {}, "stages[0].grid.lr.train.lr"),  # no values
    (_stage(grid={"r": {"lora.rank": [4.0]}}), {}, "stages[0].grid.r.lora.rank"),  # not a searched key
    (_stage(grid={"lr": {"train.lr": [1e-4, 2.0]}}), {}, "stages[0].grid.lr.train.lr"),  # out of range at a point
    (_stage(grid={"e": {"adversarial.eps_255": [2.0, 4.0], "adversarial.step_255": [0.5]}}), {},
     "stages[0].grid.e.adversarial.step_255"),  # tied keys of unequal length
    (_stage(criterion="val_loss"), {}, "stages[0].criterion"),  # not lora_r8's early-stopping signal
    (_stage(experiment="nowhere"), {}, "stages[0].experiment"),
    ([STAGES[0], {**STAGES[1], "grid": STAGES[0]["grid"]}], {}, "stages[1].grid.lr.train.lr"),  # chosen twice
    ([STAGES[0], {**STAGES[1], "choose_steps": True}], {}, "stages[1].choose_steps"),
    ([STAGES[0], {**STAGES[0], "grid": STAGES[1]["grid"]}], {}, "stages[1].name"),
    ([], {}, "stages"),
    (STAGES, {"extra": 1}, "extra"),
])
def test_a_bad_spec_is_refused_naming_the_file_and_field(family, stages, top, key):
    path = write_spec(stages, **top)
    with pytest.raises(ConfigError) as err:
        load_config(path, "smoke")
    assert (err.value.source, err.value.key) == (str(path), key)


def test_a_bad_spec_stops_the_command_before_any_work(family):
    write_spec(_stage(grid={"lr": {"train.lr": [1e-4, 2.0]}}))
    with pytest.raises(SystemExit, match=r"experiments/search/config.yaml: key 'stages\[0\]\.grid\.lr\.train\.lr'"):
        cli.main(["run", "--config", SPEC, "--profile", "smoke"])
    assert not (family / "results").exists() and not (family / "runs").exists()


def test_the_search_exists_at_proxy_and_smoke_only_and_its_run_script_is_thin():
    spec = ROOT / "experiments" / "proxy_search" / "config.yaml"
    for profile in ("proxy", "smoke"):
        cfg = load_config(spec, profile)
        assert [s.experiment for s in cfg.stages] == ["lora_r8", "robust_lpips_r8"]
        assert sum(len(s.points()) for s in cfg.stages) == 10
    with pytest.raises(ConfigError, match="the seed's settings are the recipe"):
        load_config(spec, "full")
    script = ROOT / "experiments" / "proxy_search" / "run.sh"
    assert os.access(script, os.X_OK) and "--config experiments/proxy_search/config.yaml" in script.read_text()
    assert '"${PROFILE:-smoke}"' in script.read_text()


# --- how the chosen values reach the proxy profile ---------------------------------------------------------------

ABLATION_FAMILY = ("lora_r8", "robust_lpips_r8", "robust_lpips_r8_eps2", "robust_lpips_r8_eps4",
                   "robust_lpips_r8_eps8", "lpips_r8")
CHOICE = {"train.lr": 3.0e-4, "train.steps": 250, "perceptual.weight": 0.3, "adversarial.eps_255": 2.0,
          "adversarial.step_255": 0.5}


def test_a_copied_outcome_reaches_every_experiment_but_not_the_keys_an_ablation_varies(tmp_path):
    for name in ABLATION_FAMILY:
        (tmp_path / name).mkdir()
        shutil.copy(ROOT / "experiments" / name / "config.yaml", tmp_path / name / "config.yaml")
    root = tmp_path / "lora_r8" / "config.yaml"
    raw = yaml.safe_load(root.read_text())
    raw["profiles"]["proxy"] = CHOICE  # the search's outcome, copied into its one home
    root.write_text(yaml.safe_dump(raw))
    at = {name: {p: load_config(tmp_path / name / "config.yaml", p) for p in ("proxy", "full")}
          for name in ABLATION_FAMILY}
    main = at["robust_lpips_r8"]["proxy"]
    assert (main.train.lr, main.train.steps, main.perceptual.weight, main.adversarial.eps_255,
            main.adversarial.step_255) == tuple(CHOICE.values())
    assert at["lpips_r8"]["proxy"].perceptual.weight == 0.3  # LPIPS and R-LPIPS share λ
    for name, eps, step in (("robust_lpips_r8_eps2", 2.0, 0.5), ("robust_lpips_r8_eps4", 4.0, 1.0),
                            ("robust_lpips_r8_eps8", 8.0, 2.0)):
        cfg = at[name]["proxy"]
        assert (cfg.adversarial.eps_255, cfg.adversarial.step_255) == (eps, step), name  # the ablation's own ε
        assert (cfg.train.lr, cfg.perceptual.weight) == (3.0e-4, 0.3)  # but the chosen lr and λ
        changed = set(config_diff(main, cfg)) - {"name", "parent", "varies"}
        chosen = set(profile_choices(tmp_path / "robust_lpips_r8" / "config.yaml", "proxy"))
        assert changed <= set(cfg.varies) and set(cfg.varies) - changed <= chosen, name
    assert at["robust_lpips_r8_eps4"]["proxy"].varies == ["adversarial.eps_255", "adversarial.step_255"]
    assert at["robust_lpips_r8_eps4"]["full"].varies == []  # full: the main run's value, run again
    full = at["robust_lpips_r8"]["full"]
    assert (full.train.lr, full.train.steps, full.perceptual.weight, full.adversarial.eps_255) == (3e-5, 4000, 0.1, 4.0)
    before = load_config(tmp_path / "robust_lpips_r8" / "config.yaml", "proxy", choices=False)  # a search's start
    assert (before.train.lr, before.train.steps, before.perceptual.weight, before.adversarial.eps_255) == (
        3e-5, 400, 0.1, 4.0)


def test_a_shared_profile_file_may_not_choose_an_algorithm_key(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    proxy = tmp_path / "configs" / "profiles" / "proxy.yaml"
    proxy.write_text(proxy.read_text().replace("generator:\n", "generator:\n  adversarial.eps_255: 2.0\n", 1))
    monkeypatch.setattr(config, "CONFIGS_ROOT", tmp_path / "configs")
    with pytest.raises(ConfigError) as err:  # it would overwrite robust_lpips_r8_eps{1,2,4,8}'s own ε
        load_config(ROOT / "experiments" / "robust_lpips_r8" / "config.yaml", "proxy")
    assert (err.value.source, err.value.key) == (str(proxy), "generator.adversarial.eps_255")


def test_the_proxy_profile_carries_the_committed_search_outcome():
    spec = ROOT / "experiments" / "proxy_search" / "config.yaml"
    prov = ROOT / "results" / "proxy_search" / "proxy" / "provenance.json"
    if not prov.is_file():
        pytest.skip("the proxy search has not run yet")
    cfg = load_config(spec, "proxy")
    chosen = json.loads(prov.read_text())["extra"]["chosen"]
    for stage in cfg.stages:  # search.md says what to copy where
        now = profile_choices(config.stage_experiment(spec, stage), "proxy")
        assert {k: now.get(k) for k in chosen[stage.name]} == chosen[stage.name], stage.name
