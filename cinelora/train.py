"""The one training loop: LoRA fine-tuning of the Wan2.1 I2V transformer with the flow-matching objective,
through accelerate (bf16 mixed precision on GPU, fp32 on CPU; DDP/FSDP2 come from `accelerate launch`, and
context parallelism over groups of those processes from `context_parallel`).

Gradient accumulation, gradient checkpointing, AdamW, cosine schedule with warm-up, periodic validation with
early stopping and samples (`training_samples`), resumable checkpoints, a tqdm bar, a JSONL log and TensorBoard
events (`tensorboard_events`). Every random draw comes from `seeding.generator(seed, purpose, micro_step)`, so a
resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from cinelora import lora, models, objective, seeding
from cinelora.speed.checkpointing import apply_speed_levers
from cinelora.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint
from cinelora.config import ExperimentConfig, config_hash, early_stop_signal
from cinelora.speed.context_parallel import Layout
from cinelora.speed.context_parallel import enable as enable_context_parallel
from cinelora.data.buckets import bucket_batches, parse_bucket
from cinelora.data.videos import training_clips
from cinelora.objective import PerceptualDistance, TrainingObjective
from cinelora.latent_cache import EncodingCache, LatentStore, dataset_keys
from cinelora.rundir import ConfigChangedError, RunDir, cache_root
from cinelora.tensorboard_events import TENSORBOARD_DIR, config_text, log_record
from cinelora.training_samples import write_training_samples

# Optimizer state as checkpoints hold it: whole tensors keyed by parameter name, gathered to the main process's
# CPU when FSDP2 shards them (and sharded again on loading), so the same file serves any process count.
FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN/inf; the run stopped before the optimizer step, so its last good
    checkpoint is untouched and resumable."""


@dataclass
class TrainResult:
    steps: int
    val_metric: str  # the validation record early stopping watches: val_perceptual (D on x̂0) or val_loss (flow)
    best_val: float
    best_step: int
    stopped_early: bool
    lora_dir: Path
    context_parallel: int
    seconds: float
    trainable_parameters: int
    total_parameters: int


def epoch_batches(groups: list[list[int]], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Epoch `epoch`'s micro-batches, each from one bucket: every group (a bucket's clip indices) permuted and cut
    into full batches (`buckets.bucket_batches`), then the batches shuffled; drawn from (seed, "data_order", epoch)."""
    g = seeding.generator(seed, "data_order", epoch)
    permuted = [[members[int(i)] for i in torch.randperm(len(members), generator=g)] for members in groups]
    batches = bucket_batches(permuted, batch_size)
    return [batches[int(i)] for i in torch.randperm(len(batches), generator=g)]


class MicroStepSampler(Sampler[list[int]]):
    """Clip indices for global micro-steps `start, start+1, …`: the stream of `epoch_batches` over epochs 0, 1, …;
    process r of w takes batch k·w + r of that stream."""

    def __init__(self, groups: list[list[int]], seed: int, batch_size: int, start: int, total: int, rank: int = 0,
                 world: int = 1):
        self.groups, self.seed, self.batch_size = groups, seed, batch_size
        self.start, self.total, self.rank, self.world = start, total, rank, world
        self.per_epoch = len(bucket_batches(groups, batch_size))
        self._epoch, self._batches = -1, []

    def _batch(self, position: int) -> list[int]:
        epoch, offset = divmod(position, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(self.groups, self.batch_size, self.seed, epoch)
        return self._batches[offset]

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.start, self.total):
            yield self._batch(k * self.world + self.rank)

    def __len__(self) -> int:
        return self.total - self.start


def _collate(items: list[dict]) -> dict:
    return {
        "video": torch.stack([it["video"] for it in items]),
        "condition": torch.stack([it["condition"] for it in items]),
        "caption": [it["caption"] for it in items],
        "index": [it["index"] for it in items],
    }


def _collate_black_condition(items: list[dict]) -> dict:
    """The style stage: single frames generated from a black condition frame, so that at inference a black
    frame + caption gives a keyframe in the learned look (stage 1 of the two-stage pipeline)."""
    batch = _collate(items)
    batch["condition"] = torch.full_like(batch["condition"], -1.0)
    return batch


def _load_frozen_adapter(transformer, name: str, folder: Path) -> None:
    """Load a finished LoRA (diffusers format, alpha from its metadata) as a frozen, active adapter."""
    transformer.load_lora_adapter(str(folder / lora.LORA_WEIGHTS), adapter_name=name, use_safetensors=True)
    _freeze_adapter(transformer, name)


def _freeze_adapter(transformer, name: str) -> None:
    for n, p in transformer.named_parameters():
        if f".{name}." in n:
            p.requires_grad_(False)


def validate(transformer, c: models.WanComponents, batches: list[dict], cfg: ExperimentConfig, device: torch.device,
             dtype: torch.dtype, perceptual: PerceptualDistance | None) -> dict[str, float]:
    """Mean flow loss (and perceptual distance of the one-step x̂0, when a D is configured) over fixed
    validation batches with fixed noise levels and noise: comparable across evaluations."""
    totals: dict[str, float] = {}
    with torch.no_grad():
        for i, batch in enumerate(batches):
            inputs = objective.encode_batch(c, batch, device, dtype)
            sigmas, noise = objective.draw_noise(cfg.seed, "validation", i, inputs["latents"], cfg.model.flow_shift)
            _, terms = objective.objective(transformer, c, inputs, sigmas, noise, perceptual, 1.0)
            for name, value in terms.items():
                totals[f"val_{'loss' if name == 'flow' else name}"] = totals.get(
                    f"val_{'loss' if name == 'flow' else name}", 0.0) + float(value) / len(batches)
    return totals


def early_stop_update(state: TrainerState, value: float, step: int, patience: int, min_delta: float) -> bool:
    """Record one validation value; True when it beats the best by more than min_delta. Sets
    state.stopped_early once `patience` evaluations in a row did not (patience 0 never stops)."""
    if value < state.best_val - min_delta:
        state.best_val, state.best_step, state.evals_without_improvement = value, step, 0
        return True
    state.evals_without_improvement += 1
    state.stopped_early = bool(patience) and state.evals_without_improvement >= patience
    return False


def _lr_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer):
    warmup = round(cfg.train.warmup_frac * cfg.train.steps)
    if cfg.train.lr_schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, cfg.train.steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _peak_memory_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def train(cfg: ExperimentConfig, run: RunDir, *, progress: bool = True, context_parallel: int = 1) -> TrainResult:
    """Train (or resume) the LoRA of `cfg` into `run`: `train_log.jsonl`, the best LoRA in `run.lora`, resumable
    checkpoints in `run.checkpoints`.

    Two-stage (train.stage: two_stage, the seed's "style decoupled from motion"): first a "style" LoRA on
    single frames (T = 1, black condition frame) for train.style_steps steps in `run.stage("style")`, then
    the "motion" LoRA on clips with the style LoRA loaded, active and frozen; both run this same loop.
    `context_parallel`: ranks per context-parallel group (`cinelora.speed.context_parallel`; 1 = none)."""
    if cfg.train.stage == "single":
        return train_stage(cfg, run, progress=progress, context_parallel=context_parallel)
    style_run = run.stage("style")
    train_stage(style_config(cfg), style_run, adapter="style", progress=progress, context_parallel=context_parallel)
    return train_stage(cfg, run, adapter="motion", frozen={"style": style_run.lora}, progress=progress,
                       context_parallel=context_parallel)


def style_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The style stage of a two-stage config: single frames (of each bucket's size), train.style_steps steps."""
    sizes = dict.fromkeys(str(dataclasses.replace(parse_bucket(b), num_frames=1)) for b in cfg.data.buckets)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_frames=1, buckets=list(sizes)),
                               train=dataclasses.replace(cfg.train, steps=cfg.train.style_steps))


def train_stage(cfg: ExperimentConfig, run: RunDir, *, adapter: str = "default",
                frozen: dict[str, Path] | None = None, progress: bool = True,
                context_parallel: int = 1) -> TrainResult:
    """The training loop for one LoRA adapter (`frozen` adapters are loaded first and stay fixed)."""
    t0 = time.perf_counter()
    on_gpu = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not on_gpu,  # on CPUs, several processes (torchrun) train through gloo DDP
                              mixed_precision="bf16" if on_gpu and cfg.train.mixed_precision == "bf16" else "no",
                              log_with="tensorboard" if cfg.train.tensorboard else None, project_dir=str(run.state))
    device, tc = accelerator.device, cfg.train
    layout = Layout(context_parallel, accelerator.process_index, accelerator.num_processes)
    dtype = models.DTYPES[cfg.model.weight_dtype]
    seeding.seed_everything(cfg.seed)

    train_set, val_set = training_clips(cfg.data, cfg.data.train), training_clips(cfg.data, cfg.data.val)
    c = models.build_components(cfg.model, device=device, seed=cfg.seed)
    needs_distance = cfg.perceptual.enabled or tc.early_stop_metric == "perceptual"
    perceptual = PerceptualDistance(cfg.perceptual, cfg.seed, device) if needs_distance else None
    signal = early_stop_signal(tc)
    transformer = c.transformer
    for name, folder in (frozen or {}).items():
        _load_frozen_adapter(transformer, name, folder)
    lora.attach_lora(transformer, cfg.lora, adapter_name=adapter)
    if frozen:
        transformer.set_adapters([*frozen, adapter])  # all active; peft re-enables grads of active adapters
        for name in frozen:
            _freeze_adapter(transformer, name)
    collate = _collate_black_condition if adapter == "style" else _collate
    apply_speed_levers(transformer, cfg.speed)
    group = enable_context_parallel(transformer, layout) if layout.degree > 1 else None
    loss_of = TrainingObjective(cfg, c, perceptual, group)
    optimizer = torch.optim.AdamW(lora.lora_parameters(transformer), lr=tc.lr, betas=tuple(tc.betas),
                                  weight_decay=tc.weight_decay)
    scheduler = _lr_scheduler(cfg, optimizer)

    state, best_lora = TrainerState(config_sha256=config_hash(cfg)), None
    ckpt = latest_checkpoint(run.checkpoints)
    if ckpt is not None:
        state, lora_sd, opt_sd, best_lora = load_checkpoint(ckpt)
        if state.config_sha256 != config_hash(cfg):
            raise ConfigChangedError(f"{ckpt} was made with config {state.config_sha256[:12]}, this run's is "
                                     f"{config_hash(cfg)[:12]}: resuming would mix the two; pass --force to "
                                     "start the run again")
        lora.load_lora_state_dict(transformer, lora_sd)
        scheduler.load_state_dict(state.scheduler)
        accelerator.print(f"resuming from {ckpt.name} (step {state.step}/{tc.steps})")
    run.keep_log(lambda record: record["step"] <= state.step)  # the records past it belong to the redone part
    if tc.tensorboard:  # runs/<experiment>/<profile>/tensorboard; events past the checkpoint are purged, as the log's
        accelerator.init_trackers(TENSORBOARD_DIR, init_kwargs={"tensorboard": {"purge_step": state.step + 1}})
        accelerator.log({"config": config_text(cfg)}, step=state.step)
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    if ckpt is not None:  # after prepare: FSDP2 shards the saved whole state as it sharded the LoRA
        set_optimizer_state_dict(transformer, optimizer.optimizer, opt_sd, options=FULL_STATE)

    fixed = bucket_batches(val_set.groups(), tc.batch_size)  # the same validation batches at every evaluation
    val_batches = [collate([val_set[j] for j in fixed[i % len(fixed)]]) for i in range(tc.val_batches)]
    sampler = MicroStepSampler(train_set.groups(), cfg.seed, tc.batch_size, state.step * tc.grad_accum,
                               tc.steps * tc.grad_accum, layout.data_rank, layout.data_world)
    batches = iter(DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=tc.num_workers))

    cache = EncodingCache(c, device, dtype, LatentStore(cache_root()),
                          dataset_keys(train_set, cfg, "black" if adapter == "style" else "first"))
    bar = tqdm(total=tc.steps, initial=state.step, desc=f"train {cfg.name}/{cfg.profile}", unit="step",
               disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    step_t, logged_step = time.perf_counter(), state.step
    while state.step < tc.steps and not state.stopped_early:
        transformer.train()
        sums: dict[str, float] = {}
        for micro in range(tc.grad_accum):
            k = state.step * tc.grad_accum + micro
            inputs = cache.inputs(next(batches))
            sigmas, noise = objective.draw_noise(cfg.seed, "noise", k * layout.data_world + layout.data_rank,
                                                 inputs["latents"], cfg.model.flow_shift)
            sync = micro == tc.grad_accum - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(transformer), accelerator.autocast():
                loss, terms = loss_of(transformer, accelerator.unwrap_model(transformer), inputs, sigmas, noise)
                if not bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all()):
                    last = latest_checkpoint(run.checkpoints)
                    raise NonFiniteLossError(
                        f"non-finite loss ({float(loss.detach())}) at step {state.step + 1}, micro-batch {micro + 1}: "
                        f"stopped; last good checkpoint: {last if last else 'none (no checkpoint yet)'}. "
                        "Lower train.lr or check the data.")
                # DDP/FSDP2 average over every process; a context-parallel group's gradient is its ranks' sum
                accelerator.backward(loss * layout.loss_scale / tc.grad_accum)
            for name, value in {"loss": loss, **terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) / tc.grad_accum
        grad_norm = accelerator.clip_grad_norm_(lora.lora_parameters(transformer), tc.max_grad_norm)
        if not torch.isfinite(grad_norm):  # the norm of every process's gradients: the same decision everywhere
            last = latest_checkpoint(run.checkpoints)
            raise NonFiniteLossError(
                f"non-finite gradient norm ({float(grad_norm)}) with a finite loss at step {state.step + 1}: stopped "
                f"before the optimizer step; last good checkpoint: {last if last else 'none (no checkpoint yet)'}. "
                "Lower train.lr or check the data.")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        bar.update(1)

        record = {"step": state.step, **sums, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0]}
        if state.step % tc.val_every == 0 or state.step == tc.steps:
            transformer.eval()
            with accelerator.autocast():
                val = validate(transformer, c, val_batches, cfg, device, dtype, perceptual)
                if tc.sample_clips:
                    record["samples"] = write_training_samples(c, cfg, val_set, run, state.step,
                                                               black_condition=adapter == "style",
                                                               write=accelerator.is_main_process)
            # the main process's numbers everywhere: one early-stopping decision, so no process skips the gathers below
            record.update(broadcast_object_list([val])[0])
            if early_stop_update(state, record[signal], state.step, tc.early_stop_patience, tc.early_stop_min_delta):
                best_lora = lora.lora_state_dict(accelerator.unwrap_model(transformer))
            record["early_stop"] = state.stopped_early
        if state.step % tc.log_every == 0 or "val_loss" in record:
            now = time.perf_counter()
            record["s_per_step"] = (now - step_t) / (state.step - logged_step)  # validation time included
            record["peak_mem_gib"] = _peak_memory_gib(device)
            step_t, logged_step = now, state.step
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                            **({"val": f"{record[signal]:.4f}"} if signal in record else {}))
            if accelerator.is_main_process:
                run.append_log(record)
            if tc.tensorboard:
                log_record(accelerator, run, record)
        if state.step % tc.checkpoint_every == 0 or state.step == tc.steps or state.stopped_early:
            state.scheduler = scheduler.state_dict()
            current = lora.lora_state_dict(accelerator.unwrap_model(transformer))  # every process: FSDP2 gathers
            opt_sd = get_optimizer_state_dict(transformer, optimizer.optimizer, options=FULL_STATE)
            if accelerator.is_main_process:
                save_checkpoint(run.checkpoints, state, current, opt_sd, best_lora)
            accelerator.wait_for_everyone()
    bar.close()
    accelerator.end_training()

    final = accelerator.unwrap_model(transformer)
    # the best validated LoRA, as early stopping promises
    keep = best_lora if best_lora is not None else lora.lora_state_dict(final)
    if accelerator.is_main_process:
        lora.save_lora(final, run.lora, cfg.lora, adapter_name=adapter, state=keep)
    return TrainResult(state.step, signal, state.best_val, state.best_step, state.stopped_early, run.lora,
                       layout.degree, time.perf_counter() - t0, sum(p.numel() for p in lora.lora_parameters(final)),
                       sum(p.numel() for p in final.parameters()))

