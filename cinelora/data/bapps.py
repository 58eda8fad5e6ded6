"""2AFC triplets in the BAPPS layout (Zhang et al. 2018, arXiv 1801.03924); their score is `metrics.two_afc`.

Layout, as the BAPPS download has it: `<root>/{train,val}/<set>/{ref,p0,p1}/*.png` and
`<root>/{train,val}/<set>/judge/*.npy`, the four folders paired by sorted file order. `judge` holds the
fraction of raters who judged p1 closer to ref (0: all chose p0, 1: all chose p1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

SPLITS = ("train", "val")
IMAGE_FOLDERS = ("ref", "p0", "p1")


class BAPPSLayoutError(FileNotFoundError):
    """A 2AFC folder does not follow the BAPPS layout; the message names the folder and what is wrong."""


def _sorted_files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        raise BAPPSLayoutError(f"{folder}: missing; a BAPPS 2AFC set holds ref/, p0/, p1/ (*.png) and judge/ (*.npy)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == suffix)
    if not files:
        raise BAPPSLayoutError(f"{folder}: no *{suffix} files")
    return files


def load_patch(path: Path, size: int) -> torch.Tensor:
    """An RGB patch as float32 [3, size, size] in [-1, 1]; resized (bicubic, as LPIPS's loader) if needed."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


class TwoAFCDataset(Dataset):
    """The triplets of `sets` (e.g. ["traditional", "cnn"]) of one `split` under a BAPPS `2afc` root.

    Item: {"ref", "p0", "p1"}: float32 [3, patch_size, patch_size] in [-1, 1]; "judge": float32 scalar in
    [0, 1], the fraction preferring p1; "set": the set name. Patches are read lazily (the real train split
    is ~150k triplets).
    """

    def __init__(self, root: str | Path, sets: list[str], split: str, patch_size: int = 64):
        if split not in SPLITS:
            raise ValueError(f"2AFC split: found {split!r}, expected one of {SPLITS}")
        if not sets:
            raise ValueError("TwoAFCDataset: no sets named")
        self.root, self.split, self.patch_size = Path(root), split, patch_size
        self.items: list[tuple[str, Path, Path, Path, Path]] = []
        self.set_sizes: dict[str, int] = {}
        for name in sets:
            folder = self.root / split / name
            if not folder.is_dir():
                raise BAPPSLayoutError(f"{folder}: missing; expected the BAPPS layout "
                                       f"<root>/{{train,val}}/<set>/{{ref,p0,p1,judge}} under {self.root}")
            columns = [_sorted_files(folder / f, ".png") for f in IMAGE_FOLDERS]
            columns.append(_sorted_files(folder / "judge", ".npy"))
            counts = {f: len(c) for f, c in zip((*IMAGE_FOLDERS, "judge"), columns)}
            if len(set(counts.values())) != 1:
                raise BAPPSLayoutError(f"{folder}: folders hold different numbers of files {counts}; they pair "
                                       "by sorted order, so every folder needs one file per triplet")
            self.items += [(name, *files) for files in zip(*columns)]
            self.set_sizes[name] = counts["ref"]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name, ref, p0, p1, judge = self.items[index]
        value = float(np.load(judge).reshape(-1)[0])
        return {"ref": load_patch(ref, self.patch_size), "p0": load_patch(p0, self.patch_size),
                "p1": load_patch(p1, self.patch_size), "judge": torch.tensor(value, dtype=torch.float32), "set": name}
