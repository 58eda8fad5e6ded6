"""The Wan2.1 I2V components, from a local diffusers folder (or the hub) or from an architecture preset.

Two sources, one set of classes (the ones `WanImageToVideoPipeline` expects):
- `pretrained`: a diffusers-format folder of Wan2.1-I2V-14B-720P (or a folder `save_components` wrote). The
  folder is checked before anything loads: one `ModelSourceError` names every missing file.
- `random`: seeded random weights at a preset size: `wan2.1-i2v-14b` (true size, for compute benchmarks),
  `proxy` (small, trains in minutes on one GPU at 64x64x17) and `smoke` (tiny, CPU tests in seconds).

Dtypes mirror what diffusers' `from_pretrained(dtype=...)` gives: the transformer and text/image encoders in
`weight_dtype`, except the transformer's `_keep_in_fp32_modules` (time embedder, modulation tables, affine
norms) and its RoPE tables, which stay fp32. The VAE is always fp32, as Wan's reference code runs it; it is
small (127M parameters at true size) and its latents are the training targets.
"""
from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from huggingface_hub import snapshot_download
from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection,
                          PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel)

from cinelora import seeding
from cinelora.atomic import atomic_directory
from cinelora.config import ModelConfig
from cinelora.tokenizer import build_caption_tokenizer

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
HUB_ID = "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
TRUE_SIZE_PARAMETERS = 16_394_878_784  # WanTransformer3DModel of Wan2.1 I2V-14B (403,838,464 per block)


class ModelSourceError(FileNotFoundError):
    """The model folder is missing or incomplete, or the hub id cannot be fetched."""


@dataclass
class WanComponents:
    """Everything `WanImageToVideoPipeline` needs; all weights frozen (requires_grad False, eval mode)."""
    transformer: WanTransformer3DModel
    vae: AutoencoderKLWan
    text_encoder: UMT5EncoderModel
    tokenizer: PreTrainedTokenizerBase
    image_encoder: CLIPVisionModelWithProjection
    image_processor: CLIPImageProcessor
    scheduler: UniPCMultistepScheduler


@dataclass(frozen=True)
class ArchitecturePreset:
    """Constructor arguments of each component; `text_encoder["vocab_size"]` None = the caption tokenizer's."""
    transformer: dict
    vae: dict
    text_encoder: dict
    image_encoder: dict


def _i2v_transformer(heads: int, head_dim: int, layers: int, ffn_dim: int, text_dim: int, image_dim: int,
                     rope_max_seq_len: int = 1024) -> dict:
    # added_kv_proj_dim = inner dim: the image tokens reach attn2.add_k_proj/add_v_proj after the image
    # embedder projects them to the model width. Without it the model is not the I2V architecture (diffusers'
    # own I2V test omits it, so its image tokens are attended as if they were text).
    return dict(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=36,
                out_channels=16, text_dim=text_dim, freq_dim=256, ffn_dim=ffn_dim, num_layers=layers,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=image_dim,
                added_kv_proj_dim=heads * head_dim, rope_max_seq_len=rope_max_seq_len)


PRESETS: dict[str, ArchitecturePreset] = {
    # Wan2.1-I2V-14B-720P-Diffusers' configs: UMT5-XXL encoder, CLIP ViT-H/14 (257 tokens), Wan2.1 VAE.
    "wan2.1-i2v-14b": ArchitecturePreset(
        transformer=_i2v_transformer(heads=40, head_dim=128, layers=40, ffn_dim=13824, text_dim=4096,
                                     image_dim=1280),
        vae=dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                 temperal_downsample=[False, True, True]),
        text_encoder=dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
        image_encoder=dict(hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32,
                           num_attention_heads=16, image_size=224, patch_size=14, hidden_act="gelu"),
    ),
    # One GPU, minutes per run at 64x64x17; 65 image tokens (CLIP 64 px, patch 8). Sized so the pre-trained
    # folder (experiments/proxy_base) and the proxy evaluators fit in git's 40 MB: VAE 6.1M parameters (fp16
    # file), frozen random text encoder 0.8M, image encoder 0.4M.
    "proxy": ArchitecturePreset(
        transformer=_i2v_transformer(heads=4, head_dim=64, layers=6, ffn_dim=1024, text_dim=256, image_dim=128),
        vae=dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 3, 3], num_res_blocks=1,
                 temperal_downsample=[False, True, True]),
        text_encoder=dict(vocab_size=None, d_model=256, d_kv=64, d_ff=512, num_layers=1, num_heads=4),
        image_encoder=dict(hidden_size=128, intermediate_size=512, projection_dim=128, num_hidden_layers=2,
                           num_attention_heads=4, image_size=64, patch_size=8, hidden_act="gelu"),
    ),
    # The sizes of diffusers' Wan I2V pipeline test, plus the I2V image projections; CPU, milliseconds.
    "smoke": ArchitecturePreset(
        transformer=_i2v_transformer(heads=2, head_dim=12, layers=2, ffn_dim=32, text_dim=32, image_dim=4,
                                     rope_max_seq_len=32),
        vae=dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                 temperal_downsample=[False, True, True]),
        text_encoder=dict(vocab_size=None, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                          relative_attention_num_buckets=8),
        image_encoder=dict(hidden_size=4, intermediate_size=16, projection_dim=4, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=4),
    ),
}

# subfolder -> weight-file stem (diffusers models write diffusion_pytorch_model*, transformers models model*)
_WEIGHTS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model",
            "image_encoder": "model"}
_CONFIG_FILES = ("model_index.json", "transformer/config.json", "vae/config.json", "text_encoder/config.json",
                 "image_encoder/config.json", "image_processor/preprocessor_config.json",
                 "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json")


def _preset(architecture: str) -> ArchitecturePreset:
    if architecture not in PRESETS:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[architecture]


def transformer_config(architecture: str) -> dict:
    """WanTransformer3DModel constructor arguments of a preset (a copy)."""
    return copy.deepcopy(_preset(architecture).transformer)


# ---------------------------------------------------------------------------------------------------------
# Random weights

@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for model init without disturbing the caller's random state."""
    devices = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _keeps_fp32(model: torch.nn.Module, param_name: str) -> bool:
    # diffusers' from_pretrained rule (model_loading_utils.load_model_dict_into_meta)
    return any(m in param_name.split(".") for m in getattr(model, "_keep_in_fp32_modules", None) or [])


def _init_parameters(model: WanTransformer3DModel) -> None:
    """Random init in place, as the constructor would: torch defaults, plus Wan's own tables."""
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            continue
        for name, param in own.items():
            if name == "scale_shift_table":  # WanTransformerBlock / WanTransformer3DModel: randn / sqrt(dim)
                param.data.normal_().div_(param.shape[-1] ** 0.5)
            elif name == "pos_embed":  # WanImageEmbedding (Wan2.1 FLF2V only): zeros
                param.data.zero_()
            else:
                raise RuntimeError(f"no initializer for {type(module).__name__}.{name}: diffusers changed")


def cast_for_storage(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` in place in `dtype`, but for the modules diffusers keeps in fp32 (`_keep_in_fp32_modules`): the
    dtypes `from_pretrained(dtype=...)` gives, so a saved file holds exactly what a load of it runs."""
    for name, param in model.named_parameters():
        param.data = param.data.to(torch.float32 if _keeps_fp32(model, name) else dtype)
    return model


def build_transformer(architecture: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      seed: int = 0) -> WanTransformer3DModel:
    """A WanTransformer3DModel of a preset with seeded random weights.

    device="meta" returns it without storage (instant at 14B); `materialize_transformer` then allocates and
    initialises it on a real device. Parameters are cast on the meta device first, so a 14B bf16 model
    never exists in fp32.
    """
    # RoPE tables stay real (CPU): they are computed, not learned. fork_rng: the constructor still draws its
    # modulation tables from the global generator before they move to meta
    with torch.random.fork_rng(devices=[]), init_empty_weights(include_buffers=False):
        model = WanTransformer3DModel(**transformer_config(architecture))
    cast_for_storage(model, dtype).requires_grad_(False).eval()
    if torch.device(device).type == "meta":
        return model
    return materialize_transformer(model, device, seed)


def materialize_transformer(model: WanTransformer3DModel, device: str | torch.device,
                            seed: int = 0) -> WanTransformer3DModel:
    """Allocate a meta-device transformer from `build_transformer` on `device` and initialise it (seeded)."""
    device = torch.device(device)
    buffers = dict(model.named_buffers())  # to_empty would discard the real RoPE tables
    model.to_empty(device=device)
    for name, value in buffers.items():
        model.get_buffer(name).copy_(value)
    with _seeded(seed, device), torch.no_grad():
        _init_parameters(model)
    return model


def count_parameters(architecture: str) -> int:
    """Exact transformer parameter count of a preset, from a meta-device build (no memory, ~0.1 s at 14B)."""
    return sum(p.numel() for p in build_transformer(architecture, device="meta").parameters())


def _random_components(cfg: ModelConfig, device: torch.device, seed: int) -> WanComponents:
    preset, dtype = _preset(cfg.architecture), DTYPES[cfg.weight_dtype]
    tokenizer = build_caption_tokenizer()
    text_kwargs = dict(preset.text_encoder)
    text_kwargs["vocab_size"] = text_kwargs["vocab_size"] or len(tokenizer)
    size = preset.image_encoder["image_size"]

    def init(index: int, build):
        # each component from its own seed: (run seed, "init", index), so presets can grow independently
        with _seeded(seeding.derive_seed(seed, "init", index), device), device:
            return build()

    return WanComponents(
        transformer=build_transformer(cfg.architecture, dtype, device, seeding.derive_seed(seed, "init", 0)),
        vae=init(1, lambda: AutoencoderKLWan(**copy.deepcopy(preset.vae))),
        text_encoder=init(2, lambda: UMT5EncoderModel._from_config(UMT5Config(**text_kwargs), dtype=dtype)),
        tokenizer=tokenizer,
        image_encoder=init(3, lambda: CLIPVisionModelWithProjection._from_config(
            CLIPVisionConfig(**preset.image_encoder), dtype=dtype)),
        # CLIP's preprocessing at the encoder's input size: shortest edge -> size, centre crop size x size
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        scheduler=wan_scheduler(cfg.flow_shift),
    )


def wan_scheduler(flow_shift: float) -> UniPCMultistepScheduler:
    """The Wan2.1 sampler: UniPC on flow-matching sigmas, shifted by `flow_shift` (5.0 at 720p in Wan's code)."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   num_train_timesteps=1000, flow_shift=flow_shift)


# ---------------------------------------------------------------------------------------------------------
# Pretrained weights

def _missing_weights(folder: Path, subfolder: str, stem: str) -> list[str]:
    """Missing weight files of one component: `<stem>.safetensors`, or an index json and all its shards."""
    single, index = Path(subfolder, f"{stem}.safetensors"), Path(subfolder, f"{stem}.safetensors.index.json")
    if (folder / single).is_file():
        return []
    if not (folder / index).is_file():
        return [f"{single} (or a sharded {index} with its shards)"]
    try:
        shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return [f"{index} is unreadable ({type(err).__name__}: {err})"]
    return [str(Path(subfolder, s)) for s in shards if not (folder / subfolder / s).is_file()]


def missing_model_files(folder: Path) -> list[str]:
    """Every file a Wan2.1 I2V diffusers folder lacks (relative paths); empty when complete."""
    missing = [f for f in _CONFIG_FILES if not (folder / f).is_file()]
    if not any((folder / "tokenizer" / f).is_file() for f in ("tokenizer.json", "spiece.model")):
        missing.append("tokenizer/tokenizer.json (or tokenizer/spiece.model)")
    for subfolder, stem in _WEIGHTS.items():
        missing += _missing_weights(folder, subfolder, stem)
    return missing


def _download_hint(path: str) -> str:
    return (f"Download the diffusers-format model on a machine with network access:\n"
            f"  hf download {HUB_ID} --local-dir {path}\n"
            f"(older huggingface_hub: huggingface-cli download {HUB_ID} --local-dir {path})\n"
            f"and set model.path to that folder.")


def resolve_model_folder(path: str) -> Path:
    """A local folder as is; otherwise `path` as a hub id, fetched into the hub cache (needs network)."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    try:
        return Path(snapshot_download(path))
    except Exception as err:  # hub failures come as many types (validation, offline, HTTP); all mean the same here
        raise ModelSourceError(
            f"model.path {path!r} is not an existing local folder, and fetching it as a hub id failed "
            f"(hub unreachable or not a repo id: {type(err).__name__}: {str(err).splitlines()[0]}).\n"
            f"{_download_hint('<folder>')}") from err


def check_model_folder(folder: Path) -> None:
    """Raise one ModelSourceError listing every missing file of a diffusers Wan2.1 I2V folder."""
    missing = missing_model_files(folder)
    if missing:
        listing = "\n".join(f"  - {m}" for m in missing)
        raise ModelSourceError(f"model folder {str(folder)!r} is incomplete; missing:\n{listing}\n"
                               f"{_download_hint(str(folder))}")


def _pretrained_components(cfg: ModelConfig) -> WanComponents:
    folder = resolve_model_folder(cfg.path)
    check_model_folder(folder)
    dtype = DTYPES[cfg.weight_dtype]
    load = dict(pretrained_model_name_or_path=folder, local_files_only=True)
    return WanComponents(
        transformer=WanTransformer3DModel.from_pretrained(subfolder="transformer", dtype=dtype, **load),
        vae=AutoencoderKLWan.from_pretrained(subfolder="vae", dtype=torch.float32, **load),
        text_encoder=UMT5EncoderModel.from_pretrained(subfolder="text_encoder", dtype=dtype, **load),
        tokenizer=AutoTokenizer.from_pretrained(subfolder="tokenizer", **load),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(subfolder="image_encoder", dtype=dtype, **load),
        image_processor=CLIPImageProcessor.from_pretrained(subfolder="image_processor", **load),
        # the experiment config owns the shift (the diffusers conversion wrote 3.0; Wan's 720p code uses 5.0)
        scheduler=UniPCMultistepScheduler.from_pretrained(subfolder="scheduler", flow_shift=cfg.flow_shift, **load),
    )


# ---------------------------------------------------------------------------------------------------------
# Public entry points

def build_components(cfg: ModelConfig, device: str | torch.device = "cpu", seed: int = 0) -> WanComponents:
    """All seven pipeline components on `device`, frozen. `seed` only matters for source == "random"."""
    device = torch.device(device)
    if cfg.source == "pretrained":
        c = _pretrained_components(cfg)
    elif cfg.source == "random":
        c = _random_components(cfg, device, seed)
    else:
        raise ValueError(f"unknown model source {cfg.source!r}; expected 'pretrained' or 'random'")
    for model in (c.transformer, c.vae, c.text_encoder, c.image_encoder):
        model.to(device).requires_grad_(False).eval()
    return c


def make_pipeline(c: WanComponents) -> WanImageToVideoPipeline:
    """The stock diffusers I2V pipeline over these components (shares their modules)."""
    return WanImageToVideoPipeline(tokenizer=c.tokenizer, text_encoder=c.text_encoder, vae=c.vae,
                                   scheduler=c.scheduler, image_processor=c.image_processor,
                                   image_encoder=c.image_encoder, transformer=c.transformer)


def save_components(c: WanComponents, folder: str | Path, overwrite: bool = False) -> Path:
    """Write a diffusers-format folder (safetensors) that `build_components(source="pretrained")` loads."""
    with atomic_directory(folder, overwrite) as tmp:
        make_pipeline(c).save_pretrained(tmp, safe_serialization=True)
    return Path(folder)


__all__ = [
    "WanComponents", "ArchitecturePreset", "ModelSourceError", "PRESETS", "DTYPES", "HUB_ID",
    "TRUE_SIZE_PARAMETERS", "transformer_config", "build_transformer", "materialize_transformer",
    "count_parameters", "cast_for_storage", "wan_scheduler", "missing_model_files", "check_model_folder", "resolve_model_folder",
    "build_components", "make_pipeline", "save_components",
]
