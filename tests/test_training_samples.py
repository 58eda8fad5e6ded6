"""Samples during training: every validation writes a frame strip and an mp4 of the fixed validation first frames,
the log names them, the training curves mark them, and sampling leaves training's own numbers unchanged."""
from __future__ import annotations

import dataclasses
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cinelora import lora, train
from cinelora.data.videos import decode_frames
from cinelora.report import figures
from cinelora.results import SAMPLE_LABEL_WIDTH
from cinelora.rundir import RunDir


@pytest.fixture(scope="module")
def cfg(tiny_world):
    base = tiny_world("lora_r8", ["cinematic"], {"train": 2, "val": 2})
    tr = dataclasses.replace(base.train, steps=4, grad_accum=1, val_every=2, val_batches=1, checkpoint_every=2,
                             early_stop_patience=0, sample_clips=2, sample_steps=2)
    return dataclasses.replace(base, train=tr)


@pytest.fixture(scope="module")
def sampled(cfg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sampled")
    run = RunDir(tmp / "out", tmp / "state")
    train.train(cfg, run, progress=False)
    return run


def test_every_validation_writes_a_strip_and_an_mp4_per_clip(cfg, sampled):
    log = [json.loads(line) for line in sampled.log.read_text().splitlines()]
    validations = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in validations] == [2, 4]
    for record in validations:
        names = [f"step_{record['step']:06d}_clip{i}" for i in range(2)]
        assert record["samples"] == [f"samples/train/{n}.png" for n in names]
        for name in names:
            strip = Image.open(sampled.out / "samples" / "train" / f"{name}.png")
            # ground truth over generated, at the validation clip's size
            assert strip.size[1] == 2 * cfg.data.height and strip.size[0] > SAMPLE_LABEL_WIDTH
            frames = decode_frames(sampled.state / "train_samples" / f"{name}.mp4", cfg.data.num_frames)
            assert tuple(frames.shape) == (cfg.data.num_frames, cfg.data.height, cfg.data.width, 3)
    assert all("samples" not in r for r in log if "val_loss" not in r)


def test_the_strip_shows_the_clip_the_lora_generates(cfg, sampled):
    """The mp4 holds the generated row of the strip (same frames, through H.264 at CRF 10)."""
    name = "step_000004_clip0"
    strip = np.asarray(Image.open(sampled.out / "samples" / "train" / f"{name}.png").convert("RGB")).astype(float)
    frames = decode_frames(sampled.state / "train_samples" / f"{name}.mp4", cfg.data.num_frames).numpy().astype(float)
    h, w = cfg.data.height, cfg.data.width
    generated_row = strip[h:2 * h, SAMPLE_LABEL_WIDTH:]
    assert generated_row.shape[1] == w * cfg.data.num_frames
    assert np.abs(generated_row[:, :w] - frames[0]).mean() < 4


def test_sampling_leaves_the_trained_lora_unchanged(cfg, sampled, tmp_path):
    plain = RunDir(tmp_path / "out", tmp_path / "state")
    train.train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, sample_clips=0)), plain, progress=False)
    a, b = (load_file(run.lora / lora.LORA_WEIGHTS) for run in (sampled, plain))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (plain.out / "samples").exists()


def test_the_training_curves_mark_the_sampled_steps(sampled):
    log = [json.loads(line) for line in sampled.log.read_text().splitlines()]
    run = figures.TrainingRun(log, best_step=2, stopped_early=False, signal="val_loss", perceptual="lpips")
    fig = figures.make_training_curves({"lora_r8": run}, "smoke")
    squares = [line for line in fig.axes[1].get_lines() if line.get_marker() == "s"]
    assert len(squares) == 1 and list(squares[0].get_xdata()) == [2, 4]
    assert "sample strips written (samples/train/)" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
