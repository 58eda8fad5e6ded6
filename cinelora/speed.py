"""Speed and memory levers for the LoRA step of the Wan transformer, each one switch of `SpeedLevers`.

The defaults are the plain step (diffusers + peft + diffusers' gradient checkpointing + default attention),
the benchmark's baseline. Measured on one H100 80GB (torch 2.11, cuDNN 9.19; results/bench/, Table 4),
480x832x81 unless named; baseline 13.31-13.67 s/step, 53.2 GiB, MFU 31.2-32.0% (runs h100-g, -i, -k, -l, -m):

- `attention_backend`: a backend of diffusers' attention dispatcher. "native" is torch SDPA's own choice,
  which on this torch is already cuDNN's fused attention (580 TFLOP/s forward, 470-490 forward+backward
  alone, against 350/285 for FlashAttention-2 and 180/120 for the efficient kernel). Forcing
  "_native_cudnn" adds contiguous copies of q, k, v: 0.98x. "fa4" swaps FlashAttention-4 in for torch's
  flash kernel (`cinelora/fa4.py`, the flash-attn-4 package): 647 TFLOP/s forward and 546 forward+backward
  at 720p's N = 75,600 against cuDNN's 575/463 (a one-off probe; the bench's attention stage now has an
  "fa4" row). With compiled blocks and kept attention: 480p 8.90 s against 9.82 s with cuDNN, 1.496x the
  baseline of the same run (13.31 s, run h100-i; 1.497x in run h100-k, 1.503x in run h100-l); 720p below.
  The `*_hub` kernels need a download and are not offered.
- `checkpointing`: "full" recomputes every block in the backward (diffusers' own gradient checkpointing,
  which keeps only each block's inputs); "none" keeps every activation (does not fit at true size).
- `keep_attention_blocks`: the first k blocks also keep their self-attention kernel outputs (one N x d
  tensor and the log-sum-exp), so their recompute skips the dearest op (O(N^2)) for O(N) memory. With
  compiled blocks, all 40: 10.0 s (1.36x, MFU 42.6%) for +9.7 GiB.
- `uncheckpointed_blocks`: the first j blocks are not checkpointed: they keep every activation (about
  5 GiB a block at 480p, 11.4 GiB at 720p) and skip their recompute (about 39 ms a block at 480p), in
  memory that offloading the other blocks frees. With FA4, compiled blocks, kept attention and the rest
  offloaded, at 480p (run h100-l): 4 blocks 8.97 s, 58.9 GiB, 1.525x the baseline of the run (13.67 s)
  against 9.10 s (1.503x) for none; 6 blocks 9.02 s with 78 GiB reserved (run h100-m), 8 out of memory.
  At 720p: on an H200 (run h200-c) 4 blocks 34.98 s, 95.1 GiB, against 35.28 s for none; on the H100 2
  blocks reserve 78 GiB and took 36.0 s (run h100-m; 35.0 s for none in run h100-j), so 0 at 720p.
- `keep_ffn_blocks`: the first n blocks (where checkpointed) keep their FFN pre-activation h = x W1 + b1
  (N x 13,824 bf16 on the GPU: 1.95 GiB a block at 720p), so their recompute skips the FFN's two products
  (47% of the block's linear FLOPs) and its backward runs from h (`_FeedForwardReplay`). Exact where only attention
  layers train (checked: `check_keep_ffn`). At 720p on an H200, with FA4, compiled blocks, kept attention
  and all 40 offloaded (run h200-f): 40 blocks 33.96 s, MFU 52.3%, 128.1 GiB, 1.507x the baseline of the
  run (51.18 s) against 35.16 s (1.456x, 49.5 GiB) for none: 30 ms a block (run h200-e: 40 blocks 33.95 s,
  1.509x; 36 blocks 34.66 s median, 34.10 s fastest step, 120.3 GiB). On an 80 GB GPU at most about 10
  blocks fit at 720p (not measured), so the `full` profile keeps 0.
- `offload_blocks`: the last m blocks keep what they keep (their input; their attention outputs too where
  they are among the first k) in pinned CPU memory, copied on a side stream in the forward and back,
  prefetched one block ahead, in the backward; the CPU queues at most two offloaded blocks ahead of the
  GPU (`_throttle`), which cut the memory reserved at 720p from 78.0 to 56.2 GiB (49.5 allocated) at the
  same speed (runs h200-c, h200-f). At 720x1280x81, compiled, kept attention in all 40 blocks:
  24 offloaded 40.9 s/step, 72.8 GiB, MFU 43.4%; all 40 offloaded 39.7 s, 49.5 GiB, MFU 44.7%; with FA4,
  all 40 offloaded 35.0 s, 49.5 GiB, MFU 50.7% (24: 35.4 s, 72.8 GiB); on an H200 35.28 s, MFU 50.3%,
  1.459x the baseline of the same run (51.46 s, 82.2 GiB; run h200-c). The copies hide behind compute:
  at 480p with FA4, all 40 offloaded 9.12 s at 39.1 GiB against 9.10 s at 62.9 GiB (run h100-l). At 720p
  40 blocks pin about 80 GiB of host memory (62 GB of tensors; torch's pinned-memory cache rounds each buffer
  up to a power of two).
- `compile_blocks`: regional `torch.compile` of each transformer block (diffusers' `compile_repeated_blocks`,
  static shapes), which fuses the fp32 norms, modulation, RoPE and gating: 1.19-1.22x and 3 GiB less at
  480p (about 35 s of compilation per clip size, once per process); with it 720x1280x81 fits on 80 GB
  without offload (75.4 GiB; with expandable segments, `configure_cuda_allocator`).
- `fp8_base`: the blocks' frozen linears multiply in float8 (`cinelora/fp8.py`). With compiled blocks and
  kept attention (cuDNN): 480p 8.99 s against 10.0 s, +1.8 GiB; 720p with 24 blocks offloaded 40.3 s
  against 40.9 s (76.9 GiB). On the CPU smoke model the LoRA gradient keeps cosine 0.9988 with bf16's
  (relative error 4.9%); no same-run true-size check exists yet, so it stays off. With "fa4" it fails in
  FlashAttention-4's tensor checks (run h100-j) and is refused.

Kept attention outputs are recorded and replayed by `_AttentionTape`, not torch's selective checkpointing:
that keeps the kernel's output buffer itself, which compiled blocks reuse, and gave wrong gradients.
"""
from __future__ import annotations

import collections
import contextlib
import os
import types
import weakref
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.models.attention import FeedForward
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only
from torch.utils.checkpoint import checkpoint

from cinelora import fa4, fp8
from cinelora.config import TrainConfig

ALLOCATOR_VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"
FA4 = "fa4"  # diffusers' "_native_flash" with torch's flash kernel swapped for FlashAttention-4 (cinelora/fa4.py)
ATTENTION_BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math", FA4)
CHECKPOINTING = ("none", "full")
BLOCKS_IN_FLIGHT = 2  # offloaded blocks the CPU may queue ahead of the GPU (`_throttle`)
_BLOCK_COUNTS = ("keep_attention_blocks", "offload_blocks", "uncheckpointed_blocks", "keep_ffn_blocks")
RECOMPILE_LIMIT = 64  # compiled variants of the block code before torch.compile gives up (torch's default: 8)

# The fused SDPA ops autograd sees; `_AttentionTape` keeps their outputs (out, logsumexp, seeds) for kept attention.
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
    uncheckpointed_blocks: int = 0
    keep_ffn_blocks: int = 0
    compile_blocks: bool = False
    fp8_base: bool = False

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend={self.attention_backend!r}; expected one of {ATTENTION_BACKENDS}")
        if self.checkpointing not in CHECKPOINTING:
            raise ValueError(f"checkpointing={self.checkpointing!r}; expected one of {CHECKPOINTING}")
        counts = (self.keep_attention_blocks, self.offload_blocks, self.uncheckpointed_blocks, self.keep_ffn_blocks)
        if min(counts) < 0:
            raise ValueError(f"{', '.join(_BLOCK_COUNTS)} must be >= 0; got {counts}")
        if self.fp8_base and self.attention_backend == FA4:
            raise ValueError("fp8_base with attention_backend 'fa4' fails in FlashAttention-4's tensor checks "
                             "('out must not have broadcast dimensions', H100 run h100-j): use one or the other")
        if self.fp8_base and self.keep_ffn_blocks:
            raise ValueError("keep_ffn_blocks backpropagates through the FFN's bf16 weights itself: it cannot be "
                             "combined with fp8_base")
        if self.checkpointing == "none" and any(counts):
            raise ValueError(f"{', '.join(_BLOCK_COUNTS)} act on checkpointed blocks: they need checkpointing='full'")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_train(cls, train: TrainConfig) -> SpeedLevers:
        """The levers a config's `train` section asks for (ValueError where they do not go together)."""
        return cls(attention_backend=train.attention_backend,
                   checkpointing="full" if train.gradient_checkpointing else "none",
                   keep_attention_blocks=train.keep_attention_blocks, offload_blocks=train.offload_blocks,
                   uncheckpointed_blocks=train.uncheckpointed_blocks, keep_ffn_blocks=train.keep_ffn_blocks,
                   compile_blocks=train.compile_blocks, fp8_base=train.fp8_base)


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


_copy_streams: dict[torch.device, torch.cuda.Stream] = {}


def _copy_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream of `device` that every offload copy, out and back, runs on (so they stay in order)."""
    return _copy_streams.setdefault(device, torch.cuda.Stream(device))


class _Host:
    """The pinned CPU copy of a CUDA tensor, with its strides (compiled code checks them)."""
    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def _stash(tensor: torch.Tensor, offload: bool) -> torch.Tensor | _Host:
    """What a checkpoint keeps of `tensor` for its backward: the tensor itself, or with `offload` (CUDA tensors
    that hold data) a pinned CPU copy, copied on the side stream and not waited for."""
    if not (offload and tensor.is_cuda and tensor.numel()):
        return tensor.detach()
    stream = _copy_stream(tensor.device)
    host = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, pin_memory=True)
    stream.wait_stream(torch.cuda.current_stream(tensor.device))
    with torch.cuda.stream(stream):
        host.copy_(tensor, non_blocking=True)
    tensor.record_stream(stream)  # the allocator must not reuse its memory before the copy has read it
    return _Host(host)


_in_flight: collections.deque = collections.deque()  # compute-stream events, one per offloaded block queued


def _throttle(device: torch.device) -> None:
    """Keep the CPU at most `BLOCKS_IN_FLIGHT` offloaded blocks ahead of the GPU.

    The allocator reuses a tensor an offload copy reads only once the copy stream has passed it
    (`record_stream`); a CPU that queues the whole forward ahead of the GPU thus keeps every block's input
    reserved: 28 GiB at 720p, 12 GiB at 480p (reserved against allocated, runs h200-c and h100-l).
    """
    _in_flight.append(torch.cuda.current_stream(device).record_event())
    while len(_in_flight) > BLOCKS_IN_FLIGHT:
        _in_flight.popleft().synchronize()


def _log_sumexp_index(op: torch._ops.OpOverload) -> int | None:
    names = [a.name for a in op._schema.arguments]
    return names.index("compute_log_sumexp") if "compute_log_sumexp" in names else None


# which argument of each fused attention op asks for the log-sum-exp the backward needs (None: always returned)
_LOG_SUMEXP_ARG = {op: _log_sumexp_index(op) for op in _ATTENTION_OPS}


class _AttentionTape(TorchDispatchMode):
    """Records a block's self-attention kernel outputs in its forward without autograd (`record=True`), or
    hands them back in the block's recompute instead of running the kernels again.

    `ignore_compile_internals` keeps compiled blocks compiled: their attention kernels are calls out of the
    compiled code and still dispatch here at run time; while torch.compile traces, ops pass through.
    """

    def __init__(self, entries: list, record: bool, offload: bool = False):
        super().__init__()
        self.entries, self.record, self.offload = entries, record, offload

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tracing = torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None
        if tracing or func not in _ATTENTION_OPS or args[1].shape[-2] != args[0].shape[-2]:
            return func(*args, **kwargs)
        if self.record:
            index = _LOG_SUMEXP_ARG[func]  # without autograd the kernel would skip the log-sum-exp the backward needs
            if index is not None and len(args) > index:
                args = (*args[:index], True, *args[index + 1:])
            elif index is not None:
                kwargs = {**kwargs, "compute_log_sumexp": True}
            out = func(*args, **kwargs)
            # a clone: compiled code reuses an output's buffer once it is dead (torch's own selective
            # checkpointing keeps the buffer itself, and compiled blocks then get wrong gradients)
            self.entries.append(tree_map_only(torch.Tensor, lambda t: _stash(t.clone(), self.offload), out))
            return out
        if not self.entries:
            raise RuntimeError(f"{func}: the recompute runs more self-attention kernels than the forward recorded")
        return self.entries.pop(0)


class _FeedForwardTape:
    """A block's FFN pre-activation h = x W1 + b1: kept in the block's forward (`recording`), then handed to
    `_FeedForwardReplay` in its recompute, which skips the FFN's two products. `current` is the tape of the
    block running now; FFNs run as usual where it is None."""
    current: ClassVar["_FeedForwardTape | None"] = None

    def __init__(self) -> None:
        self.recording, self.kept = True, None

    @contextlib.contextmanager
    def active(self, recording: bool):
        if _FeedForwardTape.current is not None:
            raise RuntimeError("a block with a kept FFN ran inside another one")
        self.recording, _FeedForwardTape.current = recording, self
        try:
            yield
        finally:
            _FeedForwardTape.current = None


class _FeedForwardReplay(torch.autograd.Function):
    """The FFN of a block's recompute, from its kept pre-activation h. Backward: the input gradient through
    the frozen FFN, ((g W2) * gelu'(h)) W1, the products autograd would run. Forward: no products; it returns
    NaN, because nothing the backward reads depends on the value (the block adds it to its output, gated by
    a modulation that gets no gradient: `check_keep_ffn`), and any use of it would turn the gradients NaN."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, kept: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
                approximate: str) -> torch.Tensor:
        ctx.save_for_backward(kept, up, down)
        ctx.hidden_dtype, ctx.approximate = hidden.dtype, approximate
        return kept.new_full((*kept.shape[:-1], down.shape[0]), float("nan"))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kept, up, down = ctx.saved_tensors
        grad_kept = torch.ops.aten.gelu_backward(grad.to(kept.dtype) @ down.to(kept.dtype), kept,
                                                 approximate=ctx.approximate)
        return (grad_kept @ up.to(kept.dtype)).to(ctx.hidden_dtype), None, None, None, None


@torch.compiler.disable  # a graph break: the compiled block runs up to the FFN, then from its output on
def _taped_feed_forward(ffn: FeedForward, hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """`FeedForward.forward` of a block that keeps its FFN: records or replays on the active tape."""
    tape = _FeedForwardTape.current
    if tape is None:
        return FeedForward.forward(ffn, hidden, *args, **kwargs)
    act, down = ffn.net[0], ffn.net[2]
    if tape.recording:
        tape.kept = act.proj(hidden)
        return down(F.gelu(tape.kept, approximate=act.approximate))
    if tape.kept is None:
        raise RuntimeError("the recompute runs a kept FFN that the forward did not record")
    kept, tape.kept = tape.kept, None
    return _FeedForwardReplay.apply(hidden, kept, act.proj.weight, down.weight, act.approximate)


def check_keep_ffn(transformer: WanTransformer3DModel) -> None:
    """Raise ValueError unless skipping the FFN's forward in the recompute is exact for `transformer`: the
    FFN is Wan's (linear, tanh-GELU, dropout 0, linear) and every trainable parameter sits in a block's
    attention, so the FFN's weights, its output's gate (modulation and time embedding) need no gradient."""
    trained = [n for n, p in transformer.named_parameters() if p.requires_grad
               and not (n.startswith("blocks.") and (".attn1." in n or ".attn2." in n))]
    if trained:
        raise ValueError(f"keep_ffn_blocks needs every trained parameter inside the blocks' attention (LoRA "
                         f"targets attn1.* / attn2.*); these are outside: {trained[:4]}")
    ffn = transformer.blocks[0].ffn
    net = getattr(ffn, "net", [])
    if not (isinstance(ffn, FeedForward) and len(net) == 3 and isinstance(getattr(net[0], "proj", None),
            torch.nn.Linear) and isinstance(net[1], torch.nn.Dropout) and net[1].p == 0
            and isinstance(net[2], torch.nn.Linear)):
        raise ValueError(f"keep_ffn_blocks needs Wan's FFN (Linear, GELU, Dropout(0), Linear); blocks[0].ffn "
                         f"is {ffn}")


class _BlockCheckpoint(torch.autograd.Function):
    """A checkpointed block: forward without autograd keeping only its input (and what `plan` keeps);
    backward recomputes the block with autograd on, the kept ops replayed, and backpropagates through it.
    With `plan.offload` the input and attention outputs wait in pinned CPU memory and are copied back in
    the backward (prefetched while the block after it in the backward order recomputes).

    The block's trainable parameters are passed as inputs so the output requires a gradient even where
    the hidden states do not (block 0); their gradients accumulate in the inner backward, as in torch's
    reentrant checkpoint. Wan blocks draw no random numbers (dropout 0), so no RNG state is replayed.
    """

    @staticmethod
    def forward(ctx, block: torch.nn.Module, plan: BlockPlan, n_args: int, *inputs):
        args, params = inputs[:n_args], inputs[n_args:]
        hidden, rest = args[0], args[1:]
        device_type = hidden.device.type
        ctx.block, ctx.n_params, ctx.device = block, len(params), hidden.device
        ctx.autocast = (device_type, torch.get_autocast_dtype(device_type), torch.is_autocast_enabled(device_type))
        ctx.hidden_grad = hidden.requires_grad
        ctx.rest = rest  # encoder states, modulation and RoPE tables: shared by every block, stay on the device
        ctx.kept, ctx.tape, ctx.fetched = _stash(hidden, plan.offload), ([] if plan.keep_attention else None), None
        ctx.ffn = _FeedForwardTape() if plan.keep_ffn else None
        with _AttentionTape(ctx.tape, True, plan.offload) if plan.keep_attention else contextlib.nullcontext(), \
                ctx.ffn.active(recording=True) if ctx.ffn else contextlib.nullcontext():
            out = block(hidden, *rest)
        ctx.throttle = plan.offload and hidden.is_cuda
        if ctx.throttle:
            _pending.append(weakref.ref(ctx))
            _throttle(ctx.device)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        _fetch(ctx)
        _prefetch_next()
        hidden, tape, copied = ctx.fetched
        if copied is not None:
            compute = torch.cuda.current_stream(ctx.device)
            compute.wait_event(copied)
            for t in (hidden, *tree_flatten(tape)[0]):
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(compute)  # made on the copy stream, used and freed on this one
        hidden = hidden.requires_grad_(ctx.hidden_grad)
        rest = [r.detach().requires_grad_(r.requires_grad) if isinstance(r, torch.Tensor) else r for r in ctx.rest]
        device_type, dtype, enabled = ctx.autocast
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled), \
                _AttentionTape(tape, record=False) if tape is not None else contextlib.nullcontext(), \
                ctx.ffn.active(recording=False) if ctx.ffn else contextlib.nullcontext():
            out = ctx.block(hidden, *rest)
        if tape:
            raise RuntimeError(f"the recompute replayed {len(ctx.tape) - len(tape)} of {len(ctx.tape)} recorded "
                               "self-attention outputs: the block ran differently in its forward and its recompute")
        torch.autograd.backward(out, grad_out)
        grads = [hidden.grad] + [r.grad if isinstance(r, torch.Tensor) else None for r in rest]
        ctx.kept = ctx.tape = ctx.fetched = ctx.ffn = None  # done: pinned buffers go back to torch's host cache
        if ctx.throttle:
            _throttle(ctx.device)
        return (None, None, None, *grads, *([None] * ctx.n_params))


# forward contexts of offloaded blocks whose backward has not run, in forward order (weak: a graph freed
# without a backward drops its entries)
_pending: list[weakref.ref] = []


def _fetch(ctx) -> None:
    """Start copying a block's offloaded tensors back to its device (on the copy stream, once)."""
    if ctx.fetched is not None:
        return
    offloaded = [t for t in tree_flatten((ctx.kept, ctx.tape))[0] if isinstance(t, _Host)]
    if not offloaded:
        ctx.fetched = (ctx.kept, list(ctx.tape) if ctx.tape is not None else None, None)
        return
    stream = _copy_stream(ctx.device)  # behind the forward's copies to the CPU: no wait needed
    with torch.cuda.stream(stream):
        back = tree_map_only(_Host, lambda h: h.tensor.to(ctx.device, non_blocking=True), (ctx.kept, ctx.tape))
    ctx.fetched = (*back, stream.record_event())


def _prefetch_next() -> None:
    """Fetch the next offloaded block of the backward order, so its copy overlaps this block's recompute."""
    while _pending:
        ctx = _pending[-1]()
        if ctx is None or ctx.fetched is not None or ctx.kept is None:
            _pending.pop()
            continue
        _fetch(ctx)
        return


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


def _checkpoint_function(plans: dict[int, BlockPlan]):
    """The `gradient_checkpointing_func` diffusers calls as f(block, *block_args), per block's plan."""

    def checkpoint_block(block: torch.nn.Module, *args):
        plan = plans[id(block)]
        if not plan.checkpointed:
            return block(*args)
        if plan == BlockPlan():
            return checkpoint(block.__call__, *args, use_reentrant=False)  # = diffusers' default function
        params = [p for p in block.parameters() if p.requires_grad]
        return _BlockCheckpoint.apply(block, plan, len(args), *args, *params)

    return checkpoint_block


def configure_cuda_allocator() -> None:
    """Use expandable segments in torch's CUDA allocator unless the user configured it; call before CUDA's first use.

    At 720x1280x81 the default allocator fails with 10.8 GiB reserved but free (fragmentation between the
    480p and 720p tensor sizes of one process); expandable segments fit the same step (results/bench/*_h100-d/e).
    """
    os.environ.setdefault(ALLOCATOR_VARIABLE, "expandable_segments:True")


def apply_speed_levers(transformer: WanTransformer3DModel, levers: SpeedLevers) -> None:
    """Set the attention backend and the checkpointing of `transformer` (LoRA attached or not) in place.

    Compilation, fp8 and kept FFNs cannot be undone: once compiled or converted, the blocks stay so whatever
    a later call says (a kept FFN's forward stays a graph break of the compiled block, and runs as usual
    where its block does not keep it). Attach the LoRA first: fp8 converts the frozen linears that exist at
    the call, and kept FFNs check that only attention layers train. FA4 is process-wide: torch's flash
    kernel from an "fa4" call to the next call with another backend.
    """
    backend = levers.attention_backend
    if backend == FA4:
        fa4.activate(next(transformer.parameters()).device)
        backend = "_native_flash"
    else:
        fa4.restore()  # torch's own flash kernel again, should an earlier call have swapped in FA4
    # set, never reset: reset_attention_backend falls back to diffusers' process-wide active backend, which
    # the last set_attention_backend call changed, so "native" after "_native_cudnn" would stay cuDNN
    transformer.set_attention_backend(backend)
    if levers.checkpointing == "none":
        transformer.disable_gradient_checkpointing()
    else:
        blocks = list(transformer.blocks)
        plans = block_plans(len(blocks), levers)
        if levers.keep_ffn_blocks:
            check_keep_ffn(transformer)
        for block, plan in zip(blocks, plans):
            if plan.keep_ffn:  # before compiling: the compiled block then breaks its graph at the FFN
                block.ffn.forward = types.MethodType(_taped_feed_forward, block.ffn)
        transformer.enable_gradient_checkpointing(
            gradient_checkpointing_func=_checkpoint_function({id(b): p for b, p in zip(blocks, plans)}))
    if levers.fp8_base and not any(isinstance(m, fp8.FrozenFp8Linear) for m in transformer.blocks.modules()):
        fp8.convert_frozen_linears(transformer.blocks)
    if levers.compile_blocks:
        # every clip size, grad mode (the forward runs without autograd, the recompute with it) and attention
        # backend is one more compiled variant of the shared block code; past torch's default of 8 the blocks
        # fall back to eager, which needs more memory (a bench's 720p case after two 480p ones ran out)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        # static shapes: a new clip size compiles its own kernels instead of switching to dynamic-shape ones
        transformer.compile_repeated_blocks(dynamic=False)


__all__ = ["SpeedLevers", "BlockPlan", "apply_speed_levers", "block_plans", "check_keep_ffn",
           "configure_cuda_allocator", "ALLOCATOR_VARIABLE", "ATTENTION_BACKENDS", "CHECKPOINTING", "FA4",
           "RECOMPILE_LIMIT"]
