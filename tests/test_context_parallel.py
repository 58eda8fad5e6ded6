"""Context parallelism's bookkeeping and its errors (the 2-process training test is in test_multiprocess.py)."""
from pathlib import Path

import pytest
import torch

from cinelora import models
from cinelora.cli import main
from cinelora.speed.context_parallel import Layout, check_shapes, enable, sum_gradient_over_group

ROOT = Path(__file__).resolve().parents[1]


def test_layout_groups_consecutive_processes_and_scales_the_loss():
    ranks = [Layout(2, i, 6) for i in range(6)]
    assert [(r.data_rank, r.data_world) for r in ranks] == [(0, 3), (0, 3), (1, 3), (1, 3), (2, 3), (2, 3)]
    assert ranks[0].loss_scale == 2 and Layout(1, 3, 4).data_rank == 3
    with pytest.raises(ValueError, match="divisor of the number of processes \\(3\\)"):
        Layout(2, 0, 3)


def test_heads_and_tokens_must_divide():
    true_size = models.transformer_config("wan2.1-i2v-14b")
    check_shapes(true_size, 8, 81, 720, 1280, "data")  # 40 heads, 75,600 tokens
    with pytest.raises(ValueError, match="40 heads and the 75600 video tokens of data \\(81x720x1280\\).*by 16"):
        check_shapes(true_size, 16, 81, 720, 1280, "data")
    with pytest.raises(ValueError, match="by 4"):
        check_shapes(models.transformer_config("smoke"), 4, 5, 32, 32, "data")  # 2 heads


def test_cli_rejects_a_degree_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="divisor of the number of processes \\(1\\)"):
        main(["train", "--config", str(ROOT / "experiments" / "lora_r8" / "config.yaml"), "--profile", "smoke",
              "--context-parallel", "2"])
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_enable_refuses_a_machine_without_accelerator(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 0)
    with pytest.raises(RuntimeError, match="accelerator"):
        enable(models.build_transformer("smoke", torch.float32, "cpu", seed=0), Layout(1, 0, 1))


def _summed_gradient(rank: int, store: str, grads: torch.Tensor) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    x = torch.ones(3, requires_grad=True)
    (sum_gradient_over_group(x, torch.distributed.group.WORLD) * (rank + 1)).sum().backward()
    grads[rank] = x.grad
    torch.distributed.destroy_process_group()


def test_the_attack_gradient_is_summed_over_the_group(tmp_path):
    # each rank's share of d(loss)/d(frame) is (rank + 1); every rank must see the group's sum, 3
    grads = torch.zeros(2, 3).share_memory_()
    torch.multiprocessing.spawn(_summed_gradient, args=(str(tmp_path / "store"), grads), nprocs=2)
    assert torch.equal(grads, torch.full((2, 3), 3.0))
    x = torch.ones(3, requires_grad=True)
    assert sum_gradient_over_group(x, None) is x  # no group: the tensor itself
