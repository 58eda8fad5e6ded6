"""The one loop that trains every part of the proxy instrument: AdamW, linear warm-up then cosine decay to 10%
of the rate, gradient clipping, a JSON-lines log, validation every `val_every` steps, and checkpoints.

Resumable and deterministic: a step's batch and noise come from `step_loss(step)`, which draws them from
generators seeded by the step index, so a run killed at any point (or stopped by its time budget) continues
from its last checkpoint with the numbers it would have had. Checkpoints store AdamW's moments in bf16 (half the
bytes, so a checkpoint of the proxy VAE travels between machines) and the run itself goes on from the rounded
moments, so a resumed run matches an uninterrupted one; only a checkpoint forced by the deadline rounds them at a
step an uninterrupted run would not. A non-finite loss or gradient norm stops the run
with the last good checkpoint intact (`NonFiniteLossError`).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cinelora.atomic import atomic_directory, atomic_write_text
from cinelora.config import PhaseConfig
from cinelora.train import NonFiniteLossError

KEEP_LAST = 2
MOMENTS = ("exp_avg", "exp_avg_sq")
MOMENT_DTYPE = torch.bfloat16
StepLoss = Callable[[int], tuple[torch.Tensor, dict[str, float]]]


class Deadline:
    """The wall-clock end of this chunk of work (`--budget-minutes`); None = no end."""

    def __init__(self, minutes: float | None):
        self.end = None if not minutes else time.monotonic() + 60.0 * minutes

    @property
    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


@dataclass
class FitResult:
    finished: bool  # False: stopped by the deadline, resumable
    step: int
    last_val: dict[str, float]


def learning_rate(phase: PhaseConfig, step: int) -> float:
    """The rate of optimizer step `step` (0-based)."""
    if step < phase.warmup_steps:
        return phase.lr * (step + 1) / phase.warmup_steps
    progress = (step - phase.warmup_steps) / max(1, phase.steps - phase.warmup_steps)
    return phase.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _latest(folder: Path) -> Path | None:
    for torn in folder.glob(".step_*"):
        shutil.rmtree(torn, ignore_errors=True)
    done = sorted(p for p in folder.glob("step_*") if (p / "state.json").is_file())
    return done[-1] if done else None


def _stored_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with its moments in MOMENT_DTYPE; the live moments are rounded to the same values
    (load_state_dict casts stored ones back to the parameters' dtype)."""
    stored = optimizer.state_dict()  # its per-parameter dicts are the live ones: replaced here, not changed
    for i, live in stored["state"].items():
        low = {k: live[k].to(MOMENT_DTYPE) for k in MOMENTS}
        for k, v in low.items():
            live[k].copy_(v)
        stored["state"][i] = {**live, **low}
    return stored


def _save(folder: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    with atomic_directory(folder / f"step_{step:07d}", overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  tmp / "model.safetensors")
        torch.save(_stored_optimizer_state(optimizer), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step}))
    for old in sorted(folder.glob("step_*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)


def _resume(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    last = _latest(folder) if folder.is_dir() else None
    if last is None:
        return 0
    device = next(model.parameters()).device
    model.load_state_dict(load_file(last / "model.safetensors", device=str(device)))
    optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location=device, weights_only=True))
    return json.loads((last / "state.json").read_text())["step"]


def _keep_log(log: Path, step: int) -> None:
    """Drop the log records after checkpoint `step` (all of them when starting afresh): a resumed run writes
    them again."""
    if log.is_file():
        lines = [line for line in log.read_text().splitlines() if line and step and json.loads(line)["step"] <= step]
        atomic_write_text(log, "".join(line + "\n" for line in lines))


def fit(name: str, model: torch.nn.Module, step_loss: StepLoss, validate: Callable[[], dict[str, float]],
        phase: PhaseConfig, checkpoints: Path, log: Path, deadline: Deadline, progress: bool = True) -> FitResult:
    """Train `model`'s parameters that require grad for `phase.steps` steps, or until `deadline` (then
    checkpointed, resumable); log lines {"step", "loss", terms, "lr", "grad_norm"} and {"step", "val": {...}}."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=phase.lr, betas=(0.9, 0.99), weight_decay=phase.weight_decay)
    step = _resume(checkpoints, model, optimizer)
    _keep_log(log, step)
    log.parent.mkdir(parents=True, exist_ok=True)
    last_val: dict[str, float] = {}

    def write(record: dict) -> None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def validation() -> None:
        nonlocal last_val
        model.eval()
        with torch.no_grad():
            last_val = validate()
        model.train()
        write({"step": step, "val": last_val})
        bar.set_postfix({k: f"{v:.4g}" for k, v in last_val.items()})

    model.train()
    with tqdm(total=phase.steps, initial=step, desc=name, unit="step", disable=not progress) as bar:
        if step == 0:
            validation()
        started, started_step = time.monotonic(), step
        while step < phase.steps:
            if deadline.passed:
                _save(checkpoints, step, model, optimizer)
                tqdm.write(f"{name}: time budget reached at step {step}/{phase.steps}; checkpoint saved, "
                           "run the same command again to continue")
                return FitResult(False, step, last_val)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(phase, step)
            loss, terms = step_loss(step)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"{name}: loss {loss.item()} at step {step}; the last good checkpoint "
                                         f"in {checkpoints} is intact")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, phase.max_grad_norm)
            if not torch.isfinite(grad_norm):
                raise NonFiniteLossError(f"{name}: gradient norm {grad_norm.item()} at step {step}; the last good "
                                         f"checkpoint in {checkpoints} is intact")
            optimizer.step()
            step += 1
            bar.update(1)
            if step % phase.log_every == 0 or step == phase.steps:
                seconds = (time.monotonic() - started) / (step - started_step)
                write({"step": step, "loss": loss.item(), **terms, "lr": learning_rate(phase, step - 1),
                       "grad_norm": grad_norm.item(), "s_per_step": round(seconds, 5)})
            if step % phase.val_every == 0 or step == phase.steps:
                validation()
            if step % phase.checkpoint_every == 0 and step < phase.steps:
                _save(checkpoints, step, model, optimizer)
    model.eval()
    return FitResult(True, step, last_val)


def read_log(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line] if log.is_file() else []


def final_record(log: Path) -> dict:
    """What a weight file's sidecar says of its training: steps, last loss, last validation, seconds per step."""
    records = read_log(log)
    last_val = next((r for r in reversed(records) if "val" in r), {})
    last_step = next((r for r in reversed(records) if "loss" in r), {})
    return {"steps": last_step.get("step"), "final_loss": last_step.get("loss"), "final_val": last_val.get("val"),
            "s_per_step": last_step.get("s_per_step")}


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def training_device() -> torch.device:
    """Where the instrument trains: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["Deadline", "FitResult", "fit", "learning_rate", "read_log", "final_record", "sha256_file", "training_device",
           "StepLoss"]
