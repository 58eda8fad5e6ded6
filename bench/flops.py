"""FLOPs of one LoRA training step of the Wan I2V transformer, as a function of its config.

Convention (the one MFU is usually quoted in, PaLM appendix B): only matrix products count, 2 FLOPs per
multiply-add; norms, activations, RoPE, softmax and the optimizer (AdamW on a few million LoRA
parameters) are left out. Per block of width d = heads x head_dim, FFN width f, N video tokens, L_t = 512
text tokens and L_i image tokens (257 for CLIP ViT-H/14), the forward is

    self-attention projections q, k, v, out   4 x 2 N d^2
    self-attention QK^T and PV                2 x 2 N^2 d
    cross-attention q, out                    2 x 2 N d^2
    cross-attention text k, v / image k, v    2 x 2 L_t d^2  +  2 x 2 L_i d_kv d
    cross-attention scores and values         2 x 2 N (L_t + L_i) d
    FFN                                       2 x 2 N d f
    LoRA on a targeted linear (in -> out)     2 M r (in + out)   (M = its input tokens)

plus, outside the blocks, the patch embedding (a Conv3d = a product over C_in p_t p_h p_w), the text,
time and image embedders and the output projection.

Backward with a frozen base (LoRA): a frozen linear computes only the gradient of its input, and only
where that input requires a gradient (same FLOPs as its forward); a LoRA pair computes its two weight
gradients and the gradient of its rank-r middle, plus its input gradient where the input requires one.
With LoRA only in the cross-attention the gradient never needs to reach the inputs: block 0's
self-attention, the text/image K/V projections and all embedders get no backward at all. An attention op
whose q, k or v requires a gradient costs 2x its forward (dQ, dK, dV, dP: four products).

Two extra terms are hardware work, not model work: `recompute`, the forward that activation checkpointing
redoes in the backward (the whole block, less its self-attention core where that output is kept and
less its FFN where the FFN's pre-activation is kept), and `kernel_recompute`, the QK^T that fused
attention kernels (flash, cuDNN, efficient) recompute inside their backward instead of storing the
N x N scores. MFU uses `model`
(forward + backward); HFU uses `hardware` (model + both recomputes).
"""
from __future__ import annotations

from dataclasses import dataclass

from cinelora.shapes import TEXT_TOKENS, video_tokens
from cinelora.speed.levers import CHECKPOINTING


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one optimizer step (one micro-batch); see the module docstring for what each term holds."""
    forward: int
    backward: int
    recompute: int
    kernel_recompute: int

    @property
    def model(self) -> int:
        return self.forward + self.backward

    @property
    def hardware(self) -> int:
        return self.model + self.recompute + self.kernel_recompute


@dataclass(frozen=True)
class _Linear:
    name: str  # module name inside a WanTransformerBlock (a LoRA target suffix)
    fan_in: int
    fan_out: int
    tokens: int


def _mm(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def _attention(q_tokens: int, kv_tokens: int, width: int) -> int:
    """Forward FLOPs of softmax(QK^T)V summed over heads: QK^T and PV, each 2 N M d."""
    return 2 * _mm(q_tokens, width, kv_tokens)


def step_flops(config: dict, *, frames: int, height: int, width: int, image_tokens: int, rank: int,
               targets: list[str], batch: int = 1, checkpointing: str = "full",
               keep_attention_blocks: int = 0, uncheckpointed_blocks: int = 0, keep_ffn_blocks: int = 0) -> StepFlops:
    """FLOPs of one LoRA step of a `WanTransformer3DModel(**config)` on `batch` clips of frames x height x width.

    `targets`: LoRA module names inside a block (e.g. "attn2.to_q"); `checkpointing`: "none" or "full"
    (every block recomputed in the backward), with the self-attention output of the first
    `keep_attention_blocks` blocks kept instead of recomputed (selective checkpointing), the FFN of the
    first `keep_ffn_blocks` not recomputed (its pre-activation kept), and the first `uncheckpointed_blocks`
    blocks not recomputed at all. Every term is
    linear in the batch: samples do not attend to each other.
    """
    if checkpointing not in CHECKPOINTING:
        raise ValueError(f"checkpointing={checkpointing!r}; expected one of {CHECKPOINTING}")
    d = config["num_attention_heads"] * config["attention_head_dim"]
    n, l_t, l_i = video_tokens(config, frames, height, width), TEXT_TOKENS, image_tokens
    linears = {lin.name: lin for lin in (
        *(_Linear(f"attn1.{p}", d, d, n) for p in ("to_q", "to_k", "to_v", "to_out.0")),
        _Linear("attn2.to_q", d, d, n), _Linear("attn2.to_k", d, d, l_t), _Linear("attn2.to_v", d, d, l_t),
        _Linear("attn2.add_k_proj", config["added_kv_proj_dim"], d, l_i),
        _Linear("attn2.add_v_proj", config["added_kv_proj_dim"], d, l_i),
        _Linear("attn2.to_out.0", d, d, n), _Linear("ffn.net.0.proj", d, config["ffn_dim"], n),
        _Linear("ffn.net.2", config["ffn_dim"], d, n))}
    unknown = sorted(set(targets) - set(linears))
    if unknown:
        raise ValueError(f"LoRA targets {unknown} are not linear layers of a Wan block; known: {sorted(linears)}")
    lora = set(targets) if rank else set()

    def linear(name: str, input_grad: bool) -> tuple[int, int, bool]:
        """(forward, backward, output requires grad) of one linear, base plus LoRA."""
        lin = linears[name]
        fwd = _mm(lin.tokens, lin.fan_in, lin.fan_out)
        bwd = fwd if input_grad else 0
        if name in lora:
            low = _mm(lin.tokens, lin.fan_in, rank) + _mm(lin.tokens, rank, lin.fan_out)
            fwd += low
            # dA, dB and the gradient of the rank-r middle always; the input's gradient when it needs one
            bwd += low + _mm(lin.tokens, rank, lin.fan_out) + (_mm(lin.tokens, lin.fan_in, rank) if input_grad else 0)
        return fwd, bwd, input_grad or name in lora

    forward = backward = recompute = kernel_recompute = 0
    hidden_grad = False  # the patch embedding and the embedders are frozen and their inputs are data
    for block in range(config["num_layers"]):
        parts = []  # (forward, backward) of every product of the block

        def attention(kv_tokens: int, grad: bool) -> None:
            nonlocal kernel_recompute
            fwd = _attention(n, kv_tokens, d)
            kernel_recompute += fwd // 2 if grad else 0
            parts.append((fwd, 2 * fwd if grad else 0))

        # self-attention
        qkv = [linear(f"attn1.{p}", hidden_grad) for p in ("to_q", "to_k", "to_v")]
        self_grad = any(g for _, _, g in qkv)
        attention(n, self_grad)
        self_core = parts[-1][0]
        out = linear("attn1.to_out.0", self_grad)
        parts += [(f, b) for f, b, _ in (*qkv, out)]
        hidden_grad = hidden_grad or out[2]
        # cross-attention: queries from the video tokens, keys/values from the text and the image tokens
        q = linear("attn2.to_q", hidden_grad)
        text_kv = [linear(f"attn2.{p}", False) for p in ("to_k", "to_v")]
        image_kv = [linear(f"attn2.{p}", False) for p in ("add_k_proj", "add_v_proj")]
        attention(l_t, q[2] or any(g for _, _, g in text_kv))
        attention(l_i, q[2] or any(g for _, _, g in image_kv))
        out = linear("attn2.to_out.0", any(g for _, _, g in (q, *text_kv, *image_kv)))
        parts += [(f, b) for f, b, _ in (q, *text_kv, *image_kv, out)]
        hidden_grad = hidden_grad or out[2]
        # feed-forward
        up = linear("ffn.net.0.proj", hidden_grad)
        down = linear("ffn.net.2", up[2])
        parts += [up[:2], down[:2]]
        hidden_grad = hidden_grad or down[2]
        ffn = up[0] + down[0]

        block_fwd = sum(f for f, _ in parts)
        forward += block_fwd
        backward += sum(b for _, b in parts)
        if checkpointing == "full" and block >= uncheckpointed_blocks:
            recompute += (block_fwd - (self_core if block < keep_attention_blocks else 0)
                          - (ffn if block < keep_ffn_blocks else 0))

    p_t, p_h, p_w = config["patch_size"]
    patch = _mm(n, config["in_channels"] * p_t * p_h * p_w, d)
    text_embedder = _mm(l_t, config["text_dim"], d) + _mm(l_t, d, d)
    time_embedder = _mm(1, config["freq_dim"], d) + _mm(1, d, d) + _mm(1, d, 6 * d)
    image_embedder = _mm(l_i, config["image_dim"], config["image_dim"]) + _mm(l_i, config["image_dim"], d)  # mult=1
    head = _mm(n, d, config["out_channels"] * p_t * p_h * p_w)
    forward += patch + text_embedder + time_embedder + image_embedder + head
    backward += head if hidden_grad else 0
    return StepFlops(batch * forward, batch * backward, batch * recompute, batch * kernel_recompute)


__all__ = ["StepFlops", "step_flops"]
