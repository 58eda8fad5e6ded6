"""The one training loop: LoRA fine-tuning of the Wan2.1 I2V transformer with the flow-matching objective,
through accelerate (bf16 mixed precision on GPU, fp32 on CPU; DDP/FSDP come from `accelerate launch`).

Gradient accumulation, gradient checkpointing, AdamW, cosine schedule with warm-up, periodic validation with
early stopping, resumable checkpoints, a tqdm bar and a JSONL log. Every random draw comes from
`seeding.generator(seed, purpose, micro_step)`, so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from accelerate import Accelerator
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from cinelora import conditioning, flow_matching, lora, models, results, seeding
from cinelora.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint
from cinelora.config import ExperimentConfig
from cinelora.data import VideoClipDataset

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped and its last good checkpoint is untouched."""


@dataclass
class TrainResult:
    steps: int
    best_val: float
    best_step: int
    stopped_early: bool
    lora_dir: Path
    seconds: float
    trainable_parameters: int
    total_parameters: int


class MicroStepSampler(Sampler[list[int]]):
    """Clip indices for global micro-steps `start, start+1, …`: epoch e is a permutation drawn from
    (seed, "data_order", e); process r of w takes element k·w + r of that stream."""

    def __init__(self, n: int, seed: int, batch_size: int, start: int, total: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.start, self.total, self.rank, self.world = start, total, rank, world

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        perm = torch.randperm(self.n, generator=seeding.generator(self.seed, "data_order", epoch))
        return int(perm[offset])

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.start, self.total):
            first = (k * self.world + self.rank) * self.batch_size
            yield [self._index(first + j * self.world) for j in range(self.batch_size)]

    def __len__(self) -> int:
        return self.total - self.start


def _collate(items: list[dict]) -> dict:
    return {
        "video": torch.stack([it["video"] for it in items]),
        "condition": torch.stack([it["condition"] for it in items]),
        "caption": [it["caption"] for it in items],
    }


def _encode_batch(c: models.WanComponents, batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Frozen encoders: latents x0, I2V condition, text and image embeddings (no gradients)."""
    video = batch["video"].to(device, c.vae.dtype)
    first = batch["condition"].to(device, c.vae.dtype)
    with torch.no_grad():
        return {
            "latents": conditioning.encode_video_latents(c.vae, video).to(dtype),
            "condition": conditioning.condition_latents(c.vae, first, video.shape[2]).to(dtype),
            "text": conditioning.encode_prompts(c.tokenizer, c.text_encoder, batch["caption"]).to(device, dtype),
            "image": conditioning.encode_condition_images(c.image_processor, c.image_encoder, first).to(device, dtype),
        }


def _flow_loss(transformer: torch.nn.Module, inputs: dict, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    noisy = flow_matching.add_noise(inputs["latents"], noise, sigmas)
    pred = transformer(
        hidden_states=torch.cat([noisy, inputs["condition"]], dim=1),
        timestep=sigmas * 1000,
        encoder_hidden_states=inputs["text"],
        encoder_hidden_states_image=inputs["image"],
        return_dict=False,
    )[0]
    return flow_matching.flow_matching_loss(pred, flow_matching.velocity_target(inputs["latents"], noise))


def _draw(seed: int, purpose: str, index: int, latents: torch.Tensor, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas [B], noise like latents) for one micro-step, on the CPU generator then moved: device-independent."""
    sigmas = flow_matching.sample_sigmas(latents.shape[0], shift, seeding.generator(seed, purpose, index))
    noise = torch.randn(latents.shape, generator=seeding.generator(seed, purpose, index + 1_000_003), dtype=torch.float32)
    return sigmas.to(latents.device, latents.dtype), noise.to(latents.device, latents.dtype)


def validation_loss(transformer, c: models.WanComponents, batches: list[dict], cfg: ExperimentConfig,
                    device: torch.device, dtype: torch.dtype) -> float:
    """Mean flow loss over fixed validation batches with fixed noise: comparable across evaluations."""
    total = 0.0
    with torch.no_grad():
        for i, batch in enumerate(batches):
            inputs = _encode_batch(c, batch, device, dtype)
            sigmas, noise = _draw(cfg.seed, "validation", i, inputs["latents"], cfg.model.flow_shift)
            total += float(_flow_loss(transformer, inputs, sigmas, noise))
    return total / len(batches)


def _lr_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer):
    warmup = round(cfg.train.warmup_frac * cfg.train.steps)
    if cfg.train.lr_schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, cfg.train.steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past the resumed step: they belong to the part of the run that is redone."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        results.atomic_write_text(path, "".join(line + "\n" for line in kept))


def _peak_memory_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def train(cfg: ExperimentConfig, out_dir: Path, ckpt_root: Path, *, progress: bool = True) -> TrainResult:
    """Train (or resume) the LoRA of `cfg`; writes `train_log.jsonl` and the best LoRA under `out_dir/lora`."""
    t0 = time.perf_counter()
    on_gpu = torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if on_gpu and cfg.train.mixed_precision == "bf16" else "no")
    device, tc = accelerator.device, cfg.train
    dtype = DTYPES[cfg.model.weight_dtype]
    seeding.seed_everything(cfg.seed)

    train_set = VideoClipDataset(cfg.data.train, cfg.data.height, cfg.data.width, cfg.data.num_frames,
                                 cfg.data.frame_stride, skip_bad=cfg.data.skip_bad_videos)
    val_set = VideoClipDataset(cfg.data.val, cfg.data.height, cfg.data.width, cfg.data.num_frames,
                               cfg.data.frame_stride, skip_bad=cfg.data.skip_bad_videos)
    c = models.build_components(cfg.model, device=device, seed=cfg.seed)
    transformer = c.transformer
    lora.attach_lora(transformer, cfg.lora)
    if tc.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(lora.lora_parameters(transformer), lr=tc.lr, betas=tuple(tc.betas),
                                  weight_decay=tc.weight_decay)
    scheduler = _lr_scheduler(cfg, optimizer)

    state, best_lora = TrainerState(), None
    ckpt = latest_checkpoint(ckpt_root)
    if ckpt is not None:
        state, lora_sd, opt_sd, best_lora = load_checkpoint(ckpt)
        lora.load_lora_state_dict(transformer, lora_sd)
        optimizer.load_state_dict(opt_sd)
        scheduler.load_state_dict(state.scheduler)
        accelerator.print(f"resuming from {ckpt.name} (step {state.step}/{tc.steps})")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train_log.jsonl"
    _truncate_log(log_path, state.step)
    transformer, optimizer = accelerator.prepare(transformer, optimizer)

    val_batches = [_collate([val_set[(i * tc.batch_size + j) % len(val_set)] for j in range(tc.batch_size)])
                   for i in range(tc.val_batches)]
    sampler = MicroStepSampler(len(train_set), cfg.seed, tc.batch_size, state.step * tc.grad_accum,
                               tc.steps * tc.grad_accum, accelerator.process_index, accelerator.num_processes)
    batches = iter(DataLoader(train_set, batch_sampler=sampler, collate_fn=_collate, num_workers=tc.num_workers))

    bar = tqdm(total=tc.steps, initial=state.step, desc=f"train {cfg.name}/{cfg.profile}", unit="step",
               disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    step_t, logged_step = time.perf_counter(), state.step
    while state.step < tc.steps and not state.stopped_early:
        transformer.train()
        losses = []
        for micro in range(tc.grad_accum):
            k = state.step * tc.grad_accum + micro
            inputs = _encode_batch(c, next(batches), device, dtype)
            sigmas, noise = _draw(cfg.seed, "noise", k * accelerator.num_processes + accelerator.process_index,
                                  inputs["latents"], cfg.model.flow_shift)
            sync = micro == tc.grad_accum - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(transformer), accelerator.autocast():
                loss = _flow_loss(transformer, inputs, sigmas, noise)
                if not bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all()):
                    last = latest_checkpoint(ckpt_root)
                    raise NonFiniteLossError(
                        f"non-finite loss ({float(loss.detach())}) at step {state.step + 1}, micro-batch {micro + 1}: "
                        f"stopped; last good checkpoint: {last if last else 'none (no checkpoint yet)'}. "
                        "Lower train.lr or check the data.")
                accelerator.backward(loss / tc.grad_accum)
            losses.append(float(loss.detach()))
        accelerator.clip_grad_norm_(lora.lora_parameters(transformer), tc.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        bar.update(1)

        record = {"step": state.step, "loss": sum(losses) / len(losses), "lr": scheduler.get_last_lr()[0]}
        if state.step % tc.val_every == 0 or state.step == tc.steps:
            transformer.eval()
            val = validation_loss(transformer, c, val_batches, cfg, device, dtype)
            record["val_loss"] = val
            if val < state.best_val - tc.early_stop_min_delta:
                state.best_val, state.best_step, state.evals_without_improvement = val, state.step, 0
                best_lora = lora.lora_state_dict(accelerator.unwrap_model(transformer))
            else:
                state.evals_without_improvement += 1
                if tc.early_stop_patience and state.evals_without_improvement >= tc.early_stop_patience:
                    state.stopped_early = True
                    record["early_stop"] = True
        if state.step % tc.log_every == 0 or "val_loss" in record:
            now = time.perf_counter()
            record["s_per_step"] = (now - step_t) / (state.step - logged_step)  # validation time included
            record["peak_mem_gib"] = _peak_memory_gib(device)
            step_t, logged_step = now, state.step
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                            **({"val": f"{record['val_loss']:.4f}"} if "val_loss" in record else {}))
            if accelerator.is_main_process:
                results.append_jsonl(log_path, record)
        if state.step % tc.checkpoint_every == 0 or state.step == tc.steps or state.stopped_early:
            state.scheduler = scheduler.state_dict()
            if accelerator.is_main_process:
                save_checkpoint(ckpt_root, state, lora.lora_state_dict(accelerator.unwrap_model(transformer)),
                                optimizer, best_lora)
            accelerator.wait_for_everyone()
    bar.close()

    final = accelerator.unwrap_model(transformer)
    if best_lora is not None:
        lora.load_lora_state_dict(final, best_lora)  # keep the best validated LoRA, as early stopping promises
    lora_dir = out_dir / "lora"
    if accelerator.is_main_process:
        lora.save_lora(final, lora_dir, cfg.lora)
    return TrainResult(state.step, state.best_val, state.best_step, state.stopped_early, lora_dir,
                       time.perf_counter() - t0, sum(p.numel() for p in lora.lora_parameters(final)),
                       sum(p.numel() for p in final.parameters()))

