"""experiments/proxy_base at smoke: the chunked run (stopped by its budget, then continued) writes a diffusers
folder that the `pretrained` source loads, a sidecar whose hashes are the files', and the evidence table."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json

import pytest
import torch
import yaml

from cinelora import models
from cinelora.config import ConfigError, load_config
from cinelora.instrument import base_model
from cinelora.instrument.loop import Deadline
from cinelora.rundir import ResultsExistError, RunDir, use_results_root
from cinelora.runner import CHUNKS, run_experiment

from conftest import ROOT

CONFIG = ROOT / "experiments" / "proxy_base" / "config.yaml"
WAN_LATENTS_MEAN_0 = -0.7571  # diffusers' AutoencoderKLWan default (Wan2.1's own statistics)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    use_results_root(tmp_path_factory.mktemp("results"))
    cfg = load_config(CONFIG, "smoke")
    run_experiment(cfg, str(CONFIG), False, budget_minutes=1e-9)  # the budget passes before the first step
    run = RunDir.of(cfg)
    assert not run.finished and not (run.out / base_model.MODEL_DIR).exists()
    run_experiment(cfg, str(CONFIG), False)  # the same command continues and finishes
    yield cfg, RunDir.of(cfg)
    use_results_root("results")


def test_the_folder_loads_through_the_pretrained_source(finished):
    cfg, run = finished
    c = models.build_components(base_model.pretrained_config(cfg, run), seed=cfg.seed)
    assert isinstance(c.transformer, models.WanTransformer3DModel)
    stats = c.vae.config.latents_mean
    assert len(stats) == 16 and stats[0] != WAN_LATENTS_MEAN_0  # the corpus's own latent statistics
    assert c.vae.dtype == torch.float32  # stored fp16, run fp32 as the pipeline runs the VAE
    assert c.scheduler.config.flow_shift == cfg.model.flow_shift
    logs = [json.loads(line) for line in (run.out / "transformer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "val" in r] == [0, 2, 3]


def test_the_sidecar_hashes_every_weight_file(finished):
    _, run = finished
    folder = run.out / base_model.MODEL_DIR
    sidecar = base_model.load_weights_sidecar(run)
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors"))
    assert sorted(sidecar["files"]) == on_disk and len(on_disk) == 4
    for name, entry in sidecar["files"].items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert sidecar["trained"]["vae"]["steps"] == 3 and sidecar["trained"]["transformer"]["steps"] == 3


def test_evidence_rows_and_chunks(finished):
    cfg, run = finished
    rows = list(csv.DictReader(open(run.out / "evidence.csv")))
    summary = base_model.summarize([{**r, "value": float(r["value"])} for r in rows])
    assert set(summary) == {"ground_truth", "vae_reconstruction", "generated", "repeat_first_frame", "random_init"}
    assert summary["ground_truth"]["frame0_mse"] == 0 and summary["repeat_first_frame"]["motion"] == 0
    assert summary["ground_truth"]["motion"] > 0
    assert len([r for r in rows if r["model"] == "generated" and r["metric"] == "mse"]) == cfg.evidence.clips
    assert (run.out / "evidence.png").is_file() and "| generated |" in (run.out / "evidence.md").read_text()
    assert [c["finished"] for c in run.read_json(CHUNKS)["chunks"]] == [False, True]
    with pytest.raises(ResultsExistError):
        run_experiment(cfg, str(CONFIG), False)


def test_the_vae_trains_with_the_perceptual_term(finished):
    cfg, run = finished
    assert cfg.vae.perceptual_weight > 0  # the experiment's weight, kept at smoke
    steps = [json.loads(line) for line in (run.out / "vae_log.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss" in r]
    assert steps and all(r["lpips"] > 0 for r in steps)
    assert all(r["loss"] > r["l1"] + cfg.vae.perceptual_weight * r["lpips"] - 1e-6 for r in steps)


def test_the_perceptual_term_scores_distinct_frames_of_each_clip():
    g = torch.Generator().manual_seed(0)
    frames = base_model._perceptual_frames(g, clips=3, frames=9, per_clip=4)
    assert frames.shape == (3, 4) and all(len(set(row.tolist())) == 4 for row in frames)
    assert int(frames.min()) >= 0 and int(frames.max()) < 9
    assert not torch.equal(frames, base_model._perceptual_frames(g, 3, 9, 4))  # drawn afresh each step
    assert base_model._perceptual_frames(g, 2, 5, 0).tolist() == [list(range(5))] * 2  # 0: every frame
    video = torch.arange(2 * 5).float().view(2, 1, 5, 1, 1).expand(2, 3, 5, 2, 2)  # value = clip * 5 + frame
    picked = base_model._pick_frames(video, torch.tensor([[4, 1], [0, 3]]))
    assert picked.shape == (4, 3, 2, 2) and picked[:, 0, 0, 0].tolist() == [4, 1, 5, 8]


def test_perceptual_term_on_frames_alexnet_cannot_take_is_refused(tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["vae"].update(crop_steps=10, crop_size=16)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="vae.perceptual_weight.*32 px"):
        load_config(config, "proxy")
    raw["vae"]["perceptual_weight"] = 0.0
    config.write_text(yaml.safe_dump(raw))
    assert load_config(config, "proxy").vae.crop_size == 16


def test_the_step_levers_leave_the_loss_as_it_is(tmp_path):
    """vae.channels_last changes the memory layout only; vae.compile is eager on a CPU: the same seeded batch gives
    the same loss."""
    cfg = load_config(CONFIG, "smoke")
    data = base_model.load_data(cfg, torch.device("cpu"), False, tmp_path)

    def loss(**lever) -> float:
        c = models.build_components(cfg.model, torch.device("cpu"), cfg.seed)
        return base_model.vae_step_loss(dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, **lever)),
                                        c.vae.float(), data)(0)[0].item()

    plain = loss()
    assert loss(compile="default") == plain
    assert loss(channels_last=True) == pytest.approx(plain, rel=1e-5)


def test_an_unknown_compile_mode_is_refused(tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["vae"]["compile"] = "fast"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="vae.compile"):
        load_config(config, "proxy")


def test_full_profile_is_refused():
    with pytest.raises(ConfigError, match="profile.*published weights"):
        load_config(CONFIG, "full")


def test_committed_proxy_weights_stay_within_the_clone_budget():
    """Issue 15: all proxy weights together <= 40 MB in git, each file <= 16 MiB (the device returns no more)."""
    files = sorted((ROOT / "results").glob("proxy_*/proxy/**/*.safetensors"))
    assert files  # the proxy weights are committed (the evaluators; the base model once it is trained)
    sizes = {str(f.relative_to(ROOT)): f.stat().st_size for f in files}
    assert all(size <= 16 * 2**20 for size in sizes.values()), sizes
    assert sum(sizes.values()) <= 40_000_000, sizes



def test_missing_evaluators_are_said_before_any_training(tmp_path):
    cfg = load_config(CONFIG, "smoke")
    cfg = dataclasses.replace(cfg, evidence=dataclasses.replace(
        cfg.evidence, i3d_weights=str(tmp_path / "i3d.safetensors"), lpips_heads=str(tmp_path / "heads.safetensors")))
    with pytest.raises(base_model.MissingEvaluatorsError, match="i3d_weights.*lpips_heads.*proxy_evaluators"):
        base_model.run_base_model(cfg, RunDir(tmp_path / "out", tmp_path / "state"), Deadline(None))
    assert not (tmp_path / "out").exists()  # nothing was rendered or trained


def test_a_chunk_stopped_after_the_evidence_has_nothing_left(finished, monkeypatch):
    cfg, run = finished
    monkeypatch.setattr(base_model, "load_data", lambda *a, **k: pytest.fail("the corpus was rendered again"))
    before = (run.out / "evidence.csv").read_bytes()
    assert base_model.run_base_model(cfg, run, Deadline(None))
    assert (run.out / "evidence.csv").read_bytes() == before


def test_the_committed_proxy_base_is_the_sidecars_and_loads_as_the_proxy_profile_does():
    """The weights the `proxy` profile loads are the ones the run recorded, through the `pretrained` source."""
    cfg = load_config(CONFIG, "proxy")
    run = RunDir(ROOT / "results" / "proxy_base" / "proxy", ROOT / "runs" / "unused")
    folder = run.out / base_model.MODEL_DIR
    for name, entry in base_model.load_weights_sidecar(run)["files"].items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest(), name
    generator = load_config(ROOT / "experiments" / "lora_r8" / "config.yaml", "proxy")
    assert generator.model.path == str(folder.relative_to(ROOT)) and generator.model.source == "pretrained"
    c = models.build_components(base_model.pretrained_config(cfg, run), seed=0)
    assert c.vae.config.latents_mean[0] != WAN_LATENTS_MEAN_0  # the corpus's statistics, not Wan2.1's
    assert sum(p.numel() for p in c.transformer.parameters()) > 7_000_000
