"""The proxy I3D: a width-scaled InceptionI3d (pytorch-i3d module and parameter names, every channel count divided
by `i3d.width_divisor`) trained to classify world attributes, so that `cinelora.metrics.i3d.load_i3d` reads its file
and FVD runs on it unchanged.

It sees what FVD feeds it: 16 frames of a clip resized to 224x224 in [-1, 1] (`cinelora.metrics.fvd.preprocess_clips`,
applied on the device to each batch). Its logits, one block per label set (`attributes.LabelSpace`), are averaged
over time as Kinetics-400's are, and are the FVD feature: where the real I3D's 400 action logits say what happens in a
clip, these say what the world's attributes are (domain, the subject's motion, the camera move, the object and its
colour), several of which need the frames in order. Batch norm runs with the eps of `i3d.release`, which the proxy
profile names in `eval.i3d_release`.
"""
from __future__ import annotations

import torch
from torch import nn

from cinelora import seeding
from cinelora.config import I3DPhaseConfig
from cinelora.instrument.attributes import LabelSpace
from cinelora.metrics import i3d
from cinelora.metrics.fvd import i3d_features, preprocess_clips

STREAM = 0  # data-order stream of this network: step s draws from index 3·s + STREAM (CLIP 1, trunk 2)


def to_clips(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [N, T, H, W, 3] → float [N, 3, T, H, W] in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def build_i3d(phase: I3DPhaseConfig, num_classes: int, seed: int) -> i3d.InceptionI3d:
    """A seeded InceptionI3d of the configured width and head, He-initialised as `i3d.random_i3d` (trainable)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, "init", i3d.INIT_INDEX))
        model = i3d.InceptionI3d(num_classes, bn_eps=i3d.RELEASES[phase.release][1], width_divisor=phase.width_divisor)
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


def _autocast(device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


def step_loss(phase: I3DPhaseConfig, model: i3d.InceptionI3d, space: LabelSpace, frames: torch.Tensor,
              targets: torch.Tensor, seed: int):
    """`loop.fit`'s step: a batch of training clips drawn by (seed, step), the summed cross-entropy of its labels."""
    device = frames.device

    def loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.randint(frames.shape[0], (phase.batch_size,),
                            generator=seeding.generator(seed, "data_order", 3 * step + STREAM)).to(device)
        with _autocast(device):
            logits = model(preprocess_clips(to_clips(frames[idx])))
        return space.loss(logits, targets[idx])

    return loss


def logits_of(model: i3d.InceptionI3d, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits [N, classes] (float32, CPU) of clips uint8 [N, T, H, W, 3], through FVD's feature path."""
    return torch.cat([i3d_features(model, to_clips(frames[i:i + batch_size]), batch_size)
                      for i in range(0, frames.shape[0], batch_size)])


def validation(model: i3d.InceptionI3d, space: LabelSpace, frames: torch.Tensor, targets: torch.Tensor,
               batch_size: int):
    """`loop.fit`'s validation: summed cross-entropy and mean accuracy over label sets on the validation clips."""

    def validate() -> dict[str, float]:
        with _autocast(frames.device):
            logits = logits_of(model, frames, batch_size)
        loss, _ = space.loss(logits, targets.cpu())
        rows = space.accuracy_rows(logits, targets.cpu(), targets.cpu())
        return {"loss": loss.item(), "accuracy": sum(r["accuracy"] for r in rows) / len(rows)}

    return validate


__all__ = ["build_i3d", "step_loss", "validation", "logits_of", "to_clips"]
