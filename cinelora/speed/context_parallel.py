"""Context parallelism for long clips: diffusers' Ulysses attention for Wan over groups of training processes.

P processes form P / c data-parallel groups of c context-parallel ranks (consecutive process indices). The c
ranks of a group train on the same clips with the same noise; each carries 1/c of the video tokens through the
blocks (the `_cp_plan` diffusers ships for Wan) and attention swaps tokens for heads by all-to-all, so the
attention memory of one rank shrinks c-fold. The loss is taken on the gathered output, so it is the same on
every rank of a group, and each rank's LoRA gradient holds its own tokens' share: the group's gradient is
their sum. DDP and FSDP2 average over all P processes, so the training loop multiplies the loss by c
(`loss_scale`) to get the mean over groups of that sum. Gradients with respect to the conditioning frame (the
adversarial attack) are summed over the group by `sum_gradient_over_group`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig, WanTransformer3DModel
from torch.distributed.device_mesh import init_device_mesh

from cinelora.shapes import video_tokens

MESH_DIMS = ("data", "ring", "ulysses")


@dataclass(frozen=True)
class Layout:
    """How `processes` processes split into data-parallel groups of `degree` context-parallel ranks."""
    degree: int
    process_index: int
    processes: int

    def __post_init__(self) -> None:
        if self.degree < 1 or self.processes % self.degree:
            raise ValueError(f"--context-parallel {self.degree}: expected a divisor of the number of processes "
                             f"({self.processes})")

    @property
    def data_rank(self) -> int:
        return self.process_index // self.degree

    @property
    def data_world(self) -> int:
        return self.processes // self.degree

    @property
    def loss_scale(self) -> int:
        return self.degree


def check_shapes(transformer_config: dict, degree: int, frames: int, height: int, width: int, field: str) -> None:
    """Ulysses splits the heads and the video tokens c ways: both must divide evenly (before any work starts)."""
    heads = transformer_config["num_attention_heads"]
    tokens = video_tokens(transformer_config, frames, height, width)
    if heads % degree or tokens % degree:
        raise ValueError(f"--context-parallel {degree}: the transformer's {heads} heads and the {tokens} video tokens "
                         f"of {field} ({frames}x{height}x{width}) must both be divisible by {degree}")


def enable(transformer: WanTransformer3DModel, layout: Layout) -> dist.ProcessGroup:
    """Shard `transformer`'s sequence over the context-parallel group of this process; returns that group.

    Call after the attention backend is set (diffusers checks it supports context parallelism) and before
    `accelerator.prepare`. Needs torch.distributed initialised (the Accelerator does it under a launcher).
    """
    if torch.accelerator.device_count() == 0:
        raise RuntimeError("--context-parallel: diffusers places each rank on an accelerator (GPU); this machine "
                           "has none")
    device_type = next(transformer.parameters()).device.type
    mesh = init_device_mesh(device_type, (layout.data_world, 1, layout.degree), mesh_dim_names=MESH_DIMS)
    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=layout.degree, mesh=mesh))
    return mesh["ulysses"].get_group()


class _SumGradient(torch.autograd.Function):
    """Identity forward; backward sums the gradient over `group` (each rank holds its tokens' share)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sum_gradient_over_group(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """`tensor`, whose gradient is summed over the context-parallel `group` (unchanged without one)."""
    return tensor if group is None else _SumGradient.apply(tensor, group)


__all__ = ["Layout", "check_shapes", "enable", "sum_gradient_over_group", "MESH_DIMS"]
