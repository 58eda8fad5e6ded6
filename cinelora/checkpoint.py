"""Resumable training checkpoints: LoRA weights (safetensors), optimizer state (torch.save, read back with
weights_only=True), and a JSON trainer state. A checkpoint folder is written under a hidden temporary name and
renamed (`atomic_directory`), so a run killed while saving leaves the previous checkpoint intact.

Everything is stored whole and keyed by parameter name (the optimizer state is torch.distributed.checkpoint's
full state dict), so a run resumes under any number of processes, with or without FSDP2 sharding."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cinelora.atomic import atomic_directory

KEEP_LAST = 2


@dataclass
class TrainerState:
    """Everything besides weights and optimizer moments that a resumed run needs."""

    step: int = 0  # optimizer steps completed
    best_val: float = float("inf")
    best_step: int = 0
    evals_without_improvement: int = 0
    stopped_early: bool = False
    scheduler: dict = field(default_factory=dict)
    config_sha256: str = ""  # the resolved config the run was started with (`config_hash`): resumed only with it


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder under `root`, or None. A save that was killed leaves only a hidden
    temporary folder (`atomic_directory`): it is never taken for a checkpoint, and it is removed here."""
    if not root.is_dir():
        return None
    for torn in root.glob(".step_*"):
        shutil.rmtree(torn, ignore_errors=True)
    done = sorted(p for p in root.glob("step_*") if (p / "state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(root: Path, state: TrainerState, lora: dict[str, torch.Tensor], optimizer: dict,
                    best_lora: dict[str, torch.Tensor] | None) -> Path:
    """Write checkpoint `step_<n>` atomically and prune all but the newest KEEP_LAST."""
    final = _step_dir(root, state.step)
    with atomic_directory(final, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in lora.items()}, tmp / "lora.safetensors")
        if best_lora is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in best_lora.items()}, tmp / "best_lora.safetensors")
        torch.save(optimizer, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1, allow_nan=True))
    for old in sorted(root.glob("step_*"))[:-KEEP_LAST]:
        shutil.rmtree(old)
    return final


def load_checkpoint(folder: Path) -> tuple[TrainerState, dict, dict, dict | None]:
    """(trainer state, LoRA state dict, optimizer state dict, best LoRA or None) from one folder."""
    state = TrainerState(**json.loads((folder / "state.json").read_text()))
    lora = load_file(folder / "lora.safetensors")
    optimizer = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    best = folder / "best_lora.safetensors"
    return state, lora, optimizer, (load_file(best) if best.is_file() else None)
