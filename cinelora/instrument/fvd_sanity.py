"""FVD sanity of an I3D: does FVD measure something? Per domain, 2N real clips (held out from every network) are
split into sets A and B of N clips. Then:
- the noise floor: FVD(A, B) of two real sets, and its band over `floor_splits` random re-partitions of the 2N
  clips (split 0 is A | B itself);
- each corruption of B at each strength: FVD(A, corrupt(B)), which should grow monotonically with the strength and
  leave the floor's band (frame shuffling included: FVD is known to react weakly to temporal corruption, Ge et al.,
  CVPR 2024, "On the content bias in Fréchet Video Distance").

Corruptions (`CORRUPTIONS`; units as `cinelora.config.FVD_CORRUPTIONS` states), applied to clips in [0, 1] before
FVD's own preprocessing. Each clip draws its randomness once from (seed, clip) and every strength scales the same
draw (common random numbers: the strengths of one corruption differ only in strength):
- noise: + σ·z, z a standard normal field, clipped to [0, 1];
- blur: a Gaussian of σ pixels on every frame (reflect padding);
- colour: + s·u, u a unit RGB direction orthogonal to grey (a change of hue, not of brightness), clipped;
- shuffle: a fraction f of the frames, at random positions, rotated one place among those positions (each chosen
  frame leaves its place; f = 1 shuffles the whole clip);
- freeze: the last fraction f of the clip shows the frame where it freezes (f = 1: the first frame throughout).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cinelora import seeding
from cinelora.config import FVD_CORRUPTIONS, FVDSanityConfig
from cinelora.metrics.fvd import fvd, i3d_features
from cinelora.metrics.i3d import InceptionI3d

Corruption = Callable[[torch.Tensor, float, dict], torch.Tensor]  # clip [T, H, W, 3] in [0, 1], strength, draws


def _draws(seed: int, clip: int, shape: tuple[int, ...], noise: bool) -> dict:
    """The random draws of one clip, the same for every strength of every corruption (the noise field, the largest,
    is drawn last and only for the noise corruption)."""
    g = seeding.generator(seed, "validation", clip)
    direction = torch.randn(3, generator=g)
    direction -= direction.mean()  # orthogonal to grey (1, 1, 1)
    draws = {"direction": direction / direction.norm(), "order": torch.randperm(shape[0], generator=g)}
    return draws | ({"noise": torch.randn(shape, generator=g)} if noise else {})


def _noise(clip: torch.Tensor, sigma: float, d: dict) -> torch.Tensor:
    return (clip + sigma * d["noise"].to(clip.device)).clamp(0, 1)


def _blur(clip: torch.Tensor, sigma: float, d: dict) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=clip.dtype, device=clip.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    image = clip.permute(0, 3, 1, 2).reshape(-1, 1, *clip.shape[1:3])  # [T·3, 1, H, W]
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return image.reshape(clip.shape[0], 3, *clip.shape[1:3]).permute(0, 2, 3, 1)


def _colour(clip: torch.Tensor, shift: float, d: dict) -> torch.Tensor:
    return (clip + shift * d["direction"].to(clip.device)).clamp(0, 1)


def _shuffle(clip: torch.Tensor, fraction: float, d: dict) -> torch.Tensor:
    count = min(clip.shape[0], max(2, round(fraction * clip.shape[0])))
    chosen = d["order"][:count].to(clip.device)
    out = clip.clone()
    out[chosen] = clip[chosen.roll(1)]
    return out


def _freeze(clip: torch.Tensor, fraction: float, d: dict) -> torch.Tensor:
    start = round((1 - fraction) * (clip.shape[0] - 1))
    out = clip.clone()
    out[start:] = clip[start]
    return out


CORRUPTIONS: dict[str, Corruption] = {"noise": _noise, "blur": _blur, "colour": _colour, "shuffle": _shuffle,
                                      "freeze": _freeze}
assert tuple(CORRUPTIONS) == FVD_CORRUPTIONS  # the config's list of names and units is this table's


def corrupt(clips: torch.Tensor, name: str, strength: float, seed: int, first: int = 0) -> torch.Tensor:
    """uint8 clips [N, T, H, W, 3] → corrupted float clips [N, 3, T, H, W] in [-1, 1] (FVD's input); clip i draws
    its randomness from (seed, first + i), so a set corrupted in batches equals the set corrupted at once."""
    clips = clips.float() / 255.0
    if strength:
        clips = torch.stack([CORRUPTIONS[name](clip, strength, _draws(seed, first + i, tuple(clip.shape),
                                                                      name == "noise"))
                             for i, clip in enumerate(clips)])
    return clips.permute(0, 4, 1, 2, 3) * 2 - 1


def _features(model: InceptionI3d, clips: torch.Tensor, name: str, strength: float, seed: int,
              batch_size: int) -> torch.Tensor:
    return torch.cat([i3d_features(model, corrupt(clips[i:i + batch_size], name, strength, seed, i), batch_size)
                      for i in range(0, clips.shape[0], batch_size)])


def sanity_rows(model: InceptionI3d, domain: str, real: torch.Tensor, cfg: FVDSanityConfig, seed: int) -> list[dict]:
    """Rows {domain, corruption, strength, split, fvd, clips_a, clips_b} for 2N real clips uint8 [2N, T, H, W, 3]:
    the floor ("none", strength 0, one row per split) and each corruption of set B at each strength (split 0)."""
    n = real.shape[0] // 2
    a = _features(model, real[:n], "none", 0.0, seed, cfg.batch_size)
    b = _features(model, real[n:2 * n], "none", 0.0, seed, cfg.batch_size)
    both = torch.cat([a, b])
    rows = []

    def row(corruption: str, strength: float, split: int, fa: torch.Tensor, fb: torch.Tensor) -> dict:
        value = fvd(fa.numpy(), fb.numpy(), cfg.covariance).value
        return {"domain": domain, "corruption": corruption, "strength": strength, "split": split, "fvd": value,
                "clips_a": len(fa), "clips_b": len(fb)}

    for split in range(cfg.floor_splits):
        order = torch.arange(2 * n) if split == 0 else torch.randperm(
            2 * n, generator=seeding.generator(seed, "bootstrap", split))
        rows.append(row("none", 0.0, split, both[order[:n]], both[order[n:]]))
    for name in CORRUPTIONS:
        for strength in cfg.strengths[name]:
            rows.append(row(name, strength, 0, a, _features(model, real[n:2 * n], name, strength, seed,
                                                             cfg.batch_size)))
    return rows


def sanity_checks(rows: list[dict]) -> list[dict]:
    """Per domain and corruption, with the numbers: `monotone`: from the floor (A | B, strength 0) through every
    strength, each step raises FVD, except a step between two values that both lie inside the floor's band (a change
    real-vs-real sampling alone makes: a weak corruption may not yet be seen); `strict`: each step raises it, no
    exception; `leaves_floor`: the strongest corruption's FVD is above the band's top."""
    out = []
    for domain in dict.fromkeys(r["domain"] for r in rows):
        floor = [r["fvd"] for r in rows if r["domain"] == domain and r["corruption"] == "none"]
        top = max(floor)
        for name in dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "none"):
            curve = [floor[0]] + [r["fvd"] for r in rows if r["domain"] == domain and r["corruption"] == name]
            steps = list(itertools.pairwise(curve))
            out.append({"domain": domain, "corruption": name, "floor": floor[0], "floor_max": top,
                        "strongest": curve[-1], "monotone": all(b > a or max(a, b) <= top for a, b in steps),
                        "strict": all(b > a for a, b in steps), "leaves_floor": curve[-1] > top})
    return out


def sanity_figure(rows: list[dict], title: str):
    """FVD against strength, one panel per corruption, one line per domain; each domain's noise floor (the band
    of its real-vs-real splits) shaded. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    from cinelora.report import STYLE

    domains = list(dict.fromkeys(r["domain"] for r in rows))
    names = list(dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "none"))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(names), figsize=(1.9 * len(names), 2.1), squeeze=False, sharey=True)
        for ax, name in zip(axes[0], names):
            for k, domain in enumerate(domains):
                colour = f"C{k}"
                floor = [r["fvd"] for r in rows if r["domain"] == domain and r["corruption"] == "none"]
                curve = [r for r in rows if r["domain"] == domain and r["corruption"] == name]
                ax.axhspan(min(floor), max(floor), color=colour, alpha=0.15, lw=0)
                ax.plot([0.0] + [r["strength"] for r in curve], [floor[0]] + [r["fvd"] for r in curve], "o-",
                        color=colour, ms=2.5, lw=1, label=domain)
            ax.set_title(name)
            ax.set_xlabel("strength")
            ax.set_yscale("log")
        axes[0][0].set_ylabel("FVD (N = {})".format(rows[0]["clips_a"]))
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        fig.suptitle(title)
        fig.tight_layout()
    return fig


__all__ = ["CORRUPTIONS", "corrupt", "sanity_rows", "sanity_checks", "sanity_figure"]
