"""The frozen encoders' outputs per training clip (VAE latents, I2V condition, T5 and CLIP embeddings): kept in
memory for a run and on disk for every run (`cinelora cache` fills the disk store ahead of training).

A clip's entry is keyed by everything its encoding depends on: the video file's bytes, the frozen encoders'
weights (`model_fingerprint`), the clip size, frame count and stride, the caption, the condition (first frame, or
black for the style stage), the encoders' dtype and `CACHE_VERSION`; a change of any one is a new key, never a
stale hit. Entries are safetensors files under `runs/cache/` (the run folders' root), written atomically, so a
killed writer leaves none half-written; an unreadable one is reported, removed and encoded again. Any experiment
that trains on the same clips with the same encoders reads the same entries.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cinelora import models, objective
from cinelora.atomic import atomic_path
from cinelora.config import ExperimentConfig, ModelConfig
from cinelora.data.buckets import Bucket
from cinelora.data.videos import VideoClipDataset, training_clips

CACHE_VERSION = 1
ENCODER_FOLDERS = ("vae", "text_encoder", "tokenizer", "image_encoder", "image_processor")
CONDITIONS = ("first", "black")  # the conditioning frame: the clip's own first frame, or black (the style stage)
logger = logging.getLogger(__name__)
_file_hashes: dict[tuple[str, int, int], str] = {}


def _sha256(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (remembered per path, size and mtime within a process)."""
    stat = Path(path).stat()
    memo = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        _file_hashes[memo] = digest.hexdigest()
    return _file_hashes[memo]


def model_fingerprint(model: ModelConfig, seed: int) -> str:
    """What the frozen encoders are: the seeded preset (random source), or the bytes of every file of the
    pretrained folder's VAE, text and image encoders, tokenizer and image processor."""
    if model.source == "random":
        return _sha256({"source": "random", "architecture": model.architecture, "seed": seed})
    root = Path(model.path)
    files = sorted(p for name in ENCODER_FOLDERS for p in (root / name).rglob("*") if p.is_file())
    return _sha256({str(p.relative_to(root)): file_sha256(p) for p in files})


def clip_key(fingerprint: str, video_sha256: str, cfg: ExperimentConfig, size: Bucket, caption: str,
             condition: str) -> str:
    """The key of one clip loaded at `size` (its bucket, or data.height x width x num_frames)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition {condition!r}: expected one of {CONDITIONS}")
    return _sha256({"version": CACHE_VERSION, "encoders": fingerprint, "video": video_sha256, "caption": caption,
                    "height": size.height, "width": size.width, "num_frames": size.num_frames,
                    "frame_stride": cfg.data.frame_stride, "condition": condition, "dtype": cfg.model.weight_dtype})


def dataset_keys(dataset: VideoClipDataset, cfg: ExperimentConfig, condition: str) -> dict[int, str]:
    """The cache key of every clip of a dataset, by index."""
    fingerprint = model_fingerprint(cfg.model, cfg.seed)
    return {i: clip_key(fingerprint, file_sha256(r.path), cfg, dataset.size_of(i), r.caption, condition)
            for i, r in enumerate(dataset.records)}


class LatentStore:
    """One safetensors file per key under `root` (two-character fan-out)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = load_file(path)
        except (SafetensorError, OSError) as err:
            logger.warning("%s: unreadable cache entry (%s); removed, the clip is encoded again", path, err)
            path.unlink(missing_ok=True)
            return None
        if set(entry) != set(EncodingCache.KEYS):
            logger.warning("%s: cache entry holds %s, expected %s; removed", path, sorted(entry), EncodingCache.KEYS)
            path.unlink(missing_ok=True)
            return None
        return entry

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


class EncodingCache:
    """Each training clip's encodings, computed the first time the clip is drawn (or read from the disk store)
    and kept on the device, so later steps only read them. A clip is encoded alone: its encoding never depends
    on the batch it came in, and at batch 1 it is exactly what encoding the batch gave. Pixels (for the attack
    and the perceptual term) still come from the batch."""

    KEYS = ("latents", "condition", "text", "image")

    def __init__(self, c: models.WanComponents, device: torch.device, dtype: torch.dtype,
                 store: LatentStore | None = None, keys: dict[int, str] | None = None):
        if (store is None) != (keys is None):
            raise ValueError("EncodingCache: a disk store needs the clips' keys, and keys need a store")
        self.c, self.device, self.dtype, self.disk, self.keys = c, device, dtype, store, keys
        self.store: dict[int, dict[str, torch.Tensor]] = {}
        self.encoded = self.reused = 0

    def encodings(self, index: int, batch: dict, j: int) -> dict[str, torch.Tensor]:
        """Clip `index` (item j of `batch`), from memory, the disk store, or the encoders."""
        if index not in self.store:
            entry = self.disk.get(self.keys[index]) if self.disk is not None else None
            if entry is None:
                one = {"video": batch["video"][j:j + 1], "condition": batch["condition"][j:j + 1],
                       "caption": batch["caption"][j:j + 1]}
                encoded = objective.encode_batch(self.c, one, self.device, self.dtype)
                entry = {k: encoded[k] for k in self.KEYS}
                if self.disk is not None:
                    self.disk.put(self.keys[index], entry)
                self.encoded += 1
            else:
                self.reused += 1
            self.store[index] = {k: v.to(self.device) for k, v in entry.items()}
        return self.store[index]

    def inputs(self, batch: dict) -> dict:
        """`objective.encode_batch`'s output for this batch, encodings from the cache."""
        entries = [self.encodings(index, batch, j) for j, index in enumerate(batch["index"])]
        return {"video": batch["video"].to(self.device, self.c.vae.dtype),
                "first": batch["condition"].to(self.device, self.c.vae.dtype),
                **{k: torch.cat([e[k] for e in entries]) for k in self.KEYS}}


def cache_dataset(cfg: ExperimentConfig, root: Path, progress: bool = True) -> dict:
    """Fill the disk store with every training clip of `cfg` (and of its style stage, single frames with a black
    condition, when train.stage is two_stage); returns counts and the seconds per encoded clip."""
    from cinelora.train import style_config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    c = models.build_components(cfg.model, device=device, seed=cfg.seed)
    loaded = time.perf_counter()
    stages = [(cfg, "first")] + ([(style_config(cfg), "black")] if cfg.train.stage == "two_stage" else [])
    summary = {"clips": 0, "encoded": 0, "reused": 0}
    for stage, condition in stages:
        dataset = training_clips(stage.data, stage.data.train)
        cache = EncodingCache(c, device, models.DTYPES[stage.model.weight_dtype], LatentStore(root),
                              dataset_keys(dataset, stage, condition))
        for i in tqdm(range(len(dataset)), desc=f"cache {stage.data.train} ({condition} frame)", unit="clip",
                      disable=not progress):
            item = dataset[i]
            first = item["condition"] if condition == "first" else torch.full_like(item["condition"], -1.0)
            batch = {"video": item["video"][None], "condition": first[None], "caption": [item["caption"]],
                     "index": [i]}
            with torch.no_grad():
                cache.encodings(i, batch, 0)
            cache.store.clear()  # on disk now: the device need not hold the dataset
        summary = {k: summary[k] + n for k, n in (("clips", len(dataset)), ("encoded", cache.encoded),
                                                  ("reused", cache.reused))}
    seconds = time.perf_counter() - loaded
    summary.update(seconds_model_load=round(loaded - start, 3), seconds_encoding=round(seconds, 3),
                   seconds_per_encoded_clip=round(seconds / summary["encoded"], 4) if summary["encoded"] else None,
                   device=device.type, root=str(root))
    return summary


__all__ = ["CACHE_VERSION", "EncodingCache", "LatentStore", "clip_key", "dataset_keys", "file_sha256",
           "model_fingerprint", "cache_dataset"]
