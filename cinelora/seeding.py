"""Every random stream derives from (run seed, purpose, index), so a resumed run or a different batch
size draws the same numbers (edm2 reseeds per step; edm gives each sample its own generator)."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

PURPOSES = ("init", "data_order", "noise", "timestep", "validation", "generation", "world", "bootstrap", "lpips_init")


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 63-bit seed that is a stable function of (seed, purpose, index) across runs and platforms."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; expected one of {PURPOSES}")
    digest = hashlib.sha256(f"{seed}/{purpose}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, purpose: str, index: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator for one purpose and one step/sample."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, purpose, index))


def seed_everything(seed: int) -> None:
    """Seed the global generators (model init and library code that takes no generator)."""
    s = derive_seed(seed, "init")
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
