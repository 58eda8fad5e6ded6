"""TensorBoard through accelerate's tracker: the log's numbers, the sample strips and the config as events in the
run's state, and a resumed run's events hold each step once (those past its checkpoint purged)."""
from __future__ import annotations

import dataclasses
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cinelora import flow_matching, train
from cinelora.checkpoint import latest_checkpoint
from cinelora.config import config_hash
from cinelora.rundir import RunDir
from cinelora.tensorboard_events import TENSORBOARD_DIR, tensorboard_scalars


@pytest.fixture(scope="module")
def cfg(tiny_world):
    base = tiny_world("lora_r8", ["cinematic"], {"train": 2, "val": 1})
    tr = dataclasses.replace(base.train, steps=4, grad_accum=1, val_every=2, val_batches=1, checkpoint_every=2,
                             log_every=1, early_stop_patience=0, sample_clips=1, sample_steps=1, tensorboard=True)
    return dataclasses.replace(base, train=tr)


def _events(run: RunDir) -> EventAccumulator:
    events = EventAccumulator(str(run.state / TENSORBOARD_DIR), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_the_log_the_strips_and_the_config_reach_tensorboard(cfg, tmp_path):
    run = RunDir(tmp_path / "out", tmp_path / "state")
    train.train(cfg, run, progress=False)
    log = [json.loads(line) for line in run.log.read_text().splitlines()]
    events = _events(run)
    tags = events.Tags()
    for record in log:
        for tag, value in tensorboard_scalars(record).items():
            assert tag in tags["scalars"]
            assert [e.value for e in events.Scalars(tag) if e.step == record["step"]] == pytest.approx([value])
    assert {"train/loss", "val/loss", "optim/lr", "optim/grad_norm"} <= set(tags["scalars"])
    assert [e.step for e in events.Images("samples/clip0")] == [2, 4]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.startswith(f"config sha256 {config_hash(cfg)}") and "    name: lora_r8" in text


def test_a_resumed_run_holds_each_step_once(cfg, tmp_path, monkeypatch):
    run = RunDir(tmp_path / "out", tmp_path / "state")
    real_loss = flow_matching.flow_matching_loss
    calls = {"after_checkpoint": 0}

    def killed_after_a_step_past_the_checkpoint(pred, target):
        if latest_checkpoint(run.checkpoints) is not None:
            calls["after_checkpoint"] += 1
            if calls["after_checkpoint"] == 2:  # step 3 logged, then the process dies in step 4
                raise KeyboardInterrupt
        return real_loss(pred, target)

    monkeypatch.setattr(flow_matching, "flow_matching_loss", killed_after_a_step_past_the_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, run, progress=False)
    monkeypatch.setattr(flow_matching, "flow_matching_loss", real_loss)
    train.train(cfg, run, progress=False)
    assert [e.step for e in _events(run).Scalars("train/loss")] == [1, 2, 3, 4]
