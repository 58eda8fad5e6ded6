"""The LoRA in the original Wan key layout, the one ComfyUI and Wan's own code read.

ComfyUI takes a Wan LoRA only under the original module names (`diffusion_model.blocks.N.cross_attn.q.lora_A.weight`
/ `lora_B.weight`); diffusers' `transformer.blocks.N.attn2.to_q...` keys load there with no layer patched and no
error. `save_lora` writes this layout beside the diffusers-format file (`WAN_LAYOUT_WEIGHTS`), and `cinelora lora
convert` writes it for an existing LoRA folder or file.

Strength: the α/r scale is folded into `lora_B`, and each block layer carries `.alpha` = r (scale 1). Every reader
then applies the trained strength: ComfyUI and Wan's code (α/r), diffusers (which reads `.alpha` of block layers and
converts the layout back), and one that ignores `.alpha` (which would otherwise load α=16, r=8 at half strength).
Layers outside the blocks carry no `.alpha`: diffusers' converter rejects one there (scale 1 either way).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cinelora.atomic import atomic_path

WAN_LAYOUT_WEIGHTS = "lora_wan.safetensors"
PREFIX = "diffusion_model."
METADATA_KEY = "cinelora"
# diffusers' WanTransformer3DModel linear layer → the original Wan module (inside a block, then outside)
BLOCK_NAMES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
ROOT_NAMES = {
    "proj_out": "head.head",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
}
_KEY = re.compile(r"transformer\.(?P<module>.+)\.(?P<matrix>lora_[AB])\.weight")
_BLOCK = re.compile(r"blocks\.(?P<index>\d+)\.(?P<layer>.+)")


class LoraLayoutError(ValueError):
    """A LoRA file this module cannot convert; the message names the file and what was expected."""


def wan_module(module: str) -> tuple[str, bool]:
    """The original Wan name of a diffusers module path, and whether it lies inside a block."""
    block = _BLOCK.fullmatch(module)
    if block and block["layer"] in BLOCK_NAMES:
        return f"blocks.{block['index']}.{BLOCK_NAMES[block['layer']]}", True
    if module in ROOT_NAMES:
        return ROOT_NAMES[module], False
    raise KeyError(module)


def to_wan_layout(state: dict[str, torch.Tensor], rank: int, alpha: float,
                  source: str = "LoRA") -> dict[str, torch.Tensor]:
    """Diffusers-format LoRA tensors (`transformer.<module>.lora_{A,B}.weight`) in the original Wan layout."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sorted(state.items()):
        match = _KEY.fullmatch(key)
        if match is None:
            raise LoraLayoutError(f"{source}: key {key!r}; expected transformer.<module>.lora_A/lora_B.weight "
                                  "(a diffusers-format Wan LoRA)")
        try:
            name, in_block = wan_module(match["module"])
        except KeyError:
            raise LoraLayoutError(f"{source}: {match['module']!r} is no linear layer of the Wan transformer that "
                                  f"has an original name ({sorted(BLOCK_NAMES)} in a block, {sorted(ROOT_NAMES)})")
        scale = alpha / rank if match["matrix"] == "lora_B" else 1.0
        out[f"{PREFIX}{name}.{match['matrix']}.weight"] = (tensor.float() * scale).contiguous()
        if in_block:
            out[f"{PREFIX}{name}.alpha"] = torch.tensor(float(rank))
    return out


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], int, float]:
    """A diffusers-format LoRA file's tensors, rank and alpha (from the adapter config in its metadata)."""
    with safe_open(path, framework="pt") as f:
        metadata = json.loads((f.metadata() or {}).get("lora_adapter_metadata", "{}"))
        state = {k: f.get_tensor(k) for k in f.keys()}
    config = {k.removeprefix("transformer."): v for k, v in metadata.items()}
    if "r" not in config or "lora_alpha" not in config:
        raise LoraLayoutError(f"{path}: no adapter config (r, lora_alpha) in its metadata, so its strength is "
                              "unknown; save it with cinelora.lora.save_lora")
    if config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise LoraLayoutError(f"{path}: rsLoRA or per-layer rank/alpha patterns; expected one rank and alpha")
    return state, int(config["r"]), float(config["lora_alpha"])


def export_wan_layout(source: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write the Wan-layout file of a LoRA folder (or of its diffusers-format file); returns its path.

    The default destination is `WAN_LAYOUT_WEIGHTS` beside the source file; an existing one is kept unless `force`.
    """
    from cinelora.lora import LORA_WEIGHTS

    source = Path(source)
    path = source / LORA_WEIGHTS if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such LoRA file (expected a LoRA folder holding {LORA_WEIGHTS}, or "
                                "a diffusers-format .safetensors file)")
    out = Path(out) if out is not None else path.with_name(WAN_LAYOUT_WEIGHTS)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    state, rank, alpha = read_adapter(path)
    tensors = to_wan_layout(state, rank, alpha, source=str(path))
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(  # one key: safetensors orders several at random
            {"layout": "wan (ComfyUI); alpha/rank folded into lora_B", "rank": rank, "trained_alpha": alpha})})
    return out


__all__ = ["WAN_LAYOUT_WEIGHTS", "METADATA_KEY", "BLOCK_NAMES", "ROOT_NAMES", "LoraLayoutError", "wan_module", "to_wan_layout",
           "read_adapter", "export_wan_layout"]
