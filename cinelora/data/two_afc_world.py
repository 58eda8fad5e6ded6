"""A procedural 2AFC set in the BAPPS layout, cut from the procedural world (proxy and smoke profiles).

Each triplet is a pure function of (world seed, split, set, index):
- ref: a random `patch_size`² crop of the first frame of one world clip (the requested domains take turns
  by index; clip indices start at `FIRST_CLIP[split]`, far above the world's own train/val/test blocks, so no 2AFC
  patch comes from a clip the generator is evaluated on, and train and val never share a clip);
- p0, p1: two independent chains of distortions of ref, each distortion with its own severity
  s ∈ [0.05, 1] (1 = a strong, clearly visible change of a 64×64 patch);
- judge: the fraction of (simulated) raters preferring p1, defined from the chains' total severities
  S0, S1 (sums of their distortions' s) as judge = σ((S0 − S1) / JUDGE_TEMPERATURE). The "closer" patch is
  the less severely distorted one; equal severities give 0.5, and a severity gap of 0.3 gives ~0.82.
  These are designed judgments, not human ones: they say how far each distortion moved the patch.

Sets (named as BAPPS's, so configs work on both; in the spirit of BAPPS's families, not copies of them):
- `traditional`: 1-2 of gaussian noise, gaussian blur, JPEG compression (PIL), colour shift (gain and
  offset along a random RGB direction), geometric warp (smooth random displacement field);
- `cnn`: 1-2 artefacts typical of convolutional encoder-decoders (BAPPS's `cnn` set used their outputs):
  down/up-sampling blockiness, colour quantisation, over-sharpening halos, random 3×3 colour-mixing
  convolution;
- `mix`: 2-3 distortions drawn from both families.
"""
from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from cinelora.atomic import atomic_write_text
from cinelora.seeding import derive_seed
from cinelora.config import WORLD_DOMAINS
from cinelora.data.world import SPLIT_BLOCK, render_clip

# the domains of a call that names none: the world's first four (new world domains never join silently)
DEFAULT_DOMAINS = ("studio", "cinematic", "actors", "photos")

VERSION = 1  # bump when patches or judgments change: a set on disk made by another version is rewritten
JUDGE_TEMPERATURE = 0.2
FIRST_CLIP = {"train": 8 * SPLIT_BLOCK, "val": 9 * SPLIT_BLOCK}
SETS = ("traditional", "cnn", "mix")
SIDECAR = "two_afc_world.json"
Patch = np.ndarray  # float32 [H, W, 3] in [0, 1]


def _noise(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    return image + rng.normal(0.0, 0.15 * s, image.shape).astype(np.float32)


def _blur(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    return ndimage.gaussian_filter(image, sigma=(0.3 + 2.7 * s, 0.3 + 2.7 * s, 0), mode="reflect")


def _jpeg(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(image)).save(buffer, format="JPEG", quality=int(round(95 - 90 * s)))
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0


def _colour(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    direction = rng.normal(size=3).astype(np.float32)
    direction /= np.linalg.norm(direction) + 1e-8
    gain = 1.0 + 0.5 * s * rng.uniform(-1, 1)
    return image * gain + 0.25 * s * direction


def _warp(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    h, w = image.shape[:2]
    # A 4×4 grid of random displacements, upsampled smoothly: a gentle elastic warp of up to ~3·s px.
    field = ndimage.zoom(rng.normal(0.0, 1.5 * s, (2, 4, 4)), (1, h / 4, w / 4), order=3)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [rows + field[0], cols + field[1]]
    return np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], -1)


def _blocky(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    h, w = image.shape[:2]
    factor = 1 + round(3 * s)  # down-sample 1-4x by area, up-sample by nearest: checkerboard-like blocks
    small = Image.fromarray(_to_uint8(image)).resize((max(1, w // factor), max(1, h // factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST), dtype=np.float32) / 255.0


def _quantise(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    levels = int(round(32 - 28 * s))
    return np.round(image * (levels - 1)) / (levels - 1)


def _oversharpen(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    smooth = ndimage.gaussian_filter(image, sigma=(1.0, 1.0, 0), mode="reflect")
    return image + 3.0 * s * (image - smooth)


def _colour_mix_conv(image: Patch, s: float, rng: np.random.Generator) -> Patch:
    # A random 3×3 convolution per output channel, identity plus s-scaled zero-sum noise: colour bleeding
    # and texture smearing without changing flat regions' mean.
    kernel = np.zeros((3, 3, 3, 3), dtype=np.float32)  # [out, in, kh, kw]
    kernel[range(3), range(3), 1, 1] = 1.0
    noise = rng.normal(0.0, 0.25 * s, kernel.shape).astype(np.float32)
    kernel += noise - noise.mean(axis=(2, 3), keepdims=True)
    return np.stack([sum(ndimage.correlate(image[..., i], kernel[o, i], mode="reflect") for i in range(3))
                     for o in range(3)], -1)


TRADITIONAL: dict[str, Callable] = {"noise": _noise, "blur": _blur, "jpeg": _jpeg, "colour": _colour, "warp": _warp}
CNN_LIKE: dict[str, Callable] = {"blocky": _blocky, "quantise": _quantise, "oversharpen": _oversharpen,
                                 "colour_mix_conv": _colour_mix_conv}
# set -> (distortions it draws from, fewest and most distortions per chain)
FAMILIES: dict[str, tuple[dict[str, Callable], int, int]] = {
    "traditional": (TRADITIONAL, 1, 2), "cnn": (CNN_LIKE, 1, 2), "mix": ({**TRADITIONAL, **CNN_LIKE}, 2, 3),
}


def _to_uint8(image: Patch) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def distort(image: Patch, family: str, rng: np.random.Generator) -> tuple[Patch, list[tuple[str, float]], float]:
    """A random chain of `family` distortions applied to `image`; returns (image, [(name, s)], total severity)."""
    ops, fewest, most = FAMILIES[family]
    names = sorted(ops)
    chosen = rng.choice(len(names), size=int(rng.integers(fewest, most + 1)), replace=False)
    chain = []
    for k in chosen:
        severity = float(rng.uniform(0.05, 1.0))
        image = np.clip(ops[names[k]](image, severity, rng), 0.0, 1.0).astype(np.float32)
        chain.append((names[k], round(severity, 4)))
    return image, chain, sum(s for _, s in chain)


def judge_from_severity(total0: float, total1: float) -> float:
    """Fraction of simulated raters preferring p1: σ((S0 − S1) / JUDGE_TEMPERATURE)."""
    return float(1.0 / (1.0 + np.exp(-(total0 - total1) / JUDGE_TEMPERATURE)))


def make_triplet(seed: int, split: str, name: str, index: int, patch_size: int, frame_size: tuple[int, int],
                 domains: Sequence[str] = DEFAULT_DOMAINS) -> dict:
    """One triplet: uint8 [patch_size, patch_size, 3] ref/p0/p1, judge in [0, 1], and how it was made."""
    clip = FIRST_CLIP[split] + index
    domain = domains[index % len(domains)]
    rng = np.random.default_rng([derive_seed(seed, "world", clip), SETS.index(name), VERSION])
    frames, _ = render_clip(domain, clip, seed, frame_size[0], frame_size[1], 1)
    top = int(rng.integers(0, frame_size[0] - patch_size + 1))
    left = int(rng.integers(0, frame_size[1] - patch_size + 1))
    ref = frames[0, top:top + patch_size, left:left + patch_size].astype(np.float32) / 255.0
    p0, chain0, total0 = distort(ref, name, rng)
    p1, chain1, total1 = distort(ref, name, rng)
    return {"ref": _to_uint8(ref), "p0": _to_uint8(p0), "p1": _to_uint8(p1),
            "judge": judge_from_severity(total0, total1), "domain": domain, "clip": clip, "p0_chain": chain0,
            "p1_chain": chain1}


def _write_triplet(folder: Path, triplet: dict, index: int) -> None:
    stem = f"{index:06d}"
    for key in ("ref", "p0", "p1"):
        Image.fromarray(triplet[key]).save(folder / key / f"{stem}.png", optimize=False)
    np.save(folder / "judge" / f"{stem}.npy", np.array([triplet["judge"]], dtype=np.float32))


def write_two_afc_world(root: str | Path, *, seed: int, triplets: dict[str, int], sets: dict[str, list[str]],
                        patch_size: int, frame_size: tuple[int, int], domains: Sequence[str] = DEFAULT_DOMAINS,
                        progress: bool = True) -> Path:
    """Write `triplets[split]` triplets per set of `sets[split]` under `root` in the BAPPS layout.

    `root` gets `{train,val}/<set>/{ref,p0,p1,judge}` plus the `two_afc_world.json` sidecar (written last:
    the parameters and every triplet's source and distortion chains). A root whose sidecar matches the
    request is kept as it is; anything else there is replaced.
    """
    if min(frame_size) < patch_size:
        raise ValueError(f"2AFC patches of {patch_size}px need world frames at least that large; found {frame_size}")
    unknown = sorted({n for names in sets.values() for n in names} - set(SETS))
    if unknown:
        raise ValueError(f"procedural 2AFC sets {unknown} unknown; expected names among {list(SETS)}")
    if not domains or set(domains) - set(WORLD_DOMAINS):
        raise ValueError(f"procedural 2AFC domains {list(domains)}; expected a non-empty list among {list(WORLD_DOMAINS)}")
    root = Path(root)
    params = {"version": VERSION, "seed": seed, "domains": list(domains), "triplets": dict(triplets),
              "sets": {k: list(v) for k, v in sets.items()}, "patch_size": patch_size,
              "frame_size": list(frame_size), "judge_temperature": JUDGE_TEMPERATURE}
    sidecar = root / SIDECAR
    if sidecar.is_file() and json.loads(sidecar.read_text()).get("params") == params:
        return root
    sidecar.unlink(missing_ok=True)
    jobs = []
    for split, names in sets.items():
        for name in names:
            folder = root / split / name
            for sub in ("ref", "p0", "p1", "judge"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
                for stale in (folder / sub).iterdir():
                    stale.unlink()
            jobs += [(split, name, folder, i) for i in range(triplets[split])]

    def write(job: tuple) -> dict:
        split, name, folder, i = job
        triplet = make_triplet(seed, split, name, i, patch_size, frame_size, domains)
        _write_triplet(folder, triplet, i)
        return {"split": split, "set": name, "index": i, "domain": triplet["domain"], "clip": triplet["clip"],
                "judge": round(triplet["judge"], 6), "p0": triplet["p0_chain"], "p1": triplet["p1_chain"]}

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        records = list(tqdm(pool.map(write, jobs), total=len(jobs), desc="2afc world", unit="triplet",
                            disable=not progress))
    text = json.dumps({"params": params, "triplets": records}, indent=1) + "\n"
    atomic_write_text(sidecar, text)
    return root


__all__ = ["SETS", "FAMILIES", "JUDGE_TEMPERATURE", "FIRST_CLIP", "distort", "judge_from_severity", "make_triplet",
           "write_two_afc_world"]
