"""Time the LoRA training step of the Wan I2V transformer on cached inputs, one `BenchCase` per lever setting.

The transformer is built once at its preset's true size with random weights (speed and memory do not
depend on the values), the LoRA of the experiment config is attached once, and every case starts from
the same LoRA values with a fresh AdamW, so the first step of every case is the same computation: its loss
and LoRA gradient norm check that a lever changes speed, not results. A step is the training loop's
micro-step (`cinelora.train` through `cinelora.objective`: `draw_noise`, `objective` under accelerate's
autocast, backward, gradient clipping, AdamW, zero_grad), timed between device synchronisations after
`warmup` untimed steps.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from bench.flops import StepFlops, step_flops
from cinelora import lora, models, objective, seeding
from cinelora.config import LoraConfig, ModelConfig, TrainConfig
from cinelora.shapes import latent_shape, video_tokens
from cinelora.speed.checkpointing import apply_speed_levers
from cinelora.speed.levers import SpeedLevers

GIB = 2**30

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (the sparsity figures halved), TFLOP/s, matched
# against torch.cuda.get_device_name() in order. H100 SXM and H200 share the same SXM5 compute.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0))


@dataclass(frozen=True)
class BenchCase:
    """One measurement: a clip size and a lever setting."""
    name: str
    frames: int
    height: int
    width: int
    levers: SpeedLevers = field(default_factory=SpeedLevers)
    warmup: int = 1
    steps: int = 3


def peak_bf16_tflops(device_name: str) -> float | None:
    """The datasheet dense bf16 peak of a GPU by its name, or None when unknown (then no MFU is reported)."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


def image_tokens(architecture: str) -> int:
    """CLIP tokens per conditioning image of a preset: one per patch plus the class token."""
    encoder = models.PRESETS[architecture].image_encoder
    return (encoder["image_size"] // encoder["patch_size"]) ** 2 + 1


def cached_inputs(architecture: str, frames: int, height: int, width: int, device: torch.device,
                  dtype: torch.dtype, seed: int = 0) -> dict:
    """Random stand-ins of what the training loop caches for one clip, at the shapes and dtype it uses:
    latents [1, 16, T', H/8, W/8], condition [1, 20, ...] (mask on the first latent frame), UMT5 text
    embeddings [1, 512, text_dim], CLIP image tokens [1, N_img, image_dim]."""
    config = models.transformer_config(architecture)
    t, h, w = latent_shape(frames, height, width)
    g = seeding.generator(seed, "noise", 0)
    mask = torch.zeros(1, 4, t, h, w)
    mask[:, :, 0] = 1.0
    cpu = {
        "latents": torch.randn(1, 16, t, h, w, generator=g),
        "condition": torch.cat([mask, torch.randn(1, 16, t, h, w, generator=g)], dim=1),
        "text": torch.randn(1, 512, config["text_dim"], generator=g),
        "image": torch.randn(1, image_tokens(architecture), config["image_dim"], generator=g),
    }
    return {k: v.to(device, dtype) for k, v in cpu.items()}


def _empty_host_cache() -> None:
    """Free the pinned CPU buffers torch keeps cached after offloaded blocks. The cache serves a request only
    from a buffer of its power-of-two size, so a case of another clip size pins anew, next to the cached
    buffers: in run h100-k a 480p case after a 720p one ended without a Python error, most likely killed for
    host memory."""
    release = getattr(torch.accelerator, "empty_host_cache", None) or torch._C._host_emptyCache  # older torch: 2.11
    release()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _case_flops(architecture: str, case: BenchCase, lora_cfg: LoraConfig) -> StepFlops:
    lev = case.levers
    return step_flops(models.transformer_config(architecture), frames=case.frames, height=case.height,
                      width=case.width, image_tokens=image_tokens(architecture), rank=lora_cfg.rank,
                      targets=lora_cfg.targets, checkpointing=lev.checkpointing,
                      keep_attention_blocks=lev.keep_attention_blocks,
                      uncheckpointed_blocks=lev.uncheckpointed_blocks, keep_ffn_blocks=lev.keep_ffn_blocks)


class StepBench:
    """The true-size (or preset-size) transformer with LoRA, ready to time cases on one device."""

    def __init__(self, architecture: str, device: torch.device, lora_cfg: LoraConfig | None = None,
                 train_cfg: TrainConfig | None = None, seed: int = 0):
        self.architecture, self.device, self.seed = architecture, device, seed
        self.lora_cfg, self.train_cfg = lora_cfg or LoraConfig(), train_cfg or TrainConfig()
        on_gpu = device.type == "cuda"
        self.dtype = torch.bfloat16 if on_gpu else torch.float32
        # as the training loop: bf16 autocast on the GPU, fp32 on the CPU
        self.accelerator = Accelerator(mixed_precision="bf16" if on_gpu else "no")
        _sync(device)
        t0 = time.perf_counter()
        self.transformer = models.build_transformer(architecture, self.dtype, device, seed)
        _sync(device)
        self.build_seconds = time.perf_counter() - t0
        seeding.seed_everything(seed)  # LoRA A is drawn from the global generators: the same LoRA in every run
        lora.attach_lora(self.transformer, self.lora_cfg)
        self.transformer.train()
        self.initial_lora = lora.lora_state_dict(self.transformer)
        self.compiled = self.fp8 = False

    def _step(self, optimizer: torch.optim.Optimizer, inputs: dict, index: int) -> tuple[float, float]:
        """One micro-step; returns its loss and the LoRA gradient norm before clipping."""
        tc = self.train_cfg
        sigmas, noise = objective.draw_noise(self.seed, "noise", index, inputs["latents"], ModelConfig().flow_shift)
        with self.accelerator.autocast():
            # the training loop's objective without perceptual term or attack: the flow-matching loss
            loss = objective.objective(self.transformer, None, inputs, sigmas, noise, None, 0.0)[0]
            self.accelerator.backward(loss)
        grad_norm = self.accelerator.clip_grad_norm_(lora.lora_parameters(self.transformer), tc.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), float(grad_norm)

    def run(self, case: BenchCase) -> dict:
        """Time one case; returns its figures (an `oom` or `error` entry instead when it failed)."""
        if self.compiled and not case.levers.compile_blocks:
            raise ValueError(f"case {case.name}: the blocks are already compiled; run compiled cases last")
        if self.fp8 and not case.levers.fp8_base:
            raise ValueError(f"case {case.name}: the base linears are already fp8; run fp8 cases last")
        apply_speed_levers(self.transformer, case.levers)
        self.compiled = self.compiled or case.levers.compile_blocks
        self.fp8 = self.fp8 or case.levers.fp8_base
        lora.load_lora_state_dict(self.transformer, self.initial_lora)
        tc = self.train_cfg
        optimizer = torch.optim.AdamW(lora.lora_parameters(self.transformer), lr=tc.lr, betas=tuple(tc.betas),
                                      weight_decay=tc.weight_decay)
        inputs = cached_inputs(self.architecture, case.frames, case.height, case.width, self.device, self.dtype,
                               self.seed)
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        result: dict = {}
        times, firsts = [], []
        try:
            for index in range(case.warmup + case.steps):
                _sync(self.device)
                t0 = time.perf_counter()
                firsts.append(self._step(optimizer, inputs, index))
                _sync(self.device)
                if index >= case.warmup:
                    times.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError as err:
            result = {"oom": 1.0, "message": str(err).splitlines()[0]}
        except (RuntimeError, AssertionError) as err:  # e.g. no attention kernel for these shapes (FA4 asserts):
            # recorded, the next case runs
            result = {"error": 1.0, "message": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
        if on_gpu:
            result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(self.device) / GIB
            result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(self.device) / GIB
        optimizer.zero_grad(set_to_none=True)
        del optimizer, inputs
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
            _empty_host_cache()
        if "oom" in result or "error" in result:
            return result
        flops = _case_flops(self.architecture, case, self.lora_cfg)
        median = statistics.median(times)
        tokens = video_tokens(models.transformer_config(self.architecture), case.frames, case.height, case.width)
        result.update({
            "s_per_step_median": median, "s_per_step_min": min(times), "s_per_step_max": max(times),
            "steps_timed": float(len(times)), "tokens_per_s": tokens / median, "loss_first_step": firsts[0][0],
            "grad_norm_first_step": firsts[0][1],
            "model_flop_per_step": float(flops.model), "hardware_flop_per_step": float(flops.hardware),
        })
        peak = peak_bf16_tflops(torch.cuda.get_device_name(self.device)) if on_gpu else None
        if peak:
            result["mfu"] = flops.model / (median * peak * 1e12)
            result["hfu"] = flops.hardware / (median * peak * 1e12)
        return result


def native_sdpa_kernel(device: torch.device) -> str:
    """The kernel torch SDPA picks by itself (diffusers' "native" backend) for bf16 training-shaped inputs."""
    q = torch.randn(1, 40, 1024, 128, device=device, dtype=torch.bfloat16, requires_grad=True)
    return torch.nn.attention.SDPBackend(torch._fused_sdp_choice(q, q, q)).name


def matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 matrix-product rate (TFLOP/s) on random data: the achievable ceiling next to the datasheet's."""
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, generator=g, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    end.synchronize()
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


__all__ = ["BenchCase", "StepBench", "cached_inputs", "image_tokens", "matmul_tflops", "native_sdpa_kernel",
           "peak_bf16_tflops",
           "PEAK_BF16_TFLOPS"]
