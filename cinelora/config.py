"""Typed experiment configuration: frozen YAML in, validated, resolved for one scale profile, hashed.

Resolution, in order (each step a mapping of YAML keys; later steps win):
1. the experiment chain: a root experiment's `config.yaml` is complete (every section below); any other
   names a `parent` (an experiment folder beside it) and holds only the keys it changes, which are its
   `varies` (derived from the file, recorded in the resolved config);
2. the profile: `configs/profiles/<profile>.yaml` (`smoke`, `proxy`; its section of the experiment's kind),
   then the `profiles.<profile>` overrides of the chain's files, root first, dotted keys among `PROFILE_KEYS` only
   (sizes, steps and weight/data sources, never the algorithm); `full` is the experiment itself. A file's
   `profiles.<profile>` speaks for its experiment and for the descendants that do not set the key themselves: a
   key a descendant's file sets (its `varies`) keeps the descendant's value at every profile;
3. the hardware (generator configs, `full` only): `configs/hardware/<name>.yaml` sets `speed.*` keys;
4. `{profile}` in any string becomes the profile's name.

The one exception to "profiles change sizes, steps and sources only": `CHOSEN_KEYS`, the training hyperparameters
(learning rate, steps, λ, ε and its PGD step) that issue 16 asks to choose per profile on the fine-tuning domain's
validation clips (`experiments/proxy_search`, `cinelora/hparam_search.py`): a small model trained for a tenth of the
recipe's steps need not want the 14B recipe's values. They may be set in an experiment file's own `profiles.<profile>`
section (`experiments/lora_r8/config.yaml` holds the proxy's, for every experiment below it), never in
`configs/profiles/`, which every experiment reads and which would overwrite the ablations that vary them. An
ablation that holds its own value of such a key where its parent's is chosen (`robust_lpips_r8_eps4`: 4/255
whatever the main run's ε) sets it in its own `profiles.<profile>`, and the key is then among its `varies` there.
A search resolves its points without the chosen values (`choices=False`), so copying an outcome in never changes
the search that produced it.
Nothing here imports torch: `--dry-run` resolves any config in well under two seconds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cinelora.data.buckets import parse_bucket
from cinelora.speed.levers import LeverError, SpeedLevers

PROFILES = ("full", "proxy", "smoke")
CONFIGS_ROOT = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_HARDWARE = "h100-80gb"  # the `full` profile's GPU: configs/hardware/h100-80gb.yaml
DERIVED_KEYS = ("varies", "profile", "hardware")  # set by the loader, never by a file
# The procedural world's domains (cinelora/data/world.py); a new one goes last, since each clip's random stream
# depends on its domain's position here.
WORLD_DOMAINS = ("studio", "cinematic", "actors", "photos", "figures", "particles", "stills")
# Linear layers of diffusers' Wan I2V transformer (names inside a block, or from the root outside the blocks); a
# LoRA target is one of them or a dot-separated suffix of one. The same for every size (a test holds it to diffusers).
WAN_LINEAR_LAYERS = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj",
    "ffn.net.0.proj", "ffn.net.2", "proj_out",
    "condition_embedder.image_embedder.ff.net.0.proj", "condition_embedder.image_embedder.ff.net.2",
    "condition_embedder.text_embedder.linear_1", "condition_embedder.text_embedder.linear_2",
    "condition_embedder.time_embedder.linear_1", "condition_embedder.time_embedder.linear_2",
    "condition_embedder.time_proj",
)
CROSS_ATTENTION_TARGETS = [
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj",
]


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, source: str, key: str, found: Any, expected: str):
        super().__init__(f"{source}: key '{key}': found {found!r}, expected {expected}")
        self.source, self.key, self.found, self.expected = source, key, found, expected


@dataclass
class ModelConfig:
    source: str = "pretrained"  # "pretrained" (diffusers folder or hub id) | "random" (architecture preset)
    path: str = "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
    architecture: str = "wan2.1-i2v-14b"  # preset used when source == "random": wan2.1-i2v-14b | proxy | smoke
    weight_dtype: str = "bf16"  # frozen base weights: bf16 | fp32
    flow_shift: float = 5.0  # Wan's noise-schedule shift (original code: 5.0 at 720p)


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(CROSS_ATTENTION_TARGETS))


@dataclass
class DataConfig:
    train: str = ""  # manifest (.jsonl/.csv) or folder of videos
    val: str = ""
    height: int = 720
    width: int = 1280
    num_frames: int = 81
    frame_stride: int = 1
    skip_bad_videos: bool = False  # True: skip and report corrupt/short videos instead of stopping
    # training sizes "HxWxF" for footage of mixed shapes and lengths (cinelora/data/buckets.py); empty: every
    # training clip at height x width x num_frames (evaluation always is)
    buckets: list[str] = field(default_factory=list)


@dataclass
class WorldConfig:
    enabled: bool = False  # build the procedural world before training/evaluation (proxy, smoke)
    root: str = "runs/world"
    seed: int = 0
    domains: list[str] = field(default_factory=lambda: ["studio", "cinematic", "actors"])
    splits: dict[str, int] = field(default_factory=lambda: {"train": 8, "val": 2, "test": 4})
    height: int = 64
    width: int = 64
    num_frames: int = 17
    fps: int = 8


@dataclass
class TrainConfig:
    enabled: bool = True
    steps: int = 4000  # optimizer steps
    batch_size: int = 1
    grad_accum: int = 4
    lr: float = 3e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    lr_schedule: str = "cosine"  # cosine | constant
    mixed_precision: str = "bf16"  # bf16 | no (CPU runs always use fp32; provenance records it)
    max_grad_norm: float = 1.0
    val_every: int = 100
    val_batches: int = 4
    checkpoint_every: int = 100
    log_every: int = 10
    early_stop_patience: int = 5  # validations without improvement before stopping; 0 disables
    early_stop_min_delta: float = 1e-3
    stage: str = "single"  # single | two_stage (a style LoRA on single frames, then a motion LoRA on clips)
    style_steps: int = 0  # optimizer steps of the style stage (two_stage only)
    early_stop_metric: str = "val_loss"  # val_loss | perceptual (the perceptual section's D on validation clips)
    num_workers: int = 2
    sample_clips: int = 0  # at each validation, animate this many validation first frames (training_samples.py)
    sample_steps: int = 20  # their denoising steps
    tensorboard: bool = True  # the log's numbers and sample strips as TensorBoard events in runs/<name>/<profile>/


@dataclass
class EvalConfig:
    domains: dict[str, str] = field(default_factory=dict)  # domain -> test manifest/folder
    clips_per_domain: int = 8
    batch_size: int = 1  # clips generated per batch (a clip does not depend on its batch: cinelora/sampling.py)
    num_inference_steps: int = 40
    guidance_scale: float = 5.0
    lpips_net: str = "alex"  # alex | vgg | squeeze
    lpips_backbone: str = "torchvision"  # torchvision (hub cache files) | random (seeded; smoke only) | a trunk file
    lpips_heads: str = ""  # LPIPS heads (safetensors) for `lpips` rows; "" = the package's v0.1 (ImageNet-trunk) heads
    rlpips_heads: str = ""  # R-LPIPS heads (safetensors) for `rlpips` rows; "" = no R-LPIPS rows
    clip_model: str = "weights/clip-vit-base-patch32"  # local CLIPModel folder | random (seeded tiny; smoke)
    i3d_weights: str = "weights/i3d_pretrained_400.pt"  # pytorch-i3d state dict | random (seeded; smoke)
    i3d_release: str = "videogpt"  # whose code the weight file belongs to: videogpt (eps 1e-5) | pytorch-i3d (1e-3)
    fvd_covariance: str = "unbiased"  # unbiased: /(N-1) (TF-GAN, original FVD) | biased: /N (StyleGAN-V, cd-fvd)
    pipeline: str = "one_stage"  # one_stage: real first frame → clip | two_stage: caption → keyframe → clip
    attack: bool = True  # also generate from PGD-attacked conditioning frames ("attacked" rows)
    attack_eps_255: float = 4.0  # L∞ radius in pixel units x255
    attack_steps: int = 3


@dataclass
class PerceptualConfig:
    """λ·D(decoded x̂0, x0) added to the flow loss (D = LPIPS or R-LPIPS); off in lora_r8."""
    enabled: bool = False
    weight: float = 0.1  # λ
    metric: str = "lpips"  # lpips | rlpips (names the heads below; recorded in results)
    net: str = "alex"
    backbone: str = "torchvision"  # trunk: torchvision (hub cache file) | random (seeded; smoke only) | a trunk file
    heads: str = ""  # linear heads (safetensors); "" = the lpips package's shipped v0.1 heads
    frames: int = 4  # frames of each clip decoded for the loss (memory: decode only what the loss needs)


@dataclass
class AdversarialConfig:
    """PGD on the conditioning frame (L∞, pixel space, before VAE/CLIP encoding) maximising the training loss."""
    enabled: bool = False
    eps_255: float = 4.0  # L∞ radius in pixel units x255 ([0, 1] images): 4.0 means 4/255
    step_255: float = 1.0  # PGD step in the same units
    steps: int = 3
    clean_weight: float = 0.0  # TRADES-style mix: (1 - w)·L(adversarial) + w·L(clean)


@dataclass
class RLPIPSConfig:
    """R-LPIPS metric training (arXiv 2307.15157) and its 2AFC robustness evaluation."""
    net: str = "alex"
    backbone: str = "torchvision"  # trunk: torchvision | random (seeded; smoke only) | a trunk file (.safetensors)
    bapps_root: str = "data/bapps/2afc"  # BAPPS layout: {train,val}/<set>/{ref,p0,p1,judge}
    procedural: bool = False  # first write a procedural 2AFC set in the BAPPS layout under bapps_root
    procedural_triplets: dict[str, int] = field(default_factory=lambda: {"train": 2000, "val": 500})
    train_sets: list[str] = field(default_factory=lambda: ["traditional", "cnn", "mix"])
    val_sets: list[str] = field(default_factory=lambda: ["traditional", "cnn"])
    patch_size: int = 64
    mode: str = "lin"  # lin (linear heads only) | tune (trunk too)
    epochs: int = 5
    decay_epochs: int = 5  # linear lr decay to 0 after `epochs`
    batch_size: int = 50
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    attack_target: str = "ref"  # x0 | x1 | both | ref
    attack_norm: str = "linf"  # linf | l2
    attack_eps_255: float = 4.0  # pixel units x255 (= 8/255 in the [-1, 1] range the recipe states)
    attack_steps: int = 50
    attack_step_255: float = 4.0  # the recipe takes full-ε sign steps
    eval_eps_255: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    eval_pgd_steps: int = 20


@dataclass
class ExperimentConfig:
    """A generator experiment (kind: generator): LoRA fine-tuning and cross-domain evaluation."""
    kind: str = "generator"
    name: str = ""
    parent: str = ""  # the experiment this ablation derives from ("" for none)
    varies: list[str] = field(default_factory=list)  # derived: the dotted keys the file sets over its parent
    seed: int = 0
    profile: str = "full"  # derived: --profile
    hardware: str = ""  # derived: the hardware preset of the `full` profile (--hardware), "" for the others
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    speed: SpeedLevers = field(default_factory=SpeedLevers)  # how the step runs (rules: cinelora/speed/levers.py)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class MetricExperimentConfig:
    """A metric experiment (kind: metric): LPIPS vs R-LPIPS heads trained and evaluated on 2AFC data."""
    kind: str = "metric"
    name: str = ""
    parent: str = ""
    varies: list[str] = field(default_factory=list)
    seed: int = 0
    profile: str = "full"
    world: WorldConfig = field(default_factory=WorldConfig)
    rlpips: RLPIPSConfig = field(default_factory=RLPIPSConfig)


@dataclass
class CorpusConfig:
    """World clips rendered in memory (cinelora/data/corpus.py): the pre-training corpus, not a user input."""
    domains: list[str] = field(default_factory=lambda: ["studio"])  # interleaved clip by clip
    train_clips: int = 32768
    val_clips: int = 256  # held-out clips of the same domains (another index block)
    seed: int = 0
    height: int = 64
    width: int = 64
    num_frames: int = 17


@dataclass
class PhaseConfig:
    """One pre-training phase (cinelora/instrument/loop.py): AdamW, linear warm-up, cosine to 10% of lr."""
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    val_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 25


VAE_COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass
class VAEPhaseConfig(PhaseConfig):
    """The VAE: L1 reconstruction + kl_weight·KL + perceptual_weight·LPIPS (the evidence's trunk and heads, per
    frame: L1 alone blurs small objects away, as Wan's own VAE recipe knows); the first crop_steps steps on random
    crops (cheaper)."""
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.0
    perceptual_frames: int = 0  # LPIPS on this many frames per clip, drawn afresh each step (0: every frame)
    crop_steps: int = 0
    crop_size: int = 32  # crop side (pixels) of the crop steps
    crop_frames: int = 9  # frames of the crop steps (4k+1)
    compile: str = ""  # torch.compile mode of the step's encode and decode on a GPU ("": eager; always eager on a CPU)
    channels_last: bool = False  # the VAE's weights (so its activations) in channels_last_3d memory format


@dataclass
class TransformerPhaseConfig(PhaseConfig):
    """The transformer: flow matching with the I2V condition on the corpus's cached latents and embeddings."""
    caption_dropout: float = 0.1  # share of steps' clips trained on the empty caption (CFG's negative prompt)


@dataclass
class EvidenceConfig:
    """What shows the base model is one: held-out corpus clips reconstructed and generated (results/)."""
    clips: int = 256
    batch_size: int = 64
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    strips: int = 4  # clips shown in the frame strips
    # the evaluators, named as the generator's eval section names them; "random" = seeded random (smoke only)
    i3d_weights: str = "random"  # FVD against the held-out clips
    i3d_release: str = "pytorch-i3d"
    lpips_backbone: str = "random"  # LPIPS to the ground truth: trunk and heads
    lpips_heads: str = ""


@dataclass
class BaseModelConfig:
    """A base-model experiment (kind: base_model): the project's own small Wan (VAE + transformer) pre-trained on
    the procedural corpus and saved as a diffusers folder that `model.source: pretrained` loads (the proxy
    instrument: at `full` the user's Wan2.1 weights are the base model)."""
    kind: str = "base_model"
    name: str = ""
    parent: str = ""
    varies: list[str] = field(default_factory=list)
    seed: int = 0
    profile: str = "proxy"
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture preset, weight dtype, flow shift
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    vae: VAEPhaseConfig = field(default_factory=VAEPhaseConfig)
    transformer: TransformerPhaseConfig = field(default_factory=TransformerPhaseConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)


# Label sets the proxy evaluators classify, read from a clip's attributes (cinelora/instrument/attributes.py):
# clip-level ones need the whole clip (I3D), frame-level ones are visible in a single frame (the AlexNet trunk).
CLIP_LABEL_SETS = ("domain", "motion", "camera", "object", "colour")
FRAME_LABEL_SETS = ("domain", "object", "colour", "backdrop")
# FVD sanity corruptions (cinelora/instrument/fvd_sanity.py) and the unit of their strengths: noise σ and colour
# offset in [0, 1] pixel units, blur σ in pixels of the clip, shuffle and freeze as the fraction of frames affected.
FVD_CORRUPTIONS = ("noise", "blur", "colour", "shuffle", "freeze")
# Never an evaluators' training domain: `photos` is the held-out photo domain, and every clip of it, whatever its
# index, shows one of the same few photos (`stills` is the photo domain evaluators train on; no image is shared).
EVALUATOR_HELD_OUT_DOMAINS = ("photos",)


@dataclass
class I3DPhaseConfig(PhaseConfig):
    """The proxy I3D: InceptionI3d with every channel count divided by `width_divisor`, classifying world attributes
    of 16-frame clips at FVD's input (frames resized to 224x224); its logits, one block per label set, are the FVD
    feature."""
    width_divisor: int = 4  # cinelora.metrics.i3d.WIDTH_DIVISORS
    release: str = "pytorch-i3d"  # the batch-norm eps it trains with and runs with (cinelora.metrics.i3d.RELEASES)
    label_sets: list[str] = field(default_factory=lambda: list(CLIP_LABEL_SETS))


@dataclass
class CLIPPhaseConfig(PhaseConfig):
    """The proxy CLIP: a small transformers CLIPModel (ViT image tower at the corpus frame size, the offline caption
    tokenizer) trained with CLIP's symmetric contrastive loss on (frame, caption) pairs."""
    hidden_size: int = 96  # both towers
    layers: int = 4  # both towers
    heads: int = 4
    patch_size: int = 8
    projection_dim: int = 64
    retrieval_pairs: int = 512  # held-out (frame, caption) pairs of the recall@k table


@dataclass
class TrunkPhaseConfig(PhaseConfig):
    """The proxy AlexNet trunk (torchvision's `features`, fed through LPIPS's scaling layer as LPIPS feeds it),
    trained to classify frame-level attributes through a linear head on pooled conv5 features that is not saved."""
    label_sets: list[str] = field(default_factory=lambda: list(FRAME_LABEL_SETS))


@dataclass
class FVDSanityConfig:
    """FVD of real clips against real clips (the noise floor) and against corrupted real clips, per domain."""
    domains: list[str] = field(default_factory=lambda: ["cinematic", "actors", "photos", "particles"])
    clips: int = 512  # N per set: the study's N
    strengths: dict[str, list[float]] = field(default_factory=lambda: {
        "noise": [0.02, 0.05, 0.1], "blur": [0.5, 1.0, 2.0], "colour": [0.03, 0.08, 0.2],
        "shuffle": [0.25, 0.5, 1.0], "freeze": [0.25, 0.5, 1.0]})  # units: FVD_CORRUPTIONS
    floor_splits: int = 8  # random re-partitions of the 2N real clips: the noise floor's band
    batch_size: int = 64  # clips per I3D forward
    covariance: str = "unbiased"  # cinelora.metrics.fvd.COVARIANCES


@dataclass
class EvaluatorsConfig:
    """An evaluators experiment (kind: evaluators): the proxy instrument's I3D, CLIP and AlexNet trunk, trained by
    the project on world clips disjoint from every evaluation clip and saved in the layouts the `full` profile's
    loaders read (at `full` the published weights take their place)."""
    kind: str = "evaluators"
    name: str = ""
    parent: str = ""
    varies: list[str] = field(default_factory=list)
    seed: int = 0
    profile: str = "proxy"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)  # the blocks evaluators_train / evaluators_val
    i3d: I3DPhaseConfig = field(default_factory=I3DPhaseConfig)
    clip: CLIPPhaseConfig = field(default_factory=CLIPPhaseConfig)
    trunk: TrunkPhaseConfig = field(default_factory=TrunkPhaseConfig)
    fvd_sanity: FVDSanityConfig = field(default_factory=FVDSanityConfig)


@dataclass
class SearchStageConfig:
    """One stage of a hyperparameter search: each point of `grid` trains `experiment` (the one training loop, no
    evaluation) and is scored by `criterion` on the validation clips; the stage chooses the point of lowest score."""
    name: str = ""  # the stage's folder under the search's results (lower-case letters, digits, _)
    experiment: str = ""  # the experiment folder beside the search's whose config each point trains
    criterion: str = "val_perceptual"  # must be the experiment's early-stopping signal (`early_stop_signal`)
    choose_steps: bool = False  # also choose train.steps: the chosen point's best step (early stopping's)
    # axes {axis: {dotted key: values}}: the points are the product of the axes, first axis slowest; the keys of one
    # axis take their i-th values together (a PGD step tied to its ε); keys among SEARCH_GRID_KEYS
    grid: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def points(self) -> list[tuple[str, dict[str, float]]]:
        """[(point id, {dotted key: value})] in grid order; the id joins each axis's name and first key's value
        (`lambda0.3_eps2`)."""
        points: list[tuple[str, dict[str, float]]] = [("", {})]
        for axis, keys in self.grid.items():
            size = len(next(iter(keys.values()), []))
            points = [(f"{pid}_{axis}{keys[next(iter(keys))][i]:g}".lstrip("_"),
                       {**values, **{k: v[i] for k, v in keys.items()}}) for pid, values in points for i in range(size)]
        return points


@dataclass
class SearchConfig:
    """A search experiment (kind: search): a profile's training hyperparameters (`CHOSEN_KEYS`) chosen on the
    fine-tuning domain's validation clips, stage by stage (`cinelora/hparam_search.py`); proxy and smoke only."""
    kind: str = "search"
    name: str = ""
    parent: str = ""
    varies: list[str] = field(default_factory=list)
    seed: int = 0  # every point trains with this seed (LoRA init, data order, noise)
    profile: str = "proxy"
    stages: list[SearchStageConfig] = field(default_factory=list)


KINDS = {"generator": ExperimentConfig, "metric": MetricExperimentConfig, "base_model": BaseModelConfig,
         "evaluators": EvaluatorsConfig, "search": SearchConfig}
# Kinds that build the proxy instrument: nothing to build at `full`, where published weights take their place.
INSTRUMENT_KINDS = ("base_model", "evaluators")


def early_stop_signal(train: TrainConfig) -> str:
    """The validation record early stopping watches (`train_summary.json`'s `val_metric`): `val_perceptual`, the
    perceptual section's D of the one-step x̂0, or `val_loss`, the flow-matching loss."""
    return "val_perceptual" if train.early_stop_metric == "perceptual" else "val_loss"


PROFILE_KEYS = (
    "model.source", "model.path", "model.architecture", "model.weight_dtype", "model.flow_shift",
    "data.train", "data.val", "data.height", "data.width", "data.num_frames", "data.buckets",
    "world.enabled", "world.root", "world.domains", "world.splits", "world.height", "world.width", "world.num_frames",
    "train.steps", "train.batch_size", "train.grad_accum", "train.val_every", "train.val_batches", "train.checkpoint_every", "train.log_every",
    "train.mixed_precision", "train.num_workers", "train.style_steps", "train.sample_clips", "train.sample_steps",
    *(f"speed.{f.name}" for f in dataclasses.fields(SpeedLevers)),
    "eval.domains", "eval.clips_per_domain", "eval.batch_size", "eval.num_inference_steps", "eval.lpips_backbone",
    "eval.lpips_heads", "eval.rlpips_heads", "eval.clip_model", "eval.i3d_weights", "eval.i3d_release",
    "eval.attack_steps",
    "perceptual.backbone", "perceptual.heads", "perceptual.frames",
    "rlpips.backbone", "rlpips.bapps_root", "rlpips.procedural", "rlpips.procedural_triplets",
    "rlpips.train_sets", "rlpips.val_sets", "rlpips.patch_size", "rlpips.epochs", "rlpips.decay_epochs",
    "rlpips.batch_size", "rlpips.attack_steps", "rlpips.eval_pgd_steps",
    "rlpips.attack_eps_255", "rlpips.attack_step_255",  # the radius the trunk tolerates: rlpips_eps_search
    "corpus.train_clips", "corpus.val_clips", "corpus.height", "corpus.width", "corpus.num_frames",
    *(f"{phase}.{key}" for phase in ("vae", "transformer") for key in (
        "steps", "batch_size", "warmup_steps", "val_every", "checkpoint_every", "log_every")),
    "vae.crop_steps", "vae.crop_size", "vae.crop_frames",
    "evidence.clips", "evidence.batch_size", "evidence.num_inference_steps", "evidence.strips",
    "evidence.i3d_weights", "evidence.lpips_backbone", "evidence.lpips_heads",
    *(f"{phase}.{key}" for phase in ("i3d", "clip", "trunk") for key in (
        "steps", "batch_size", "warmup_steps", "val_every", "checkpoint_every", "log_every")),
    "i3d.width_divisor", "clip.hidden_size", "clip.layers", "clip.heads", "clip.projection_dim",
    "clip.retrieval_pairs", "fvd_sanity.domains", "fvd_sanity.clips", "fvd_sanity.floor_splits",
    "fvd_sanity.batch_size",
)
# The training hyperparameters a profile chooses on the fine-tuning domain's validation clips (module docstring):
# allowed in an experiment file's own `profiles.<profile>` beside PROFILE_KEYS, never in configs/profiles/.
CHOSEN_KEYS = ("train.lr", "train.steps", "perceptual.weight", "adversarial.eps_255", "adversarial.step_255")
_CHOSEN_ALGORITHM_KEYS = tuple(k for k in CHOSEN_KEYS if k not in PROFILE_KEYS)  # the exception to PROFILE_KEYS
SEARCH_GRID_KEYS = _CHOSEN_ALGORITHM_KEYS  # what a search's grid varies (train.steps comes from early stopping)


class _TrunkChoices(tuple):
    """LPIPS trunk sources: torchvision's file in the hub cache, a seeded random trunk, or the path of a trunk file
    (safetensors with torchvision's `features.*` keys, as the proxy evaluators write: lpips_distance.new_lpips)."""

    def __contains__(self, value: object) -> bool:
        return tuple.__contains__(self, value) or isinstance(value, str) and value.endswith(".safetensors")


LPIPS_BACKBONES = _TrunkChoices(("torchvision", "random", "<trunk file>.safetensors"))

_CHOICES = {
    "model.source": ("pretrained", "random"),
    "model.architecture": ("wan2.1-i2v-14b", "proxy", "smoke"),
    "model.weight_dtype": ("bf16", "fp32"),
    "train.lr_schedule": ("cosine", "constant"),
    "train.mixed_precision": ("bf16", "no"),
    "eval.lpips_net": ("alex", "vgg", "squeeze"),
    "eval.lpips_backbone": LPIPS_BACKBONES,
    "perceptual.metric": ("lpips", "rlpips"),
    "perceptual.net": ("alex", "vgg", "squeeze"),
    "perceptual.backbone": LPIPS_BACKBONES,
    "train.early_stop_metric": ("val_loss", "perceptual"),
    "train.stage": ("single", "two_stage"),
    "eval.pipeline": ("one_stage", "two_stage"),
    "eval.i3d_release": ("videogpt", "pytorch-i3d"),  # cinelora.metrics.i3d.RELEASES
    "eval.fvd_covariance": ("unbiased", "biased"),  # cinelora.metrics.fvd.COVARIANCES
}
_METRIC_CHOICES = {
    "rlpips.net": ("alex", "vgg", "squeeze"),
    "rlpips.backbone": LPIPS_BACKBONES,
    "rlpips.mode": ("lin", "tune"),
    "rlpips.attack_target": ("x0", "x1", "both", "ref"),
    "rlpips.attack_norm": ("linf", "l2"),
}
_METRIC_POSITIVE = (
    "rlpips.patch_size", "rlpips.epochs", "rlpips.batch_size", "rlpips.attack_eps_255",
    "rlpips.attack_steps", "rlpips.attack_step_255", "rlpips.eval_pgd_steps",
)
_POSITIVE = (
    "lora.rank", "lora.alpha", "data.height", "data.width", "data.num_frames", "data.frame_stride",
    "world.height", "world.width", "world.num_frames", "world.fps", "train.steps", "train.batch_size",
    "train.grad_accum", "train.max_grad_norm", "train.val_every", "train.val_batches", "train.checkpoint_every",
    "train.log_every", "train.sample_steps", "eval.clips_per_domain", "eval.batch_size", "eval.num_inference_steps",
    "model.flow_shift",
    "eval.attack_eps_255", "eval.attack_steps",
    "perceptual.weight", "perceptual.frames", "adversarial.eps_255", "adversarial.step_255", "adversarial.steps",
)
_FRACTIONS = ("lora.dropout", "train.warmup_frac", "train.weight_decay", "adversarial.clean_weight")
_NON_NEGATIVE = ("seed", "world.seed", "train.num_workers", "train.early_stop_patience", "train.early_stop_min_delta",
                 "train.style_steps", "train.sample_clips")
_LEARNING_RATES = ("train.lr",)  # in (0, 1]: a larger one is a typo (1e30), never a recipe
_METRIC_LEARNING_RATES = ("rlpips.lr",)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(source, key, value, f"a mapping of {tp.__name__} fields")
        return _build(tp, value, key, source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(source, key, value, f"a list of {_type_name(item)}")
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        ktp, vtp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(source, key, value, f"a mapping of {_type_name(ktp)} to {_type_name(vtp)}")
        return {_coerce(k, ktp, key, source): _coerce(v, vtp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(source, key, value, _type_name(tp))
    return value


def _build(cls: type, raw: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            dotted = f"{prefix}.{key}" if prefix else key
            raise ConfigError(source, dotted, raw[key], f"one of the known keys {sorted(known)}")
    values = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            raise ConfigError(source, dotted, None, f"a value ({_type_name(hints[f.name])}); configs are complete")
        values[f.name] = _coerce(raw[f.name], hints[f.name], dotted, source)
    try:
        return cls(**values)
    except LeverError as err:  # the speed section's own rules: which levers go together
        raise ConfigError(source, f"{prefix}.{err.field}", err.value, err.expected) from None


def _get(cfg: ExperimentConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _check_choices(cfg: Any, choices: dict[str, tuple], positive: tuple[str, ...], source: str) -> None:
    for key, allowed in choices.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(source, key, _get(cfg, key), f"one of {list(allowed)}")
    for key in positive:
        if not _get(cfg, key) > 0:
            raise ConfigError(source, key, _get(cfg, key), "a value > 0")


def _check_metric_ranges(cfg: MetricExperimentConfig, source: str) -> None:
    _check_choices(cfg, _METRIC_CHOICES, _METRIC_POSITIVE, source)
    _check_numbers(cfg, source, ("seed", "world.seed", "rlpips.decay_epochs"), _METRIC_LEARNING_RATES)
    _check_world(cfg.world, source, ())
    if not cfg.rlpips.eval_eps_255 or not all(e > 0 for e in cfg.rlpips.eval_eps_255):
        raise ConfigError(source, "rlpips.eval_eps_255", cfg.rlpips.eval_eps_255, "a non-empty list of values > 0")


def _check_numbers(cfg: Any, source: str, non_negative: tuple[str, ...], rates: tuple[str, ...]) -> None:
    for key, value in flatten(cfg).items():  # inf and nan pass every comparison below, or fail it unexplained
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(source, key, value, "a finite number")
    for key in non_negative:
        if _get(cfg, key) < 0:
            raise ConfigError(source, key, _get(cfg, key), "a value >= 0")
    for key in rates:
        if not 0 < _get(cfg, key) <= 1:
            raise ConfigError(source, key, _get(cfg, key), "a learning rate in (0, 1]")


def _check_world(world: WorldConfig, source: str, needs: tuple[str, ...]) -> None:
    unknown = [d for d in world.domains if d not in WORLD_DOMAINS]
    if unknown or not world.domains:
        raise ConfigError(source, "world.domains", world.domains, f"domains among {list(WORLD_DOMAINS)}")
    for split in needs:
        if world.splits.get(split, 0) < 1:
            raise ConfigError(source, "world.splits", world.splits, f"at least one '{split}' clip per domain "
                              "(the run reads that split)")
    if any(n < 0 for n in world.splits.values()):
        raise ConfigError(source, "world.splits", world.splits, "clip counts >= 0")


def _check_clip_size(source: str, key: str, height: int, width: int, frames: int) -> None:
    if height % 16 or width % 16 or min(height, width) < 16:
        raise ConfigError(source, f"{key}.height/width", (height, width), "multiples of 16 (VAE 8x, patch 2x)")
    if frames < 1 or (frames - 1) % 4:
        raise ConfigError(source, f"{key}.num_frames", frames, "4k+1 frames (the VAE compresses time 4x)")


def _check_base_model(cfg: BaseModelConfig, source: str) -> None:
    positive = tuple(f"{p}.{f.name}" for p in ("vae", "transformer") for f in dataclasses.fields(PhaseConfig)
                     if f.name not in ("warmup_steps", "weight_decay")) + (
        "corpus.train_clips", "corpus.val_clips", "evidence.clips", "evidence.batch_size",
        "evidence.num_inference_steps", "model.flow_shift")
    _check_choices(cfg, {"model.architecture": ("proxy", "smoke"), "model.weight_dtype": ("bf16", "fp32"),
                         "vae.compile": VAE_COMPILE_MODES}, positive, source)
    _check_numbers(cfg, source, ("seed", "corpus.seed", "vae.warmup_steps", "transformer.warmup_steps",
                                 "vae.weight_decay", "transformer.weight_decay", "vae.kl_weight", "vae.perceptual_weight",
                                 "vae.perceptual_frames", "vae.crop_steps",
                                 "evidence.strips"), ("vae.lr", "transformer.lr"))
    unknown = [d for d in cfg.corpus.domains if d not in WORLD_DOMAINS]
    if unknown or not cfg.corpus.domains:
        raise ConfigError(source, "corpus.domains", cfg.corpus.domains, f"domains among {list(WORLD_DOMAINS)}")
    c = cfg.corpus
    _check_clip_size(source, "corpus", c.height, c.width, c.num_frames)
    if cfg.vae.crop_steps:
        if cfg.vae.crop_size % 16 or not 16 <= cfg.vae.crop_size <= min(c.height, c.width):
            raise ConfigError(source, "vae.crop_size", cfg.vae.crop_size,
                              f"a multiple of 16 in [16, {min(c.height, c.width)}] (the corpus frame)")
        if (cfg.vae.crop_frames - 1) % 4 or not 1 <= cfg.vae.crop_frames <= c.num_frames:
            raise ConfigError(source, "vae.crop_frames", cfg.vae.crop_frames, f"4k+1 frames, at most {c.num_frames}")
    smallest = min(cfg.vae.crop_size if cfg.vae.crop_steps else c.height, c.height, c.width)
    if cfg.vae.perceptual_weight and smallest < 32:
        raise ConfigError(source, "vae.perceptual_weight", cfg.vae.perceptual_weight,
                          f"0 for frames under 32 px (LPIPS's AlexNet needs 32; the VAE trains on {smallest})")
    if not 0 <= cfg.transformer.caption_dropout < 1:
        raise ConfigError(source, "transformer.caption_dropout", cfg.transformer.caption_dropout, "a value in [0, 1)")
    if cfg.evidence.i3d_release not in ("videogpt", "pytorch-i3d"):
        raise ConfigError(source, "evidence.i3d_release", cfg.evidence.i3d_release, "videogpt or pytorch-i3d")
    if cfg.evidence.lpips_backbone not in LPIPS_BACKBONES:
        raise ConfigError(source, "evidence.lpips_backbone", cfg.evidence.lpips_backbone, f"one of {LPIPS_BACKBONES}")
    if cfg.evidence.guidance_scale < 1:
        raise ConfigError(source, "evidence.guidance_scale", cfg.evidence.guidance_scale, "a value >= 1")


def _check_label_sets(source: str, key: str, found: list[str], allowed: tuple[str, ...]) -> None:
    if not found or len(set(found)) != len(found) or set(found) - set(allowed):
        raise ConfigError(source, key, found, f"distinct label sets among {list(allowed)}")


_EVALUATOR_CHOICES = {
    "i3d.width_divisor": (1, 2, 4, 8),  # cinelora.metrics.i3d.WIDTH_DIVISORS (a test keeps the two equal)
    "i3d.release": ("videogpt", "pytorch-i3d"),  # cinelora.metrics.i3d.RELEASES
    "fvd_sanity.covariance": ("unbiased", "biased"),  # cinelora.metrics.fvd.COVARIANCES
}


def _check_evaluators(cfg: EvaluatorsConfig, source: str) -> None:
    phases = ("i3d", "clip", "trunk")
    positive = tuple(f"{p}.{f.name}" for p in phases for f in dataclasses.fields(PhaseConfig)
                     if f.name not in ("warmup_steps", "weight_decay")) + tuple(
        f"corpus.{k}" for k in ("train_clips", "val_clips", "height", "width", "num_frames")) + tuple(
        f"clip.{k}" for k in ("hidden_size", "layers", "heads", "patch_size", "projection_dim", "retrieval_pairs")) + (
        "fvd_sanity.clips", "fvd_sanity.floor_splits", "fvd_sanity.batch_size")
    _check_choices(cfg, _EVALUATOR_CHOICES, positive, source)
    _check_numbers(cfg, source, ("seed", "corpus.seed", *(f"{p}.{k}" for p in phases
                                                          for k in ("warmup_steps", "weight_decay"))),
                   tuple(f"{p}.lr" for p in phases))
    c = cfg.corpus
    if not c.domains or len(set(c.domains)) != len(c.domains) or set(c.domains) - set(WORLD_DOMAINS) \
            or set(c.domains) & set(EVALUATOR_HELD_OUT_DOMAINS):
        raise ConfigError(source, "corpus.domains", c.domains, f"distinct domains among {list(WORLD_DOMAINS)}, none "
                          f"of {list(EVALUATOR_HELD_OUT_DOMAINS)} (held-out evaluation photos: never trained on)")
    if c.height != c.width or c.height % cfg.clip.patch_size or c.height < 16:
        raise ConfigError(source, "corpus.height/width", (c.height, c.width), "square frames of at least 16 pixels, "
                          f"a multiple of clip.patch_size {cfg.clip.patch_size} (CLIP's image size is the frame's)")
    if c.num_frames < 2:
        raise ConfigError(source, "corpus.num_frames", c.num_frames, "at least 2 frames (the clips must move)")
    if cfg.clip.hidden_size % cfg.clip.heads:
        raise ConfigError(source, "clip.hidden_size", cfg.clip.hidden_size,
                          f"a multiple of clip.heads {cfg.clip.heads}")
    if cfg.clip.batch_size < 2 or cfg.clip.retrieval_pairs > c.val_clips:
        raise ConfigError(source, "clip.batch_size/retrieval_pairs", (cfg.clip.batch_size, cfg.clip.retrieval_pairs),
                          f"a batch of >= 2 pairs (contrastive) and at most corpus.val_clips {c.val_clips} pairs")
    _check_label_sets(source, "i3d.label_sets", cfg.i3d.label_sets, CLIP_LABEL_SETS)
    _check_label_sets(source, "trunk.label_sets", cfg.trunk.label_sets, FRAME_LABEL_SETS)
    s = cfg.fvd_sanity
    if not s.domains or len(set(s.domains)) != len(s.domains) or set(s.domains) - set(WORLD_DOMAINS):
        raise ConfigError(source, "fvd_sanity.domains", s.domains, f"distinct domains among {list(WORLD_DOMAINS)}")
    if s.clips < 2:
        raise ConfigError(source, "fvd_sanity.clips", s.clips, "at least 2 clips per set (a covariance)")
    if set(s.strengths) != set(FVD_CORRUPTIONS):
        raise ConfigError(source, "fvd_sanity.strengths", sorted(s.strengths), f"the keys {list(FVD_CORRUPTIONS)}")
    for name, values in s.strengths.items():
        top = 1.0 if name in ("shuffle", "freeze") else math.inf
        if not values or any(not 0 < v <= top for v in values) or values != sorted(set(values)):
            raise ConfigError(source, f"fvd_sanity.strengths.{name}", values, "increasing strengths > 0"
                              + (" and <= 1 (a fraction of the frames)" if top == 1.0 else ""))


def _check_ranges(cfg: ExperimentConfig, source: str) -> None:
    _check_choices(cfg, _CHOICES, _POSITIVE, source)
    _check_numbers(cfg, source, _NON_NEGATIVE, _LEARNING_RATES)
    if cfg.eval.guidance_scale < 1:
        raise ConfigError(source, "eval.guidance_scale", cfg.eval.guidance_scale,
                          "a value >= 1 (1 = no classifier-free guidance)")
    unknown = [t for t in cfg.lora.targets if not any(n == t or n.endswith("." + t) for n in WAN_LINEAR_LAYERS)]
    if unknown:
        raise ConfigError(source, "lora.targets", unknown, f"names (or dot-separated suffixes) of the Wan "
                          f"transformer's linear layers: {list(WAN_LINEAR_LAYERS)}")
    if cfg.world.enabled:
        _check_world(cfg.world, source, (("train", "val") if cfg.train.enabled else ()) + ("test",))
    other = {"i3d_pretrained_400.pt": "videogpt", "rgb_imagenet.pt": "pytorch-i3d"}.get(Path(cfg.eval.i3d_weights).name)
    if other and other != cfg.eval.i3d_release:
        raise ConfigError(source, "eval.i3d_release", cfg.eval.i3d_release, f"{other!r} for {cfg.eval.i3d_weights} "
                          "(each file runs with the batch-norm eps of the code it was released with)")
    for key in _FRACTIONS:
        if not 0 <= _get(cfg, key) < 1:
            raise ConfigError(source, key, _get(cfg, key), "a value in [0, 1)")
    for section in ("data", "world"):
        h, w, t = (_get(cfg, f"{section}.{k}") for k in ("height", "width", "num_frames"))
        if h % 16 or w % 16:
            raise ConfigError(source, f"{section}.height/width", (h, w), "multiples of 16 (VAE 8x, patch 2x)")
        if (t - 1) % 4:
            raise ConfigError(source, f"{section}.num_frames", t, "4k+1 frames (the VAE compresses time 4x)")
    for i, text in enumerate(cfg.data.buckets):
        try:
            parse_bucket(text)
        except ValueError as err:
            raise ConfigError(source, f"data.buckets[{i}]", text, str(err)) from None
    if len(set(cfg.data.buckets)) != len(cfg.data.buckets):
        raise ConfigError(source, "data.buckets", cfg.data.buckets, "each bucket once")
    if len(cfg.train.betas) != 2 or not all(0 <= b < 1 for b in cfg.train.betas):
        raise ConfigError(source, "train.betas", cfg.train.betas, "two values in [0, 1)")
    if not cfg.lora.targets:
        raise ConfigError(source, "lora.targets", cfg.lora.targets, "at least one module name")
    if cfg.speed.keep_ffn_blocks and not all(t.startswith(("attn1.", "attn2.")) for t in cfg.lora.targets):
        raise ConfigError(source, "lora.targets", cfg.lora.targets, "attention layers only (attn1.* / attn2.*) "
                          "with speed.keep_ffn_blocks > 0 (its recompute computes no FFN or modulation gradient)")
    if (cfg.train.stage == "two_stage") != (cfg.train.style_steps > 0):
        raise ConfigError(source, "train.style_steps", cfg.train.style_steps,
                          "> 0 exactly when train.stage is two_stage")
    if cfg.eval.pipeline == "two_stage" and (cfg.train.stage != "two_stage" or cfg.eval.attack):
        raise ConfigError(source, "eval.pipeline", cfg.eval.pipeline, "one_stage unless train.stage is two_stage "
                          "and eval.attack is false (the attack perturbs a real first frame)")
    if cfg.train.enabled and not (cfg.data.train and cfg.data.val):
        raise ConfigError(source, "data.train/data.val", (cfg.data.train, cfg.data.val), "paths when training")


_NAME = re.compile(r"[a-z][a-z0-9_]*")


def stage_experiment(source: str | Path, stage: SearchStageConfig) -> Path:
    """The config of a search stage's experiment: the experiment folder of that name beside the search's folder."""
    return Path(source).parent.parent / stage.experiment / "config.yaml"


def _check_search(cfg: SearchConfig, source: str) -> None:
    """A search's stages, before any work: names, experiments, criteria, grids, and every grid point's config
    (resolved as the search resolves it: without the profile's chosen values, the point's values set)."""
    _check_numbers(cfg, source, ("seed",), ())
    if not cfg.stages:
        raise ConfigError(source, "stages", cfg.stages, "at least one stage")
    taken: dict[str, str] = {}  # chosen key -> the stage that chooses it
    for i, stage in enumerate(cfg.stages):
        at = f"stages[{i}]"
        if not _NAME.fullmatch(stage.name) or stage.name in {s.name for s in cfg.stages[:i]}:
            raise ConfigError(source, f"{at}.name", stage.name, "a name of its own: lower-case letters, digits, _")
        path = stage_experiment(source, stage)
        if not _NAME.fullmatch(stage.experiment) or not path.is_file():
            raise ConfigError(source, f"{at}.experiment", stage.experiment, f"an experiment with a config at {path}")
        experiment = load_config(path, cfg.profile, choices=False)
        if experiment.kind != "generator" or not experiment.train.enabled:
            raise ConfigError(source, f"{at}.experiment", stage.experiment, "a generator experiment that trains")
        d = experiment.data
        if d.val in (d.train, *experiment.eval.domains.values()):
            raise ConfigError(source, f"{at}.experiment", stage.experiment, f"validation clips (data.val {d.val}) "
                              "apart from the training clips and from every evaluation domain's test clips")
        signal = early_stop_signal(experiment.train)
        if stage.criterion != signal:
            raise ConfigError(source, f"{at}.criterion", stage.criterion, f"{signal!r}, the early-stopping signal of "
                              f"{stage.experiment} (train.early_stop_metric {experiment.train.early_stop_metric!r}): a "
                              "point's score is the best value of what picks the LoRA its run keeps")
        if not stage.grid:
            raise ConfigError(source, f"{at}.grid", stage.grid, "at least one axis {axis: {dotted key: values}}")
        for axis, keys in stage.grid.items():
            if not _NAME.fullmatch(axis) or not keys:
                raise ConfigError(source, f"{at}.grid.{axis}", keys, "an axis named in lower-case letters, digits "
                                  "and _, holding at least one key")
            for key, values in keys.items():
                where = f"{at}.grid.{axis}.{key}"
                if key not in SEARCH_GRID_KEYS:
                    raise ConfigError(source, where, values, f"a key among {list(SEARCH_GRID_KEYS)}")
                if key in taken:
                    raise ConfigError(source, where, values, f"a key no other axis or stage varies ({taken[key]} does)")
                taken[key] = f"{at}.grid.{axis}"
                first = next(iter(keys.values()))
                if not values or len(values) != len(first) or len(set(values)) != len(values):
                    raise ConfigError(source, where, values, f"{len(first) or 'at least one'} distinct values (one "
                                      f"per point of the axis, as its first key {next(iter(keys))})")
        if stage.choose_steps:
            if "train.steps" in taken:
                raise ConfigError(source, f"{at}.choose_steps", True, f"false: {taken['train.steps']} chooses "
                                  "train.steps")
            taken["train.steps"] = at
        for point, values in stage.points():
            try:
                load_config(path, cfg.profile, choices=False, overrides=values)
            except ConfigError as err:
                axis = next((a for a, keys in stage.grid.items() if err.key in keys), "?")
                raise ConfigError(source, f"{at}.grid.{axis}.{err.key}", err.found,
                                  f"{err.expected} (point {point} of {stage.experiment})") from None


class _StrictLoader(yaml.SafeLoader):
    """yaml's SafeLoader (no object construction), stricter in two ways: a key twice in one mapping is an error
    (SafeLoader keeps the last silently), and `3e-5` is a float as in YAML 1.2 (YAML 1.1 needs a dot: `3.0e-5`)."""

    yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (the later one would "
                                                        "silently win)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$"), list("-+0123456789"))


def _read_yaml(path: Path) -> dict:
    source = str(path)
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_StrictLoader)
    except FileNotFoundError:
        raise ConfigError(source, "(file)", None, "an existing YAML file") from None
    except yaml.YAMLError as err:
        raise ConfigError(source, "(file)", " ".join(str(err).split()), "valid YAML") from None
    except UnicodeDecodeError as err:
        raise ConfigError(source, "(file)", f"byte {err.object[err.start:err.start + 1]!r} at offset {err.start}",
                          "UTF-8 text") from None
    if not isinstance(raw, dict):
        raise ConfigError(source, "(top level)", raw, "a mapping")
    return raw


def _chain(path: Path) -> list[tuple[Path, dict]]:
    """[(file, raw)] from the root experiment down to `path`; a parent is the experiment folder of that name
    beside the child's folder."""
    files: list[tuple[Path, dict]] = []
    while True:
        raw = _read_yaml(path)
        files.insert(0, (path, raw))
        for key in DERIVED_KEYS:
            if key in raw:
                raise ConfigError(str(path), key, raw[key], f"no '{key}' key: the loader derives it")
        parent = raw.get("parent", "")
        if not parent:
            return files
        if not isinstance(parent, str) or Path(parent).name != parent:
            raise ConfigError(str(path), "parent", parent, "the name of an experiment folder beside this one")
        path = path.parent.parent / parent / "config.yaml"
        if any(p.resolve() == path.resolve() for p, _ in files):
            raise ConfigError(str(files[0][0]), "parent", parent, "a chain of parents without a cycle")
        if not path.is_file():
            raise ConfigError(str(files[0][0]), "parent", parent, f"an experiment with a config at {path}")


def chain_root(path: str | Path) -> Path:
    """The root experiment's config of the experiment at `path` (the complete file its chain of parents ends in)."""
    return _chain(Path(path))[0][0]


def _schema(kind: str, source: str) -> type:
    if kind not in KINDS:
        raise ConfigError(source, "kind", kind, f"one of {list(KINDS)}")
    return KINDS[kind]


def _leaves(raw: dict, cls: type, prefix: str, source: str) -> list[str]:
    """Dotted keys of the schema's leaf fields that `raw` sets (sections are descended into)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    keys = []
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(source, dotted, value, f"one of the known keys {sorted(fields)}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(source, dotted, value, f"a mapping of {hints[key].__name__} fields")
            keys += _leaves(value, hints[key], dotted, source)
        else:
            keys.append(dotted)
    return keys


def _merge(base: dict, child: dict, cls: type) -> dict:
    """`child` over `base`: sections key by key, every other value (mapping-valued fields such as eval.domains
    included) replaced whole. Both are already checked against the schema `cls` (`_leaves`)."""
    hints = typing.get_type_hints(cls)
    merged = dict(base)
    for key, value in child.items():
        section = dataclasses.is_dataclass(hints[key]) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value, hints[key]) if section else value
    return merged


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    section, key = dotted.split(".")
    raw.setdefault(section, {})[key] = value


def _overrides(raw: Any, source: str, allowed: tuple[str, ...], what: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(source, what, raw, "a mapping of dotted keys to values")
    for dotted, value in raw.items():
        if dotted not in allowed:
            raise ConfigError(source, f"{what}.{dotted}" if what else dotted, value,
                              f"a key this file may change: {list(allowed)}")
    return raw


def _profile_overrides(kind: str, profile: str, files: list[tuple[Path, dict]]) -> tuple[dict, list[dict]]:
    """The dotted overrides of `profile`: its file's section for `kind`, and each experiment file's own
    `profiles.<profile>` (root first), which may also set the `CHOSEN_KEYS` (generator experiments)."""
    shared = {}
    if profile != "full":
        path = CONFIGS_ROOT / "profiles" / f"{profile}.yaml"
        sections = _read_yaml(path)
        if set(sections) - set(KINDS):
            raise ConfigError(str(path), "(top level)", sorted(sections), f"sections among {list(KINDS)}")
        shared = _overrides(sections.get(kind), str(path), PROFILE_KEYS, kind)
    allowed = PROFILE_KEYS + (_CHOSEN_ALGORITHM_KEYS if kind == "generator" else ())
    own = []
    for path, raw in files:
        profiles = raw.get("profiles") or {}
        if not isinstance(profiles, dict) or set(profiles) - set(PROFILES):
            raise ConfigError(str(path), "profiles", profiles, f"a mapping with keys among {list(PROFILES)}")
        own.append(_overrides(profiles.get(profile), str(path), allowed, f"profiles.{profile}"))
    return shared, own


def _hardware_overrides(hardware: str) -> dict:
    """The `speed.*` overrides of the preset `configs/hardware/<hardware>.yaml`."""
    path = CONFIGS_ROOT / "hardware" / f"{hardware}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS_ROOT / "hardware").glob("*.yaml"))
        raise ConfigError(str(path), "hardware", hardware, f"one of the presets {known}")
    speed_keys = tuple(k for k in PROFILE_KEYS if k.startswith("speed."))
    return _overrides(_read_yaml(path), str(path), speed_keys, "")


def _substitute(value: Any, profile: str) -> Any:
    if isinstance(value, str):
        return value.replace("{profile}", profile)
    if isinstance(value, dict):
        return {k: _substitute(v, profile) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, profile) for v in value]
    return value


def _resolve(path: str | Path, profile: str, hardware: str | None, choices: bool,
             overrides: dict[str, Any] | None) -> tuple[dict, str, dict[str, Any]]:
    """(the resolved mapping, its kind, the CHOSEN_KEYS values the chain's `profiles.<profile>` gave it)."""
    path, source = Path(path), str(path)
    if profile not in PROFILES:
        raise ConfigError(source, "profile", profile, f"one of {list(PROFILES)}")
    files = _chain(path)
    root_source, root = files[0]
    kind = root.get("kind")
    cls = _schema(kind, str(root_source))
    if kind in INSTRUMENT_KINDS and profile == "full":
        raise ConfigError(source, "profile", profile, f"proxy or smoke: a {kind} experiment builds the proxy "
                          "instrument, and at full the published weights take its place")
    if kind == "search" and profile == "full":
        raise ConfigError(source, "profile", profile, "proxy or smoke: a search chooses a small profile's "
                          "hyperparameters; at full the seed's settings are the recipe")
    merged: dict = {}
    sets: list[set[str]] = []  # the dotted keys each file's body sets
    for file, raw in files:
        if raw.get("kind", kind) != kind:
            raise ConfigError(str(file), "kind", raw["kind"], f"{kind!r}, the kind of its root {root_source}")
        if not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ConfigError(str(file), "name", raw.get("name"), "the experiment's name (each file sets its own)")
        body = {k: v for k, v in raw.items() if k not in ("profiles", "parent", "name")}
        sets.append(set(_leaves(body, cls, "", str(file))))
        merged = _merge(merged, body, cls)
    shared, own = _profile_overrides(kind, profile, files)
    pinned = {k for k in own[-1] if k in _CHOSEN_ALGORITHM_KEYS}  # its own value where the parent's is chosen
    merged.update(name=files[-1][1]["name"], parent=files[-1][1].get("parent", ""),
                  varies=sorted(sets[-1] | pinned) if len(files) > 1 else [], profile=profile)
    for dotted, value in shared.items():
        _set_dotted(merged, dotted, value)
    chosen: dict[str, Any] = {}
    for i, section in enumerate(own):
        below = set().union(*sets[i + 1:])  # keys a descendant sets itself: its value stands
        for dotted, value in section.items():
            if dotted in below or (dotted in CHOSEN_KEYS and not choices):
                continue
            if dotted in CHOSEN_KEYS:
                chosen[dotted] = value
            _set_dotted(merged, dotted, value)
    for dotted, value in (overrides or {}).items():
        if dotted not in CHOSEN_KEYS:
            raise ConfigError(source, dotted, value, f"a search override among {list(CHOSEN_KEYS)}")
        _set_dotted(merged, dotted, value)
    if kind == "generator":
        if hardware is not None and profile != "full":
            raise ConfigError(source, "hardware", hardware, "no hardware preset: presets apply to --profile full")
        merged["hardware"] = (hardware or DEFAULT_HARDWARE) if profile == "full" else ""
        if merged["hardware"]:
            for dotted, value in _hardware_overrides(merged["hardware"]).items():
                _set_dotted(merged, dotted, value)
    elif hardware is not None:
        raise ConfigError(source, "hardware", hardware, "no hardware preset: presets apply to generator configs")
    return _substitute(merged, profile), kind, chosen


def resolve_raw(path: str | Path, profile: str = "smoke", hardware: str | None = None, *, choices: bool = True,
                overrides: dict[str, Any] | None = None) -> tuple[dict, str]:
    """(the resolved mapping, its kind) of the experiment at `path` for `profile` (module docstring). `choices`:
    apply the CHOSEN_KEYS of the chain's `profiles.<profile>` (False: a search's starting point); `overrides`:
    CHOSEN_KEYS values set last (a search's grid point)."""
    raw, kind, _ = _resolve(path, profile, hardware, choices, overrides)
    return raw, kind


def profile_choices(path: str | Path, profile: str) -> dict[str, Any]:
    """{dotted key: value} of the CHOSEN_KEYS that the `profiles.<profile>` sections of the experiment's chain give
    it (a descendant's own keys left out, as resolution leaves them)."""
    return _resolve(path, profile, None, True, None)[2]


def load_config(path: str | Path, profile: str = "smoke", hardware: str | None = None, *, choices: bool = True,
                overrides: dict[str, Any] | None = None) -> ExperimentConfig | MetricExperimentConfig:
    """Resolve the experiment at `path` (YAML, safe_load) for `profile`, validate every key; raises ConfigError.
    `choices`, `overrides`: as `resolve_raw`."""
    raw, kind = resolve_raw(path, profile, hardware, choices=choices, overrides=overrides)
    source = str(path)
    cfg = _build(KINDS[kind], raw, "", source)
    {"generator": _check_ranges, "metric": _check_metric_ranges, "base_model": _check_base_model,
     "evaluators": _check_evaluators, "search": _check_search}[kind](cfg, source)
    return cfg


def config_dict(cfg: ExperimentConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, keys in schema order (the text that is hashed and written)."""
    return yaml.safe_dump(config_dict(cfg), sort_keys=False, default_flow_style=None)


def config_hash(cfg: ExperimentConfig) -> str:
    """sha256 of the canonical JSON of the resolved config; 12 hex digits name it in results."""
    canonical = json.dumps(config_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_diff(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (used to check ablations)."""
    flat_a, flat_b = flatten(a), flatten(b)
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a config's leaf fields (mapping-valued fields such as eval.domains are leaves)."""
    out = {}
    for f in dataclasses.fields(cfg):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(cfg, f.name)
        out.update(flatten(value, key) if dataclasses.is_dataclass(value) else {key: value})
    return out


__all__ = [
    "ConfigError", "ExperimentConfig", "MetricExperimentConfig", "BaseModelConfig", "CorpusConfig", "PhaseConfig",
    "VAEPhaseConfig", "TransformerPhaseConfig", "EvidenceConfig", "INSTRUMENT_KINDS", "PerceptualConfig", "AdversarialConfig",
    "RLPIPSConfig", "KINDS", "ModelConfig", "LoraConfig", "DataConfig", "WorldConfig", "TrainConfig",
    "EvalConfig", "SpeedLevers", "PROFILES", "PROFILE_KEYS", "CROSS_ATTENTION_TARGETS", "DEFAULT_HARDWARE",
    "load_config", "resolve_raw", "config_yaml", "config_hash", "config_dict", "config_diff", "flatten",
    "EvaluatorsConfig", "I3DPhaseConfig", "CLIPPhaseConfig", "TrunkPhaseConfig", "FVDSanityConfig",
    "CLIP_LABEL_SETS", "FRAME_LABEL_SETS", "FVD_CORRUPTIONS", "EVALUATOR_HELD_OUT_DOMAINS",
    "SearchConfig", "SearchStageConfig", "CHOSEN_KEYS", "SEARCH_GRID_KEYS", "early_stop_signal", "profile_choices",
    "stage_experiment", "chain_root",
]
