"""Buckets for footage of mixed shapes: each clip goes to the bucket of its aspect ratio with the most frames it has,
every micro-batch holds one bucket, `data check` prints the bucket table, and training runs on mixed footage."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
import yaml

from cinelora import train
from cinelora.config import ConfigError, load_config
from cinelora.data.buckets import Bucket, choose_bucket, parse_bucket
from cinelora.data.video_writer import write_video
from cinelora.data.videos import VideoDataError, training_clips
from cinelora.data.world import render_clip
from cinelora.preflight import describe_datasets
from cinelora.rundir import RunDir

from conftest import ROOT

BUCKETS = ["32x64x9", "64x32x5", "32x32x5"]
# (name, height, width, frames, the bucket it lands in); decord 0.6 misreads widths 48 and 72 (4 channels), so none
CLIPS = [("wide_long", 32, 64, 9, "32x64x9"), ("wide_long2", 48, 96, 12, "32x64x9"),
         ("tall", 64, 32, 9, "64x32x5"), ("tall2", 128, 64, 5, "64x32x5"),
         ("square", 64, 64, 6, "32x32x5"), ("wide_short", 32, 64, 5, "32x32x5")]


def test_a_bucket_is_hxwxf_with_sizes_the_vae_takes():
    assert parse_bucket(" 480x832x81 ") == Bucket(480, 832, 81) and str(Bucket(480, 832, 81)) == "480x832x81"
    for bad, expected in (("480x832", "HxWxF"), ("480x830x81", "multiples of 16"), ("480x832x80", "4k\\+1")):
        with pytest.raises(ValueError, match=expected):
            parse_bucket(bad)


def test_a_clip_goes_to_the_nearest_aspect_with_the_most_frames_it_has():
    buckets = tuple(parse_bucket(b) for b in ["480x832x81", "480x832x49", "832x480x81", "624x624x49"])
    assert choose_bucket(buckets, 1080, 1920, 200) == 0  # 16:9, long enough for 81 frames
    assert choose_bucket(buckets, 1080, 1920, 60) == 1  # too short for 81: the 49-frame bucket of its ratio
    assert choose_bucket(buckets, 1920, 1080, 100) == 2  # portrait
    assert choose_bucket(buckets, 1000, 1100, 100) == 3  # near square: the only square bucket, 49 frames
    assert choose_bucket(buckets, 1920, 1080, 60) == 3  # portrait but too short for its bucket: the nearest that fits
    assert choose_bucket(buckets, 1080, 1920, 48) is None


def test_a_bad_bucket_is_rejected_before_any_work(tmp_path):
    raw = yaml.safe_load((ROOT / "experiments" / "lora_r8" / "config.yaml").read_text())
    raw["data"]["buckets"] = ["32x64x9", "32x64"]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"data\.buckets\[1\]': found '32x64', expected HxWxF"):
        load_config(config, "smoke")
    raw["data"]["buckets"] = ["32x64x9", "32x64x9"]
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="each bucket once"):
        load_config(config, "smoke")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A smoke lora_r8 config trained on footage of three shapes and two lengths, in buckets, batch 2."""
    root = tmp_path_factory.mktemp("mixed")
    for split in ("train", "val"):
        for i, (name, h, w, t, _) in enumerate(CLIPS):
            write_video(root / split / f"{name}.mp4", render_clip("cinematic", i, 0, h, w, t)[0], fps=8)
            (root / split / f"{name}.txt").write_text(f"a clip {name}\n")
    cfg = load_config(ROOT / "experiments" / "lora_r8" / "config.yaml", "smoke")
    data = dataclasses.replace(cfg.data, train=str(root / "train"), val=str(root / "val"), buckets=BUCKETS)
    tr = dataclasses.replace(cfg.train, batch_size=2, grad_accum=2, steps=2, val_every=2, val_batches=3,
                             checkpoint_every=2, early_stop_patience=0)
    return dataclasses.replace(cfg, data=data, train=tr)


def test_each_clip_is_loaded_at_its_buckets_size(mixed):
    dataset = training_clips(mixed.data, mixed.data.train)
    expected = {f"{name}.mp4": bucket for name, *_, bucket in CLIPS}
    assert {r.path.name: str(dataset.size_of(i)) for i, r in enumerate(dataset.records)} == expected
    for i in range(len(dataset)):
        size = dataset.size_of(i)
        assert tuple(dataset[i]["video"].shape) == (3, size.num_frames, size.height, size.width)


def test_a_clip_too_short_for_every_bucket_is_named_or_skipped(mixed):
    data = dataclasses.replace(mixed.data, buckets=["32x64x13", "64x32x9"])
    with pytest.raises(VideoDataError, match=r"square\.mp4: has 6 frames; expected at least 9 \(the shortest "
                                             r"bucket 64x32x9, frame_stride=1\)"):
        training_clips(data, data.train)
    kept = training_clips(dataclasses.replace(data, skip_bad_videos=True), data.train)
    # clips of 9-12 frames are too short for 32x64x13: they go to the nearest bucket they fill, whatever its ratio
    assert [r.path.name for r in kept.records] == ["tall.mp4", "wide_long.mp4", "wide_long2.mp4"]
    assert kept.groups() == [[0, 1, 2]] and {str(kept.size_of(i)) for i in range(3)} == {"64x32x9"}


def test_every_micro_batch_holds_one_bucket_and_an_epoch_covers_every_clip(mixed):
    dataset = training_clips(mixed.data, mixed.data.train)
    groups = dataset.groups()
    per_epoch = len(train.epoch_batches(groups, 2, 0, 0))
    sampler = train.MicroStepSampler(groups, 0, 2, 0, 3 * per_epoch)
    batches = list(sampler)
    assert all(len({dataset.bucket_of[i] for i in batch}) == 1 for batch in batches)
    assert {i for batch in batches[:per_epoch] for i in batch} == set(range(len(dataset)))
    assert batches[:per_epoch] != batches[per_epoch:2 * per_epoch]  # a fresh order every epoch
    assert list(train.MicroStepSampler(groups, 0, 2, 5, 3 * per_epoch)) == batches[5:]  # a resumed run's tail
    ranks = [list(train.MicroStepSampler(groups, 0, 2, 0, per_epoch, rank=r, world=2)) for r in (0, 1)]
    assert [b for pair in zip(*ranks) for b in pair] == list(train.MicroStepSampler(groups, 0, 2, 0, 2 * per_epoch))


def test_data_check_prints_the_bucket_table(mixed):
    lines = describe_datasets(dataclasses.replace(mixed, eval=dataclasses.replace(mixed.eval, domains={})))
    table = lines[lines.index(f"train: {len(CLIPS)} clips from {mixed.data.train}") + 1:][:4]
    counts = Counter(bucket for *_, bucket in CLIPS)
    assert table[0].split() == ["bucket", "(HxWxF)", "clips"]
    assert [row.split() for row in table[1:]] == [[b, str(counts[b])] for b in BUCKETS]


def test_training_runs_on_mixed_footage_in_buckets(mixed, tmp_path):
    result = train.train(mixed, RunDir(tmp_path / "out", tmp_path / "state"), progress=False)
    assert result.steps == 2
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and "val_loss" in log[-1]
    style = train.style_config(dataclasses.replace(mixed, train=dataclasses.replace(mixed.train, style_steps=1)))
    assert style.data.buckets == ["32x64x1", "64x32x1", "32x32x1"] and style.data.num_frames == 1
