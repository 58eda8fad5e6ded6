"""Procedural world clips as arrays in memory, for what the project pre-trains itself (the proxy base model and
the proxy evaluators): these corpora are not user inputs, so no video files are written; the clips are rendered
on the fly by every CPU core and kept as one uint8 array (the GPU takes it whole), and in the run's state on disk
so that a resumed chunk on the same machine reads it back instead of rendering it again.

A corpus is a list of world clips: `CorpusSpec` names the domains, which are interleaved clip by clip, the
first clip index and the count, so two specs with disjoint index ranges share no clip. Index ranges live in
`CORPUS_BLOCKS`, beyond every range the world's video splits use (`world.SPLIT_BLOCK` × split position), so a
corpus never holds an evaluation clip.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cinelora.atomic import atomic_path, atomic_write_text
from cinelora.data.world import SPLIT_BLOCK, WORLD_VERSION, WorldError, clip_attributes, render_clip

# The first clip index of each corpus: the world's video splits use [0, 3 × SPLIT_BLOCK).
CORPUS_BLOCKS = {"base_train": 10 * SPLIT_BLOCK, "base_val": 11 * SPLIT_BLOCK,
                 "evaluators_train": 12 * SPLIT_BLOCK, "evaluators_val": 13 * SPLIT_BLOCK}


@dataclass(frozen=True)
class CorpusSpec:
    """`count` clips of `domains` (clip i is of domains[i % len(domains)]) from index CORPUS_BLOCKS[block]."""
    block: str
    domains: tuple[str, ...]
    count: int
    seed: int
    height: int
    width: int
    num_frames: int

    def clip(self, i: int) -> tuple[str, int]:
        """(domain, world index) of clip i."""
        if self.block not in CORPUS_BLOCKS:
            raise WorldError(f"corpus block {self.block!r}: expected one of {sorted(CORPUS_BLOCKS)}")
        if not 0 <= i < self.count or self.count > SPLIT_BLOCK:
            raise WorldError(f"corpus {self.block}: clip {i} of {self.count} (at most {SPLIT_BLOCK} per corpus)")
        return self.domains[i % len(self.domains)], CORPUS_BLOCKS[self.block] + i // len(self.domains)


@dataclass
class Corpus:
    """Rendered clips: frames uint8 [N, T, H, W, 3]; per clip its domain, caption and attributes."""
    frames: np.ndarray
    domains: list[str]
    captions: list[str]
    attributes: list[dict]


def _render_range(spec: CorpusSpec, start: int, stop: int) -> tuple[np.ndarray, list[dict]]:
    frames = np.empty((stop - start, spec.num_frames, spec.height, spec.width, 3), np.uint8)
    attributes = []
    for i in range(start, stop):
        domain, index = spec.clip(i)
        frames[i - start], attrs = render_clip(domain, index, spec.seed, spec.height, spec.width, spec.num_frames)
        attributes.append(attrs)
    return frames, attributes


def corpus_key(spec: CorpusSpec) -> str:
    """What a corpus's pixels are a function of: the spec and the world's renderer version."""
    text = json.dumps({**dataclasses.asdict(spec), "world_version": WORLD_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_corpus(spec: CorpusSpec, workers: int | None = None, progress: bool = True,
                  cache: Path | None = None) -> Corpus:
    """Every clip of `spec`, from `cache/<corpus_key>.npy` (+ `.json`) when a run rendered it before (a resumed
    chunk on the same machine), else rendered with `workers` processes (default: every core; the same at any
    count) and, with `cache`, kept there (atomically: a killed writer leaves none)."""
    if cache is not None:
        frames_file, meta_file = (cache / f"{spec.block}_{corpus_key(spec)}{s}" for s in (".npy", ".json"))
        if frames_file.is_file() and meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            return Corpus(np.load(frames_file), meta["domains"], meta["captions"], meta["attributes"])
    corpus = _render(spec, workers, progress)
    if cache is not None:
        with atomic_path(frames_file) as tmp:
            np.save(tmp, corpus.frames)
        atomic_write_text(meta_file, json.dumps({"domains": corpus.domains, "captions": corpus.captions,
                                                 "attributes": corpus.attributes}))
    return corpus


def _render(spec: CorpusSpec, workers: int | None, progress: bool) -> Corpus:
    workers = max(1, min(workers or os.cpu_count() or 1, spec.count))
    chunk = max(1, min(256, -(-spec.count // (4 * workers))))
    ranges = [(s, min(s + chunk, spec.count)) for s in range(0, spec.count, chunk)]
    frames = np.empty((spec.count, spec.num_frames, spec.height, spec.width, 3), np.uint8)
    attributes: list[dict] = []
    with tqdm(total=spec.count, desc=f"corpus {spec.block}", unit="clip", disable=not progress) as bar:
        if workers == 1:
            parts = (_render_range(spec, s, e) for s, e in ranges)
        else:
            pool = ProcessPoolExecutor(workers)
            parts = pool.map(_render_range, *zip(*[(spec, s, e) for s, e in ranges]))
        for (start, stop), (part, attrs) in zip(ranges, parts):
            frames[start:stop] = part
            attributes += attrs
            bar.update(stop - start)
        if workers > 1:
            pool.shutdown()
    return Corpus(frames, [a["domain"] for a in attributes], [a.pop("caption") for a in attributes], attributes)


def corpus_captions(spec: CorpusSpec) -> list[str]:
    """The captions of `spec`'s clips without rendering them (attributes are drawn before any pixel)."""
    return [clip_attributes(*spec.clip(i)[:2], spec.seed)["caption"] for i in range(spec.count)]


__all__ = ["CORPUS_BLOCKS", "CorpusSpec", "Corpus", "corpus_key", "render_corpus", "corpus_captions"]
