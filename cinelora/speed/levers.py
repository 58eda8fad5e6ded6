"""The speed levers of the LoRA step as plain data, and the rules of which go together (no torch here:
config validation and `--dry-run` use them without loading any model). The mechanism is
`cinelora.speed.checkpointing`; what each lever buys, measured, is docs/performance.md.

The defaults are the plain step (diffusers + peft + diffusers' gradient checkpointing + default attention),
the benchmark's baseline.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

ALLOCATOR_VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"
FA4 = "fa4"  # diffusers' "_native_flash" with torch's flash kernel swapped for FlashAttention-4 (`speed.fa4`)
ATTENTION_BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math", FA4)
CHECKPOINTING = ("none", "full")
_BLOCK_COUNTS = ("keep_attention_blocks", "offload_blocks", "uncheckpointed_blocks", "keep_ffn_blocks")


class LeverError(ValueError):
    """A lever's value, or a combination of levers, that cannot run; `field` names the lever."""

    def __init__(self, field: str, value: object, expected: str):
        super().__init__(f"{field}={value!r}: expected {expected}")
        self.field, self.value, self.expected = field, value, expected


@dataclass(frozen=True)
class SpeedLevers:
    """How the LoRA step runs; the defaults are the plain diffusers + peft step (the baseline)."""
    attention_backend: str = "native"  # a backend of diffusers' attention dispatcher, or "fa4"
    checkpointing: str = "full"  # "full": every block recomputed in the backward (the seed's checkpointing)
    keep_attention_blocks: int = 0  # the first k blocks keep their self-attention outputs: no attention recompute
    offload_blocks: int = 0  # the last m blocks keep what they keep in pinned CPU memory
    uncheckpointed_blocks: int = 0  # the first j blocks keep every activation: no recompute; j + m <= blocks
    keep_ffn_blocks: int = 0  # the first n blocks keep their FFN pre-activation: the recompute skips the FFN
    compile_blocks: bool = False  # regional torch.compile of the transformer blocks
    fp8_base: bool = False  # the blocks' frozen linears multiply in float8 (`speed.fp8`)

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise LeverError("attention_backend", self.attention_backend, f"one of {list(ATTENTION_BACKENDS)}")
        if self.checkpointing not in CHECKPOINTING:
            raise LeverError("checkpointing", self.checkpointing, f"one of {list(CHECKPOINTING)}")
        for name in _BLOCK_COUNTS:
            if getattr(self, name) < 0:
                raise LeverError(name, getattr(self, name), "a block count >= 0")
            if getattr(self, name) and self.checkpointing == "none":
                raise LeverError(name, getattr(self, name), "0 with checkpointing 'none' (the lever acts on "
                                 "checkpointed blocks: it needs checkpointing='full')")
        if self.fp8_base and self.attention_backend == FA4:
            raise LeverError("fp8_base", True, "false with attention_backend 'fa4' (FlashAttention-4's tensor checks "
                             "fail on it: 'out must not have broadcast dimensions', H100 run h100-j)")
        if self.fp8_base and self.keep_ffn_blocks:
            raise LeverError("fp8_base", True, "false with keep_ffn_blocks > 0 (a kept FFN backpropagates through "
                             "the FFN's bf16 weights itself)")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BlockPlan:
    """What one transformer block keeps for its backward. Not `checkpointed`: every activation (no
    recompute); else its input, and its self-attention outputs (`keep_attention`) and FFN pre-activation
    (`keep_ffn`), whose ops the recompute then skips; with `offload` the input and attention outputs wait in
    pinned CPU memory."""
    checkpointed: bool = True
    keep_attention: bool = False
    keep_ffn: bool = False
    offload: bool = False


def block_plans(num_blocks: int, levers: SpeedLevers) -> list[BlockPlan]:
    """Per block: the first j not checkpointed; of the others, those among the first k keep their attention
    outputs, those among the first n their FFN pre-activation, and the last m offload."""
    k, m, j, n = (levers.keep_attention_blocks, levers.offload_blocks, levers.uncheckpointed_blocks,
                  levers.keep_ffn_blocks)
    if max(k, m, n) > num_blocks or j + m > num_blocks:
        raise ValueError(f"keep_attention_blocks={k}, offload_blocks={m}, uncheckpointed_blocks={j}, "
                         f"keep_ffn_blocks={n}: the transformer has {num_blocks} blocks, and a block cannot be "
                         "both offloaded and uncheckpointed")
    return [BlockPlan(checkpointed=False) if i < j else BlockPlan(keep_attention=i < k, keep_ffn=i < n,
                                                                   offload=i >= num_blocks - m)
            for i in range(num_blocks)]


def configure_cuda_allocator() -> None:
    """Use expandable segments in torch's CUDA allocator unless the user configured it; call before CUDA's first
    use. Without them a 720p step can fail with memory reserved but free (fragmentation between tensor sizes;
    docs/performance.md)."""
    os.environ.setdefault(ALLOCATOR_VARIABLE, "expandable_segments:True")


__all__ = ["SpeedLevers", "LeverError", "BlockPlan", "block_plans", "configure_cuda_allocator", "ALLOCATOR_VARIABLE",
           "ATTENTION_BACKENDS", "CHECKPOINTING", "FA4"]
