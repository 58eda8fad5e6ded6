"""Resolution × frame-count buckets for footage of mixed aspect ratios and lengths (`data.buckets`).

A bucket is `HxWxF` (height and width multiples of 16, F = 4k+1 frames). Each clip goes to the bucket whose
aspect ratio is nearest its own (in log ratio), among those with that ratio the one with the most frames the
clip has, then the largest; it is resized to cover the bucket and centre-cropped (`videos.resize_and_crop`).
Every micro-batch holds clips of one bucket (`train.MicroStepSampler`). No torch here: configs check buckets.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_FORM = re.compile(r"^(\d+)x(\d+)x(\d+)$")


@dataclass(frozen=True)
class Bucket:
    height: int
    width: int
    num_frames: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.num_frames}"


def parse_bucket(text: str) -> Bucket:
    """`"480x832x81"` → Bucket(480, 832, 81); otherwise ValueError, its message what was expected."""
    match = _FORM.match(str(text).strip())
    if not match:
        raise ValueError("HxWxF, e.g. 480x832x81")
    bucket = Bucket(*(int(g) for g in match.groups()))
    if bucket.height % 16 or bucket.width % 16 or min(bucket.height, bucket.width) < 16:
        raise ValueError("height and width multiples of 16 (VAE 8x, patch 2x)")
    if (bucket.num_frames - 1) % 4:
        raise ValueError("4k+1 frames (the VAE compresses time 4x)")
    return bucket


def choose_bucket(buckets: tuple[Bucket, ...], height: int, width: int, frames: int) -> int | None:
    """Index of the bucket of a clip of height × width with `frames` usable frames (None: shorter than all)."""
    fitting = [i for i, b in enumerate(buckets) if b.num_frames <= frames]
    if not fitting:
        return None
    ratio = math.log(width / height)
    return min(fitting, key=lambda i: (abs(math.log(buckets[i].width / buckets[i].height) - ratio),
                                       -buckets[i].num_frames, -buckets[i].height * buckets[i].width))


def bucket_batches(groups: list[list[int]], batch_size: int) -> list[list[int]]:
    """Each group (one bucket's clip indices, in order) cut into full batches, the last topped up by wrapping."""
    batches = []
    for members in groups:
        for start in range(0, len(members), batch_size):
            batches.append([members[(start + j) % len(members)] for j in range(batch_size)])
    return batches


__all__ = ["Bucket", "parse_bucket", "choose_bucket", "bucket_batches"]
