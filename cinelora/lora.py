"""LoRA on the Wan transformer (peft through diffusers), saved in the format the stock pipeline loads.

A LoRA folder holds `pytorch_lora_weights.safetensors` as `WanImageToVideoPipeline.save_lora_weights` writes it
(keys `transformer.blocks.<i>.<module>.lora_{A,B}.weight`, float32) with the peft adapter config in the file's
metadata, the same LoRA in the original Wan layout that ComfyUI loads (`lora_wan.safetensors`,
cinelora.lora_wan_layout), plus `lora.json` (rank, alpha, targets, parameter count). The metadata matters: without it diffusers
rebuilds the adapter with alpha = rank, silently (half strength at r=8, alpha=16).
"""
from __future__ import annotations

import json
from pathlib import Path

import peft
import torch
from diffusers import WanImageToVideoPipeline
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from torch.distributed.tensor import DTensor

from cinelora.config import LoraConfig
from cinelora.atomic import atomic_directory
from cinelora.lora_wan_layout import export_wan_layout

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
SIDECAR = "lora.json"
_METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY


def _is_lora_parameter(name: str, adapter_name: str | None = None) -> bool:
    parts = name.split(".")
    for i, part in enumerate(parts[:-2]):
        if part in ("lora_A", "lora_B") and (adapter_name is None or parts[i + 1] == adapter_name):
            return True
    return False


def _matches(module_name: str, target: str) -> bool:
    # peft's rule for a plain string target: the full name or a dot-separated suffix
    return module_name == target or module_name.endswith("." + target)


def _adaptable_modules(transformer: torch.nn.Module) -> list[str]:
    """Names of the linear layers LoRA can wrap (already wrapped ones included)."""
    return [n for n, m in transformer.named_modules()
            if isinstance(m, LoraLayer) or (isinstance(m, torch.nn.Linear) and ".lora_" not in n
                                            and not n.endswith(".base_layer"))]


def _target_suffixes(names: list[str]) -> list[str]:
    """Distinct block-relative names (`attn2.to_q`, …) in model order: what a target may be."""
    seen: dict[str, None] = {}
    for n in names:
        parts = n.split(".")
        seen[".".join(parts[2:]) if parts[0] == "blocks" else n] = None
    return list(seen)


def check_targets(transformer: torch.nn.Module, targets: list[str]) -> None:
    """Raise ValueError naming every target that matches no linear layer, with the valid names."""
    names = _adaptable_modules(transformer)
    unmatched = [t for t in targets if not any(_matches(n, t) for n in names)]
    if unmatched:
        raise ValueError(f"LoRA targets match no linear layer of the transformer: {unmatched}. Targets are "
                         f"module-name suffixes; valid ones: {_target_suffixes(names)}")


def attach_lora(transformer: torch.nn.Module, cfg: LoraConfig, adapter_name: str = "default") -> None:
    """Freeze the base and add a trainable float32 LoRA (B = 0 at init, so the output is unchanged).

    The base weights keep their dtype; peft casts the input to the LoRA dtype and the sum back.
    """
    check_targets(transformer, cfg.targets)
    transformer.requires_grad_(False)
    transformer.add_adapter(peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                            target_modules=list(cfg.targets), init_lora_weights=True),
                            adapter_name=adapter_name)
    for name, param in transformer.named_parameters():
        if _is_lora_parameter(name, adapter_name):
            param.data = param.data.float()
            param.requires_grad_(True)


def lora_parameters(transformer: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable LoRA parameters (what the optimizer steps)."""
    return [p for n, p in transformer.named_parameters() if p.requires_grad and _is_lora_parameter(n)]


def lora_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached full copies of every LoRA parameter, keyed by module path (adapter name included).

    Under FSDP2 the parameters are DTensors sharded across processes: each is gathered in full, so every process
    must call this (a collective), not the main one alone.
    """
    return {n: _full(p.detach()).clone() for n, p in transformer.named_parameters() if _is_lora_parameter(n)}


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def load_lora_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a `lora_state_dict` back in place (resuming); keys and shapes must match exactly."""
    params = {n: p for n, p in transformer.named_parameters() if _is_lora_parameter(n)}
    missing, unexpected = sorted(params.keys() - state.keys()), sorted(state.keys() - params.keys())
    if missing or unexpected:
        raise ValueError(f"LoRA state does not fit the model: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)})")
    wrong = [n for n, p in params.items() if p.shape != state[n].shape]
    if wrong:
        raise ValueError(f"LoRA state has other shapes (another rank?): {wrong[:5]} ({len(wrong)})")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def save_lora(transformer: torch.nn.Module, folder: str | Path, cfg: LoraConfig, adapter_name: str = "default",
              state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write (atomically, replacing `folder`) the LoRA in diffusers' format plus the `lora.json` sidecar.

    `state` (a `lora_state_dict`) gives the weights to write; by default the transformer's own parameters,
    which must then be whole tensors (pass a gathered `state` when FSDP2 shards them).
    """
    adapter = transformer.peft_config[adapter_name]
    if adapter.r != cfg.rank or adapter.lora_alpha != cfg.alpha:
        raise ValueError(f"adapter {adapter_name!r} has r={adapter.r}, alpha={adapter.lora_alpha}; "
                         f"the config says r={cfg.rank}, alpha={cfg.alpha}")
    layers = {k: v.detach().cpu().contiguous()
              for k, v in get_peft_model_state_dict(transformer, state, adapter_name=adapter_name).items()}
    metadata = adapter.to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])  # a set: fixed order, same bytes every save
    sidecar = {"weights": LORA_WEIGHTS, "rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout,
               "targets": list(cfg.targets), "num_parameters": sum(v.numel() for v in layers.values()),
               "num_tensors": len(layers)}
    with atomic_directory(folder, overwrite=True) as tmp:
        WanImageToVideoPipeline.save_lora_weights(tmp, transformer_lora_layers=layers, weight_name=LORA_WEIGHTS,
                                                  transformer_lora_adapter_metadata=metadata,
                                                  safe_serialization=True)
        export_wan_layout(tmp / LORA_WEIGHTS)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return Path(folder)


def load_lora_into_pipeline(pipe: WanImageToVideoPipeline, folder: str | Path,
                            adapter_name: str = "default") -> None:
    """Load a `save_lora` folder with the stock `pipe.load_lora_weights` (alpha from the file's metadata)."""
    weights = Path(folder) / LORA_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: not a LoRA folder written by save_lora")
    with safe_open(weights, framework="pt") as f:
        if _METADATA_KEY not in (f.metadata() or {}):
            raise ValueError(f"{weights} carries no adapter metadata: diffusers would load it with alpha = rank")
    pipe.load_lora_weights(str(folder), weight_name=LORA_WEIGHTS, adapter_name=adapter_name)


__all__ = ["attach_lora", "check_targets", "lora_parameters", "lora_state_dict", "load_lora_state_dict",
           "save_lora", "load_lora_into_pipeline", "LORA_WEIGHTS", "SIDECAR"]
