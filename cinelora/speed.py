"""Speed and memory levers for the LoRA step of the Wan transformer, each one switch of `SpeedLevers`.

The defaults are the plain step (diffusers + peft + diffusers' gradient checkpointing + default attention),
the benchmark's baseline. Measured effects on one H100 80GB (torch 2.11, cuDNN 9.19; results/bench/,
480x832x81 unless named; baseline 13.40 s/step, 53.3 GiB):

- `attention_backend`: a backend of diffusers' attention dispatcher. "native" is torch SDPA's own choice,
  which on this torch is already cuDNN's fused attention (580 TFLOP/s forward, 470-490 forward+backward
  alone, against 350/285 for FlashAttention-2 and 180/120 for the efficient kernel). Forcing
  "_native_cudnn" adds contiguous copies of q, k, v: 13.74 s (0.975x). FlashAttention-3 and the `*_hub`
  kernels are not offered: they need the flash-attn package or a download.
- `checkpointing`: "full" recomputes every block in the backward (diffusers' own gradient checkpointing,
  which keeps only each block's inputs); "none" keeps every activation (does not fit at true size).
- `keep_attention_blocks`: selective checkpointing for the first k blocks: their self-attention output
  (the attention kernel's outputs: one N x d tensor and the log-sum-exp) is kept, everything else
  recomputed, so the backward skips the dearest op (O(N^2)) for O(N) memory per block. All 40 blocks:
  11.77 s (1.14x) for +12.3 GiB at 480p; 8 of 40 at 720p: 1.04x.
- `offload_blocks`: the last m blocks keep their checkpointed input in pinned CPU memory instead of on
  the GPU (copied on a side stream in the forward, back before the block's recompute). All 40 blocks:
  -11.8 GiB at 480p for +1.6% time; it is what makes 720x1280x81 fit on 80 GB (55.6 GiB peak).
- `compile_blocks`: regional `torch.compile` of each transformer block (diffusers' `compile_repeated_blocks`,
  static shapes), which fuses the fp32 norms, modulation, RoPE and gating: 1.19-1.22x and 3 GiB less at
  480p (about 35 s of compilation per clip size, once per process).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
from diffusers import WanTransformer3DModel
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

ATTENTION_BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math")
CHECKPOINTING = ("none", "full")

# The fused SDPA ops autograd sees; selective checkpointing keeps their outputs (out, logsumexp, seeds).
_ATTENTION_OPS = tuple(getattr(torch.ops.aten, name).default for name in (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu"))


@dataclass(frozen=True)
class SpeedLevers:
    """How the LoRA step runs; the defaults are the plain diffusers + peft step (the baseline)."""
    attention_backend: str = "native"
    checkpointing: str = "full"
    keep_attention_blocks: int = 0
    offload_blocks: int = 0
    compile_blocks: bool = False

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend={self.attention_backend!r}; expected one of {ATTENTION_BACKENDS}")
        if self.checkpointing not in CHECKPOINTING:
            raise ValueError(f"checkpointing={self.checkpointing!r}; expected one of {CHECKPOINTING}")
        if min(self.keep_attention_blocks, self.offload_blocks) < 0:
            raise ValueError("keep_attention_blocks and offload_blocks must be >= 0")
        if self.checkpointing == "none" and (self.keep_attention_blocks or self.offload_blocks):
            raise ValueError("keep_attention_blocks and offload_blocks act on checkpointed blocks: "
                             "they need checkpointing='full'")

    def as_dict(self) -> dict:
        return asdict(self)


def _keep_self_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective-checkpoint policy: keep self-attention outputs (key length = query length), recompute the rest."""
    if op in _ATTENTION_OPS and args[1].shape[-2] == args[0].shape[-2]:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


_copy_streams: dict[torch.device, torch.cuda.Stream] = {}


def _to_cpu(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """A CPU copy of `tensor` (pinned, copied on a side stream when on CUDA) and the event that ends the copy."""
    if not tensor.is_cuda:
        return tensor.detach().clone(), None
    stream = _copy_streams.setdefault(tensor.device, torch.cuda.Stream(tensor.device))
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    stream.wait_stream(torch.cuda.current_stream(tensor.device))
    with torch.cuda.stream(stream):
        host.copy_(tensor, non_blocking=True)
    tensor.record_stream(stream)  # the allocator must not reuse its memory before the copy has read it
    return host, stream.record_event()


class _OffloadedCheckpoint(torch.autograd.Function):
    """A checkpointed block whose input waits in CPU memory: forward without saving anything, backward
    copies the input back, recomputes the block with autograd on and backpropagates through it.

    The block's trainable parameters are passed as inputs so the output requires a gradient even where
    the hidden states do not (block 0); their gradients accumulate in the inner backward, as in torch's
    reentrant checkpoint. Wan blocks draw no random numbers (dropout 0), so no RNG state is replayed.
    """

    @staticmethod
    def forward(ctx, block: torch.nn.Module, n_args: int, *inputs):
        args, params = inputs[:n_args], inputs[n_args:]
        hidden, rest = args[0], args[1:]
        device_type = hidden.device.type
        ctx.block, ctx.n_args, ctx.n_params, ctx.device = block, n_args, len(params), hidden.device
        ctx.autocast = (device_type, torch.get_autocast_dtype(device_type), torch.is_autocast_enabled(device_type))
        ctx.host, ctx.copied = _to_cpu(hidden)
        ctx.hidden_grad = hidden.requires_grad
        ctx.rest = rest  # encoder states, modulation and RoPE tables: shared by every block, stay on the device
        return block(hidden, *rest)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.copied is not None:
            ctx.copied.synchronize()
        hidden = ctx.host.to(ctx.device, non_blocking=True).requires_grad_(ctx.hidden_grad)
        rest = [r.detach().requires_grad_(r.requires_grad) if isinstance(r, torch.Tensor) else r for r in ctx.rest]
        device_type, dtype, enabled = ctx.autocast
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            out = ctx.block(hidden, *rest)
        torch.autograd.backward(out, grad_out)
        grads = [hidden.grad] + [r.grad if isinstance(r, torch.Tensor) else None for r in rest]
        return (None, None, *grads, *([None] * ctx.n_params))


def _offloaded_checkpoint(block: torch.nn.Module, *args) -> torch.Tensor:
    params = [p for p in block.parameters() if p.requires_grad]
    return _OffloadedCheckpoint.apply(block, len(args), *args, *params)


def block_strategies(num_blocks: int, levers: SpeedLevers) -> list[str]:
    """Per block: "keep_attention" (first k), "offload" (last m) or "full"."""
    k, m = levers.keep_attention_blocks, levers.offload_blocks
    if k + m > num_blocks:
        raise ValueError(f"keep_attention_blocks + offload_blocks = {k + m} > {num_blocks} blocks")
    return ["keep_attention" if i < k else "offload" if i >= num_blocks - m else "full" for i in range(num_blocks)]


def _checkpoint_function(strategies: dict[int, str]):
    """The `gradient_checkpointing_func` diffusers calls as f(block, *block_args), per block's strategy."""
    keep = functools.partial(create_selective_checkpoint_contexts, _keep_self_attention)

    def checkpoint_block(block: torch.nn.Module, *args):
        strategy = strategies[id(block)]
        if strategy == "offload":
            return _offloaded_checkpoint(block, *args)
        if strategy == "keep_attention":
            return checkpoint(block.__call__, *args, use_reentrant=False, context_fn=keep)
        return checkpoint(block.__call__, *args, use_reentrant=False)  # = diffusers' default function

    return checkpoint_block


def apply_speed_levers(transformer: WanTransformer3DModel, levers: SpeedLevers) -> None:
    """Set the attention backend and the checkpointing of `transformer` (LoRA attached or not) in place.

    Compilation cannot be undone: once compiled, the blocks stay compiled whatever a later call says.
    """
    # set, never reset: reset_attention_backend falls back to diffusers' process-wide active backend, which
    # the last set_attention_backend call changed, so "native" after "_native_cudnn" would stay cuDNN
    transformer.set_attention_backend(levers.attention_backend)
    if levers.checkpointing == "none":
        transformer.disable_gradient_checkpointing()
    else:
        blocks = list(transformer.blocks)
        strategies = {id(b): s for b, s in zip(blocks, block_strategies(len(blocks), levers))}
        transformer.enable_gradient_checkpointing(gradient_checkpointing_func=_checkpoint_function(strategies))
    if levers.compile_blocks:
        # static shapes: a new clip size compiles its own kernels instead of switching to dynamic-shape ones
        transformer.compile_repeated_blocks(dynamic=False)


__all__ = ["SpeedLevers", "apply_speed_levers", "block_strategies", "ATTENTION_BACKENDS", "CHECKPOINTING"]
