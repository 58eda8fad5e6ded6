"""LPIPS's 2AFC score (Zhang et al. 2018, arXiv 1801.03924): how often a distance agrees with raters."""
from __future__ import annotations

import torch


def two_afc_agreement(d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor) -> torch.Tensor:
    """Per-triplet soft agreement [N] of a distance with the raters (LPIPS's `score_2afc_dataset`).

    d0, d1: distances ref↔p0 and ref↔p1 (any shape with N elements); judge [N] in [0, 1] = fraction of raters
    preferring p1. The metric picks the smaller distance; agreement is the fraction of raters who chose the
    same patch (judge if it picks p1, 1 − judge if p0, 0.5 on a tie).
    """
    d0, d1, judge = d0.reshape(-1), d1.reshape(-1), judge.reshape(-1).to(d0.dtype)
    picks_p1 = (d1 < d0).to(d0.dtype)
    tie = (d1 == d0).to(d0.dtype)
    return (1 - tie) * (picks_p1 * judge + (1 - picks_p1) * (1 - judge)) + tie * 0.5


def two_afc_score(d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor) -> float:
    """The 2AFC score in [0, 1]: mean soft agreement over triplets; higher is better, and no metric can exceed
    mean(max(judge, 1 − judge)), the raters' agreement with their own majority."""
    return float(two_afc_agreement(d0, d1, judge).mean())
