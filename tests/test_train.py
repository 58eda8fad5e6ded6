"""The training loop at smoke scale: only LoRA weights change, a killed run resumes to the same LoRA,
a non-finite loss stops with the last checkpoint intact, early stopping keeps the best LoRA."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cinelora import flow_matching, lora, models, objective, train
from cinelora.checkpoint import latest_checkpoint, load_checkpoint
from cinelora.data.videos import VideoClipDataset
from cinelora.rundir import ConfigChangedError, RunDir

@pytest.fixture(scope="module")
def cfg(tiny_world):
    base = tiny_world("lora_r8", ["cinematic"], {"train": 3, "val": 1})
    tr = dataclasses.replace(base.train, steps=4, grad_accum=2, val_every=2, val_batches=1, checkpoint_every=2,
                             log_every=1, early_stop_patience=0)
    return dataclasses.replace(base, train=tr)


def _run(cfg, tmp: Path) -> train.TrainResult:
    return train.train(cfg, RunDir(tmp / "out", tmp / "state"), progress=False)


def test_one_step_changes_only_lora_weights(cfg):
    c = models.build_components(cfg.model, seed=cfg.seed)
    lora.attach_lora(c.transformer, cfg.lora)
    before = {k: v.clone() for k, v in c.transformer.state_dict().items()}
    batch = train._collate([VideoClipDataset(cfg.data.train, cfg.data.height, cfg.data.width,
                                                   cfg.data.num_frames)[0]])
    inputs = objective.encode_batch(c, batch, torch.device("cpu"), torch.float32)
    sigmas, noise = objective.draw_noise(0, "noise", 0, inputs["latents"], cfg.model.flow_shift)
    opt = torch.optim.AdamW(lora.lora_parameters(c.transformer), lr=1e-2)
    objective.objective(c.transformer, c, inputs, sigmas, noise, None, 0.0)[0].backward()
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
        if latest_checkpoint(tmp_path / "b" / "state" / "checkpoints") is not None:
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
        return loss * float("nan") if latest_checkpoint(tmp_path / "state" / "checkpoints") is not None else loss

    monkeypatch.setattr(flow_matching, "flow_matching_loss", nan_after_first_checkpoint)
    with pytest.raises(train.NonFiniteLossError, match=r"step 3.*step_0000002"):
        _run(cfg, tmp_path)
    state, lora_sd, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "state" / "checkpoints"))
    assert state.step == 2 and all(torch.isfinite(v).all() for v in lora_sd.values())


def test_a_checkpoint_save_killed_midway_is_ignored_and_the_run_resumes_from_the_one_before(cfg, tmp_path,
                                                                                         monkeypatch):
    reference = _run(cfg, tmp_path / "a")
    real_write = Path.write_text

    def killed_writing_the_second_state(self, text, *args, **kwargs):
        if self.name == "state.json" and "step_0000004" in str(self.parent):
            real_write(self, "")  # the process dies while writing the trainer state: an empty file
            raise KeyboardInterrupt
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed_writing_the_second_state)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path / "b")
    monkeypatch.setattr(Path, "write_text", real_write)
    checkpoints = tmp_path / "b" / "state" / "checkpoints"
    torn = checkpoints / ".step_0000004.tmp-killed"  # what SIGKILL leaves (the save's own cleanup never ran)
    torn.mkdir()
    (torn / "state.json").write_text("")
    assert latest_checkpoint(checkpoints).name == "step_0000002" and not torn.exists()
    resumed = _run(cfg, tmp_path / "b")
    a = load_file(reference.lora_dir / "pytorch_lora_weights.safetensors")
    b = load_file(resumed.lora_dir / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_finite_gradient_with_a_finite_loss_stops_before_the_step(cfg, tmp_path, monkeypatch):
    real_clip = train.Accelerator.clip_grad_norm_

    def nan_after_first_checkpoint(self, parameters, max_norm):
        parameters = list(parameters)
        if latest_checkpoint(tmp_path / "state" / "checkpoints") is not None:
            for p in parameters:
                p.grad.fill_(float("nan"))
        return real_clip(self, parameters, max_norm)

    monkeypatch.setattr(train.Accelerator, "clip_grad_norm_", nan_after_first_checkpoint)
    with pytest.raises(train.NonFiniteLossError, match=r"gradient norm.*step 3.*step_0000002"):
        _run(cfg, tmp_path)
    state, lora_sd, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "state" / "checkpoints"))
    assert state.step == 2 and all(torch.isfinite(v).all() for v in lora_sd.values())
    monkeypatch.setattr(train.Accelerator, "clip_grad_norm_", real_clip)
    assert _run(cfg, tmp_path).steps == 4  # resumable: the rerun finishes from step 2


def test_a_checkpoint_resumes_only_under_the_config_it_was_made_with(cfg, tmp_path):
    _run(cfg, tmp_path)
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr * 10, steps=6))
    with pytest.raises(ConfigChangedError, match="step_0000004 was made with config"):
        _run(changed, tmp_path)


def test_early_stopping_keeps_the_best_lora(cfg, tmp_path):
    strict = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, early_stop_patience=1,
                                                                early_stop_min_delta=1e9, steps=8))
    result = _run(strict, tmp_path)
    assert result.stopped_early and result.steps == 4 and result.best_step == 2
    best = load_checkpoint(latest_checkpoint(tmp_path / "state" / "checkpoints"))[3]
    saved = load_file(result.lora_dir / "pytorch_lora_weights.safetensors")
    assert len(best) == len(saved)
    assert sorted(torch.cat([v.flatten() for v in best.values()]).tolist()) == \
        sorted(torch.cat([v.flatten() for v in saved.values()]).tolist())


def _components_and_inputs(cfg):
    c = models.build_components(cfg.model, seed=cfg.seed)
    lora.attach_lora(c.transformer, cfg.lora)
    batch = train._collate([VideoClipDataset(cfg.data.train, cfg.data.height, cfg.data.width,
                                                   cfg.data.num_frames)[0]])
    inputs = objective.encode_batch(c, batch, torch.device("cpu"), torch.float32)
    sigmas, noise = objective.draw_noise(0, "noise", 0, inputs["latents"], cfg.model.flow_shift)
    return c, inputs, sigmas, noise


def _with(cfg, **sections):
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


def test_perceptual_loss_sends_gradients_into_the_lora_only(cfg):
    cfg = _with(cfg, perceptual={"enabled": True, "backbone": "random", "weight": 1.0, "frames": 2})
    c, inputs, sigmas, noise = _components_and_inputs(cfg)
    distance = objective.PerceptualDistance(cfg.perceptual, cfg.seed, torch.device("cpu"))
    loss, terms = objective.objective(c.transformer, c, inputs, sigmas, noise, distance, 1.0)
    terms["perceptual"].backward()  # the perceptual term alone
    named = dict(c.transformer.named_parameters())
    assert all(p.grad is None for n, p in named.items() if "lora_" not in n)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in named.items() if "lora_B" in n)
    assert all(p.grad is None for p in distance.model.parameters()) and all(p.grad is None for p in c.vae.parameters())


def test_adversarial_conditioning_touches_no_parameter_state(cfg):
    cfg = _with(cfg, adversarial={"enabled": True, "eps_255": 8.0, "step_255": 4.0, "steps": 2})
    c, inputs, sigmas, noise = _components_and_inputs(cfg)
    opt = torch.optim.AdamW(lora.lora_parameters(c.transformer), lr=1e-3)
    loss_clean, _ = objective.objective(c.transformer, c, inputs, sigmas, noise, None, 0.0)
    adv = objective.attack_condition(c.transformer, c, inputs, sigmas, noise, cfg.adversarial)
    assert all(p.grad is None for p in c.transformer.parameters()) and not opt.state  # the attack left no trace
    assert (adv - inputs["first"]).abs().max() <= 2 * 8 / 255 + 1e-6 and adv.min() >= -1 and adv.max() <= 1
    condition, image = objective.encode_condition(c, adv, inputs["video"].shape[2], torch.float32)
    attacked = {**inputs, "condition": condition, "image": image}
    assert objective.objective(c.transformer, c, attacked, sigmas, noise, None, 0.0)[0].item() > loss_clean.item()
    loss, terms = objective.TrainingObjective(cfg, c, None)(c.transformer, c.transformer, inputs, sigmas, noise)
    loss.backward()
    opt.step()
    lora_ids = {id(p) for p in lora.lora_parameters(c.transformer)}
    assert {id(p) for p in opt.state} <= lora_ids
    assert all(p.grad is None for n, p in c.transformer.named_parameters() if "lora_" not in n)
    assert "adversarial" in terms


def test_early_stopping_stops_at_the_right_step_on_a_scripted_sequence():
    state = train.TrainerState()
    values = [1.0, 0.9, 0.95, 0.891, 0.93, 0.94, 0.5]
    stopped_at = None
    for step, value in enumerate(values, start=1):
        train.early_stop_update(state, value, step, patience=2, min_delta=0.005)
        if state.stopped_early:
            stopped_at = step
            break
    assert stopped_at == 6 and state.best_step == 4 and state.best_val == 0.891


def test_training_with_every_term_runs_and_logs_them(cfg, tmp_path):
    full = _with(cfg, perceptual={"enabled": True, "backbone": "random", "frames": 2},
                 adversarial={"enabled": True, "steps": 1, "clean_weight": 0.5},
                 train={"steps": 2, "early_stop_metric": "perceptual", "batch_size": 2,
                        "grad_accum": 1})
    result = _run(full, tmp_path)
    log = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert result.steps == 2 and {"flow", "perceptual", "adversarial", "clean", "val_perceptual"} <= log[-1].keys()
    assert result.val_metric == "val_perceptual" and result.best_val == min(r["val_perceptual"] for r in log
                                                                             if "val_perceptual" in r)
