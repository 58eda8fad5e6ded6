"""The instrument's training loop: a run stopped by its deadline and continued ends where an uninterrupted run
ends (checkpoints keep AdamW's moments in bf16, and so does the run); a non-finite loss stops it with the last
checkpoint intact."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from cinelora import seeding
from cinelora.config import PhaseConfig
from cinelora.instrument.loop import Deadline, fit, learning_rate, read_log
from cinelora.train import NonFiniteLossError

PHASE = PhaseConfig(steps=12, batch_size=4, lr=0.05, warmup_steps=2, weight_decay=0.0, max_grad_norm=1.0,
                    val_every=4, checkpoint_every=3, log_every=1)
TARGET = torch.tensor([1.0, -2.0, 0.5])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def _step_loss(model, poison_at: int | None = None):
    def step_loss(step: int):
        x = torch.randn(PHASE.batch_size, 3, generator=seeding.generator(0, "data_order", step))
        loss = (model(x).squeeze(1) - x @ TARGET).pow(2).mean()
        if step == poison_at:
            loss = loss * float("nan")
        return loss, {"mse": loss.item()}
    return step_loss


class _StopAfter(Deadline):
    """A deadline that passes after `checks` step checks (a time budget, made deterministic)."""

    def __init__(self, checks: int):
        super().__init__(None)
        self.left = checks

    @property
    def passed(self) -> bool:
        self.left -= 1
        return self.left < 0


def _fit(model, tmp, deadline, **kw):
    validate = lambda: {"w0": model.weight[0, 0].item()}  # noqa: E731
    return fit("t", model, _step_loss(model, **kw), validate, PHASE, tmp / "ckpt", tmp / "log.jsonl", deadline,
               progress=False)


def test_a_stopped_and_continued_run_ends_as_an_uninterrupted_one(tmp_path):
    whole = _model()
    assert _fit(whole, tmp_path / "a", Deadline(None)).finished
    parts = _model()
    first = _fit(parts, tmp_path / "b", _StopAfter(6))  # at a checkpoint step, where both runs round the moments
    assert not first.finished and first.step == 6
    stored = torch.load(tmp_path / "b" / "ckpt" / "step_0000006" / "optimizer.pt", weights_only=True)["state"][0]
    assert stored["exp_avg"].dtype == stored["exp_avg_sq"].dtype == torch.bfloat16  # so a checkpoint travels
    resumed = _model()  # a new process: weights and optimizer come from the checkpoint
    assert _fit(resumed, tmp_path / "b", Deadline(None)).finished
    assert torch.equal(whole.weight, resumed.weight) and torch.equal(whole.bias, resumed.bias)
    logs = [[{k: v for k, v in r.items() if k != "s_per_step"} for r in read_log(tmp_path / d / "log.jsonl")]
            for d in "ab"]
    assert logs[0] == logs[1]  # the log of the continued run holds each step once, as the uninterrupted one
    assert [r["step"] for r in logs[0] if "val" in r] == [0, 4, 8, 12]


def test_a_nan_loss_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="step 7"):
        _fit(_model(), tmp_path, Deadline(None), poison_at=7)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_0000003", "step_0000006"]


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    rates = [learning_rate(PHASE, s) for s in range(PHASE.steps)]
    assert rates[0] == pytest.approx(PHASE.lr / 2) and rates[1] == pytest.approx(PHASE.lr)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))
    longer = dataclasses.replace(PHASE, steps=10**6)
    assert learning_rate(longer, 10**6) == pytest.approx(PHASE.lr / 10)
