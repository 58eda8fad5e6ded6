"""The training loop at smoke scale: only LoRA weights change, a killed run resumes to the same LoRA,
a non-finite loss stops with the last checkpoint intact, early stopping keeps the best LoRA."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cinelora import flow_matching, lora, models, train
from cinelora.checkpoint import latest_checkpoint, load_checkpoint
from cinelora.config import load_config
from cinelora.world import generate_world

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    base = load_config(ROOT / "experiments" / "lora_r8" / "config.yaml", "smoke")
    root = tmp_path_factory.mktemp("world")
    world = dataclasses.replace(base.world, root=str(root), domains=["cinematic"], splits={"train": 3, "val": 1})
    generate_world(world, progress=False)
    data = dataclasses.replace(base.data, train=str(root / "cinematic" / "train"), val=str(root / "cinematic" / "val"))
    tr = dataclasses.replace(base.train, steps=4, grad_accum=2, val_every=2, val_batches=1, checkpoint_every=2,
                             log_every=1, early_stop_patience=0)
    return dataclasses.replace(base, world=world, data=data, train=tr)


def _run(cfg, tmp: Path) -> train.TrainResult:
    return train.train(cfg, tmp / "out", tmp / "ckpt", progress=False)


def test_one_step_changes_only_lora_weights(cfg):
    c = models.build_components(cfg.model, seed=cfg.seed)
    lora.attach_lora(c.transformer, cfg.lora)
    before = {k: v.clone() for k, v in c.transformer.state_dict().items()}
    batch = train._collate([train.VideoClipDataset(cfg.data.train, cfg.data.height, cfg.data.width,
                                                   cfg.data.num_frames)[0]])
    inputs = train._encode_batch(c, batch, torch.device("cpu"), torch.float32)
    sigmas, noise = train._draw(0, "noise", 0, inputs["latents"], cfg.model.flow_shift)
    opt = torch.optim.AdamW(lora.lora_parameters(c.transformer), lr=1e-2)
    train._flow_loss(c.transformer, inputs, sigmas, noise).backward()
    opt.step()
    after = c.transformer.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)  # B starts at zero: the step moved it
    assert all(p.grad is None for n, p in c.transformer.named_parameters() if "lora_" not in n)


def test_killed_run_resumes_to_the_same_lora(cfg, tmp_path, monkeypatch):
    reference = _run(cfg, tmp_path / "a")
    real_loss = flow_matching.flow_matching_loss

    def killed_after_first_checkpoint(pred, target):
        if latest_checkpoint(tmp_path / "b" / "ckpt") is not None:
            raise KeyboardInterrupt  # the process dies mid-step 3
        return real_loss(pred, target)

    monkeypatch.setattr(flow_matching, "flow_matching_loss", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path / "b")
    monkeypatch.setattr(flow_matching, "flow_matching_loss", real_loss)
    resumed = _run(cfg, tmp_path / "b")

    a = load_file(reference.lora_dir / "pytorch_lora_weights.safetensors")
    b = load_file(resumed.lora_dir / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = (tmp_path / "a" / "out" / "train_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "out" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in log_a] == [json.loads(x)["loss"] for x in log_b]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(cfg, tmp_path, monkeypatch):
    real_loss = flow_matching.flow_matching_loss

    def nan_after_first_checkpoint(pred, target):
        loss = real_loss(pred, target)
        return loss * float("nan") if latest_checkpoint(tmp_path / "ckpt") is not None else loss

    monkeypatch.setattr(flow_matching, "flow_matching_loss", nan_after_first_checkpoint)
    with pytest.raises(train.NonFiniteLossError, match=r"step 3.*step_0000002"):
        _run(cfg, tmp_path)
    state, lora_sd, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "ckpt"))
    assert state.step == 2 and all(torch.isfinite(v).all() for v in lora_sd.values())


def test_early_stopping_keeps_the_best_lora(cfg, tmp_path):
    strict = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, early_stop_patience=1,
                                                                early_stop_min_delta=1e9, steps=8))
    result = _run(strict, tmp_path)
    assert result.stopped_early and result.steps == 4 and result.best_step == 2
    best = load_checkpoint(latest_checkpoint(tmp_path / "ckpt"))[3]
    saved = load_file(result.lora_dir / "pytorch_lora_weights.safetensors")
    assert len(best) == len(saved)
    assert sorted(torch.cat([v.flatten() for v in best.values()]).tolist()) == \
        sorted(torch.cat([v.flatten() for v in saved.values()]).tolist())
