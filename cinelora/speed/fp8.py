"""Frozen base linears in fp8 for the LoRA step: the matrix products of the frozen weights run on fp8 tensor cores.

Every frozen `nn.Linear` of the transformer blocks (the base layers under peft's LoRA wrappers included) is
replaced, irreversibly, by a `FrozenFp8Linear`: its weight is stored as float8 e4m3 with one scale per output
channel (for the forward, x W^T) and, transposed, with one scale per input channel (for the input gradient,
g W); activations and output gradients are quantised per row on the fly, and `torch._scaled_mm` multiplies
with those row-wise scales. The frozen weights need no weight gradient, so the backward is one fp8 product.
Weight memory stays the same (two one-byte copies instead of one two-byte copy); the LoRA stays in bf16.

torchao's `Float8Linear` is not used: it computes a weight gradient for every layer, frozen or not.
"""
from __future__ import annotations

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] as (float8 e4m3 [M, K] contiguous, fp32 scale [M, 1]) with x ~= q * scale, row by row."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(E4M3).contiguous(), scale


class _Fp8Matmul(torch.autograd.Function):
    """x W^T with a pre-quantised frozen W; the backward returns the input gradient only."""

    @staticmethod
    def forward(ctx, x, weight, weight_scale, weight_t, weight_t_scale):
        device = x.device.type  # under autocast the output has autocast's dtype, as nn.Linear's would
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        xq, xs = quantize_rows(x.reshape(-1, x.shape[-1]))
        y = torch._scaled_mm(xq, weight.t(), scale_a=xs, scale_b=weight_scale.t(), out_dtype=dtype)
        ctx.save_for_backward(weight_t, weight_t_scale)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        weight_t, weight_t_scale = ctx.saved_tensors
        gq, gs = quantize_rows(grad.reshape(-1, grad.shape[-1]))
        gx = torch._scaled_mm(gq, weight_t.t(), scale_a=gs, scale_b=weight_t_scale.t(), out_dtype=grad.dtype)
        return gx.reshape(*grad.shape[:-1], gx.shape[-1]), None, None, None, None


class FrozenFp8Linear(torch.nn.Module):
    """A frozen `nn.Linear` whose products run in fp8 (see the module docstring); same inputs and outputs."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        if linear.weight.requires_grad:
            raise ValueError("FrozenFp8Linear replaces frozen linears only; this one's weight requires a gradient")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        for name, tensor in zip(("weight_fp8", "weight_scale"), quantize_rows(weight)):
            self.register_buffer(name, tensor)
        for name, tensor in zip(("weight_t_fp8", "weight_t_scale"), quantize_rows(weight.t())):
            self.register_buffer(name, tensor)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _Fp8Matmul.apply(x, self.weight_fp8, self.weight_scale, self.weight_t_fp8, self.weight_t_scale)
        return y if self.bias is None else y + self.bias.to(y.dtype)


def convert_frozen_linears(blocks: torch.nn.Module) -> int:
    """Replace every frozen `nn.Linear` under `blocks` by a `FrozenFp8Linear`, in place; returns how many."""
    targets = [(parent, name, child) for parent in blocks.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear and not child.weight.requires_grad]
    for parent, name, child in targets:
        setattr(parent, name, FrozenFp8Linear(child))
    return len(targets)


__all__ = ["FrozenFp8Linear", "convert_frozen_linears", "quantize_rows", "E4M3"]
