"""LPIPS (Zhang et al. 2018, arXiv 1801.03924) through the `lpips` package, version 0.1 linear heads.

The package ships the linear heads; the trunk comes from torchvision's standard weight file in the torch
hub cache (`backbone="torchvision"`), and is never downloaded here: a missing file is one clear error.
`backbone="random"` builds a seeded random trunk (`pnet_rand=True`): smoke scale only, and every result
written with it says so (`lpips_backbone` in the resolved config and provenance).
"""
from __future__ import annotations

from pathlib import Path

import lpips
import torch

from cinelora import seeding

TRUNK_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


class MissingWeightsError(FileNotFoundError):
    """An evaluator's weight file is absent; the message says which file goes where."""


def trunk_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILES[net]


def build_lpips(net: str, backbone: str, seed: int) -> lpips.LPIPS:
    """A frozen LPIPS model in eval mode; inputs [N, 3, H, W] in [-1, 1]."""
    if backbone == "torchvision":
        path = trunk_path(net)
        if not path.is_file():
            raise MissingWeightsError(
                f"LPIPS '{net}' needs torchvision's trunk weights at {path} (file {TRUNK_FILES[net]}); "
                "copy it there (or set TORCH_HOME), or use eval.lpips_backbone: random for smoke runs")
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=False, verbose=False)
    elif backbone == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeding.derive_seed(seed, "lpips_init"))
            model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    else:
        raise ValueError(f"eval.lpips_backbone: found {backbone!r}, expected 'torchvision' or 'random'")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def lpips_per_frame(model: lpips.LPIPS, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[T] LPIPS between matching frames of two clips [T, 3, H, W] in [-1, 1]."""
    if generated.shape != reference.shape:
        raise ValueError(f"clip shapes differ: generated {tuple(generated.shape)} vs reference {tuple(reference.shape)}")
    device = next(model.parameters()).device
    return model(generated.to(device, torch.float32), reference.to(device, torch.float32)).flatten().cpu()
