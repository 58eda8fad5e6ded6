"""The mechanism behind the speed levers (`cinelora.speed.levers`): per-block checkpointing that keeps a
block's self-attention outputs (`_AttentionTape`) or FFN pre-activation (`_FeedForwardReplay`), offloads
what it keeps to pinned CPU memory, skips the recompute of the first blocks, compiles the blocks and turns
their frozen linears to fp8. What each buys, measured on H100 and H200: docs/performance.md.

Kept attention outputs are recorded and replayed by `_AttentionTape`, not torch's selective checkpointing:
that keeps the kernel's output buffer itself, which compiled blocks reuse, and gave wrong gradients.
"""
from __future__ import annotations

import collections
import contextlib
import types
import weakref
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.models.attention import FeedForward
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only
from torch.utils.checkpoint import checkpoint

from cinelora.speed import fa4, fp8
from cinelora.speed.levers import FA4, BlockPlan, SpeedLevers, block_plans

BLOCKS_IN_FLIGHT = 2  # offloaded blocks the CPU may queue ahead of the GPU (`_throttle`)
RECOMPILE_LIMIT = 64  # compiled variants of the block code before torch.compile gives up (torch's default: 8)

# The fused SDPA ops autograd sees; `_AttentionTape` keeps their outputs (out, logsumexp, seeds) for kept attention.
_ATTENTION_OPS = tuple(getattr(torch.ops.aten, name).default for name in (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu"))


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
    reserved (the reserved-minus-allocated gap it closed: docs/performance.md).
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


__all__ = ["apply_speed_levers", "check_keep_ffn", "RECOMPILE_LIMIT"]
