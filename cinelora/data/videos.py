"""Video clips with captions: manifests and folders, decord decoding, resize/crop, first frame as condition.

This is the loader users point at their own footage; the procedural world (`cinelora.data.world`) writes the
same format (video files, lossless `.avi`, plus `manifest.jsonl`), so proxy and smoke runs go through the same code.

A source is one of
- a `.jsonl` manifest (one object a line) or a `.csv` manifest, each row with at least `path` and
  `caption`; relative paths resolve against the manifest's folder; every other key/column is kept in
  `ClipRecord.attributes`;
- a folder: its `manifest.jsonl` or `manifest.csv` if present, else every video file in it
  (`VIDEO_SUFFIXES`, not recursive) with its caption in a sidecar `<stem>.txt`.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cinelora.data.buckets import Bucket, choose_bucket, parse_bucket

if TYPE_CHECKING:
    from cinelora.config import DataConfig

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
REQUIRED_KEYS = ("path", "caption")

logger = logging.getLogger(__name__)


@functools.cache
def _decord():
    """decord, imported when a video file is first read (nothing else needs it), ffmpeg's own lines silenced: a
    failure reaches us as an exception."""
    import decord
    decord.logging.set_level(decord.logging.QUIET)
    return decord


class VideoDataError(ValueError):
    """A video or manifest entry cannot be used; the message names the file (and line) and what was expected."""

    def __init__(self, path: str | Path, problem: str, expected: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        self.path, self.line, self.problem, self.expected = Path(path), line, problem, expected
        self.reason = f"{problem}; expected {expected}"
        super().__init__(f"{where}: {self.reason}")


@dataclass
class ClipRecord:
    path: Path
    caption: str
    attributes: dict = field(default_factory=dict)


def read_clip_records(source: str | Path) -> list[ClipRecord]:
    """Every (video, caption) pair of a manifest or folder, sorted by path; raises VideoDataError."""
    source = Path(source)
    if source.is_dir():
        for name in MANIFEST_NAMES:
            if (source / name).is_file():
                return read_clip_records(source / name)
        records = _read_caption_sidecars(source)
    elif not source.exists():
        raise VideoDataError(source, "does not exist", "a .jsonl or .csv manifest or a folder of videos")
    elif source.suffix == ".jsonl":
        records = _read_jsonl_manifest(source)
    elif source.suffix == ".csv":
        records = _read_csv_manifest(source)
    else:
        raise VideoDataError(source, f"is a '{source.suffix}' file", "a .jsonl or .csv manifest or a folder")
    return sorted(records, key=lambda r: str(r.path))


def _manifest_record(manifest: Path, line: int, row: dict) -> ClipRecord:
    for key in REQUIRED_KEYS:
        if key not in row:
            raise VideoDataError(manifest, f"no '{key}' field", f"fields {list(REQUIRED_KEYS)}", line)
    caption = row["caption"]
    if not isinstance(caption, str) or not caption.strip():
        raise VideoDataError(manifest, f"caption {caption!r}", "a non-empty caption", line)
    path = Path(os.path.normpath(manifest.parent / str(row["path"])))
    if not path.resolve().is_relative_to(manifest.parent.resolve()):  # allowed, but said
        logger.warning("%s:%d: path %r lies outside the manifest's folder (%s)", manifest, line, row["path"], path)
    if not path.is_file():
        raise VideoDataError(manifest, f"video '{path}' does not exist", "an existing video file", line)
    attributes = {k: v for k, v in row.items() if k not in REQUIRED_KEYS}
    return ClipRecord(path, caption.strip(), attributes)


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; anything else is a VideoDataError naming the file and the offending byte."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise VideoDataError(path, f"is not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at offset "
                             f"{err.start})", "UTF-8 text (save captions and manifests as UTF-8)") from None


def _read_jsonl_manifest(manifest: Path) -> list[ClipRecord]:
    records = []
    for line, text in enumerate(_read_text(manifest).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise VideoDataError(manifest, f"invalid JSON ({err.msg})", "one JSON object a line", line) from None
        if not isinstance(row, dict):
            raise VideoDataError(manifest, f"a {type(row).__name__}", "one JSON object a line", line)
        records.append(_manifest_record(manifest, line, row))
    return records


def _read_csv_manifest(manifest: Path) -> list[ClipRecord]:
    reader = csv.DictReader(io.StringIO(_read_text(manifest), newline=""))
    columns = reader.fieldnames or []
    missing = [key for key in REQUIRED_KEYS if key not in columns]
    if missing:
        raise VideoDataError(manifest, f"columns {columns} lack {missing}",
                             f"a header with columns {list(REQUIRED_KEYS)}", 1)
    return [_manifest_record(manifest, reader.line_num, row) for row in reader]


def _read_caption_sidecars(folder: Path) -> list[ClipRecord]:
    # Hidden files are half-written temporaries or macOS resource forks ("._clip.mp4"), never clips.
    videos = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".") and p.is_file())
    if not videos:
        raise VideoDataError(folder, "holds no manifest and no videos",
                             f"{' or '.join(MANIFEST_NAMES)}, or video files {list(VIDEO_SUFFIXES)}")
    records = []
    for video in videos:
        sidecar = video.with_suffix(".txt")
        if not sidecar.is_file():
            raise VideoDataError(video, "has no caption file", f"its caption in '{sidecar.name}'")
        caption = _read_text(sidecar).strip()
        if not caption:
            raise VideoDataError(sidecar, "is empty", f"the caption of '{video.name}'")
        records.append(ClipRecord(video, caption, {}))
    return records


def frames_needed(num_frames: int, frame_stride: int) -> int:
    """Length a video must have to give `num_frames` frames `frame_stride` apart."""
    return (num_frames - 1) * frame_stride + 1


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for the block (Python's own sys.stderr is
    flushed first and restored after)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def probe_video(path: Path, buckets: tuple[Bucket, ...], frame_stride: int) -> int | VideoDataError:
    """The index of the clip's bucket (`buckets.choose_bucket`), or the error that says why it has none.

    Decoding the last needed frame (not only reading the header) catches truncated files whose
    container still reports the full length.
    """
    decord = _decord()
    try:
        with _native_stderr_silenced():  # decord's C++ logger prints the error the exception carries too
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
            length = len(reader)
            height, width = reader[0].shape[:2] if length else (1, 1)
            bucket = choose_bucket(buckets, height, width, (length - 1) // frame_stride + 1 if length else 0)
            if bucket is not None:
                reader[frames_needed(buckets[bucket].num_frames, frame_stride) - 1]
    except (RuntimeError, decord.DECORDError) as err:
        return VideoDataError(path, f"cannot be decoded ({_first_line(err)})", "a readable video file")
    if bucket is None:
        shortest = min(buckets, key=lambda b: b.num_frames)
        which = f"num_frames={shortest.num_frames}" if len(buckets) == 1 else f"the shortest bucket {shortest}"
        needed = frames_needed(shortest.num_frames, frame_stride)
        return VideoDataError(path, f"has {length} frames", f"at least {needed} ({which}, frame_stride={frame_stride})")
    return bucket


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def decode_frames(path: Path, num_frames: int, frame_stride: int = 1) -> torch.Tensor:
    """The first `num_frames` frames `frame_stride` apart: uint8 [T, H, W, 3]; raises VideoDataError."""
    indices = list(range(0, frames_needed(num_frames, frame_stride), frame_stride))
    decord = _decord()
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        frames = reader.get_batch(indices).asnumpy()
    except (RuntimeError, decord.DECORDError) as err:
        raise VideoDataError(path, f"cannot be decoded ({_first_line(err)})", "a readable video file") from None
    return torch.from_numpy(frames)


def resize_and_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Float [T, C, H, W] → [T, C, height, width]: bilinear (antialiased) resize so both sides cover the
    target, then centre crop; the aspect ratio is kept."""
    h, w = frames.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return frames[..., top:top + height, left:left + width]


class VideoClipDataset(Dataset):
    """Captioned clips for I2V training and evaluation.

    Item: `video` float32 [3, T, H, W] in [-1, 1] (the first T frames, `frame_stride` apart); `condition` float32
    [3, H, W] in [-1, 1], the first frame (the I2V conditioning image); `caption`; `path` (str); `index`. T, H, W
    are height × width × num_frames, or with `buckets` those of the clip's bucket (`cinelora.data.buckets`).
    Every video is probed on construction: a corrupt, unreadable or too-short one raises VideoDataError, or with
    `skip_bad` is left out and listed in `self.skipped` as (path, reason).
    """

    def __init__(self, source: str | Path, height: int, width: int, num_frames: int, frame_stride: int = 1,
                 skip_bad: bool = False, buckets: tuple[Bucket, ...] = ()):
        for name, value in (("height", height), ("width", width), ("num_frames", num_frames),
                            ("frame_stride", frame_stride)):
            if value < 1:
                raise ValueError(f"VideoClipDataset: {name}={value}, expected a value >= 1")
        self.source, self.frame_stride = Path(source), frame_stride
        self.buckets = tuple(buckets) or (Bucket(height, width, num_frames),)
        self.records: list[ClipRecord] = []
        self.bucket_of: list[int] = []  # per record, its index in self.buckets
        self.skipped: list[tuple[Path, str]] = []
        for record in read_clip_records(source):
            found = probe_video(record.path, self.buckets, frame_stride)
            if isinstance(found, int):
                self.records.append(record)
                self.bucket_of.append(found)
            elif skip_bad:
                self.skipped.append((record.path, found.reason))
            else:
                raise VideoDataError(found.path, found.problem,
                                     f"{found.expected} (or skip_bad_videos: true to skip such files)")
        if self.skipped:
            listing = "; ".join(f"{path.name}: {reason}" for path, reason in self.skipped)
            logger.warning("%s: skipped %d of %d videos: %s", self.source, len(self.skipped),
                           len(self.skipped) + len(self.records), listing)
        if not self.records:
            shortest = min(b.num_frames for b in self.buckets)
            raise VideoDataError(self.source, f"no usable videos ({len(self.skipped)} skipped)",
                                 f"at least one readable video of >= {frames_needed(shortest, frame_stride)} frames")

    def __len__(self) -> int:
        return len(self.records)

    def size_of(self, index: int) -> Bucket:
        """The height × width × frames clip `index` is loaded at."""
        return self.buckets[self.bucket_of[index]]

    def groups(self) -> list[list[int]]:
        """Clip indices per bucket, in bucket order (buckets without clips left out)."""
        groups = [[i for i, b in enumerate(self.bucket_of) if b == k] for k in range(len(self.buckets))]
        return [g for g in groups if g]

    def __getitem__(self, index: int) -> dict:
        record, size = self.records[index], self.size_of(index)
        frames = decode_frames(record.path, size.num_frames, self.frame_stride)
        frames = frames.permute(0, 3, 1, 2).float()  # [T, 3, H, W] in [0, 255]
        frames = resize_and_crop(frames, size.height, size.width)
        video = (frames / 127.5 - 1.0).clamp(-1.0, 1.0).permute(1, 0, 2, 3).contiguous()
        return {"video": video, "condition": video[:, 0].clone(), "caption": record.caption,
                "path": str(record.path), "index": index}


def training_clips(data: DataConfig, source: str | Path) -> VideoClipDataset:
    """A training or validation set as a config names it: `data.*` sizes, or `data.buckets`."""
    return VideoClipDataset(source, data.height, data.width, data.num_frames, data.frame_stride,
                            skip_bad=data.skip_bad_videos, buckets=tuple(parse_bucket(b) for b in data.buckets))


__all__ = [
    "VIDEO_SUFFIXES", "MANIFEST_NAMES", "VideoDataError", "ClipRecord", "read_clip_records", "frames_needed",
    "probe_video", "decode_frames", "resize_and_crop", "VideoClipDataset", "training_clips",
]
