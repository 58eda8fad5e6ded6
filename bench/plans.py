"""Named benchmark plans and the tidy files a run writes (columns in results/SCHEMA.md, section `bench`).

A run of plan P with label L writes, atomically and again after every case (a killed run keeps what it
measured): `<out>/steps_<L>.csv`, `<out>/configuration_<L>.csv` and `<out>/attention_<L>.csv` (when
those stages ran) and `<out>/provenance_<L>.json`. Stages run in this order: configuration, attention
kernels, then the step cases in plan order.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import attention
from bench.configuration import configuration_time
from bench.step_bench import BenchCase, StepBench, matmul_tflops, native_sdpa_kernel, peak_bf16_tflops
from cinelora import provenance
from cinelora.atomic import atomic_write_text
from cinelora.models import transformer_config
from cinelora.shapes import video_tokens
from cinelora.speed.levers import FA4, SpeedLevers

STEP_COLUMNS = ("device", "architecture", "case", "frames", "height", "width", "attention_backend",
                "checkpointing", "keep_attention_blocks", "offload_blocks", "uncheckpointed_blocks", "keep_ffn_blocks",
                "compile_blocks", "fp8_base", "metric", "value")
CONFIGURATION_COLUMNS = ("device", "architecture", "frames", "height", "width", "stage", "seconds")
CONFIGURATION, ATTENTION = "configuration", "attention"  # case names that select these stages

P480, P720 = (81, 480, 832), (81, 720, 1280)
CUDNN = "_native_cudnn"


class DeviceUnavailableError(RuntimeError):
    """The plan needs a device this machine does not have."""


@dataclass(frozen=True)
class Plan:
    architecture: str
    cases: tuple[BenchCase, ...]
    configuration: tuple[int, int, int]  # frames, height, width of the clip the configuration stage caches
    device: str  # "cuda" or "cpu"
    attention_sizes: tuple[tuple[int, int, int], ...] = ()  # clip sizes of the attention-kernel stage (CUDA)


def _case(name: str, size: tuple[int, int, int], steps: int, **levers) -> BenchCase:
    return BenchCase(name, *size, levers=SpeedLevers(**levers), steps=steps)


PLANS: dict[str, Plan] = {
    # True size on one GPU. baseline_* = the plain diffusers + peft + gradient-checkpointing step; every other
    # case changes the levers named in it. Compiled cases run after the others, fp8 ones last (neither is undone).
    "full": Plan("wan2.1-i2v-14b", (
        _case("baseline_480p", P480, 3),
        _case("cudnn_480p", P480, 3, attention_backend=CUDNN),
        _case("keepattn_480p", P480, 3, keep_attention_blocks=40),
        _case("cudnn_keepattn_480p", P480, 3, attention_backend=CUDNN, keep_attention_blocks=40),
        _case("cudnn_offload_480p", P480, 3, attention_backend=CUDNN, offload_blocks=40),
        _case("baseline_720p", P720, 2),
        _case("cudnn_720p", P720, 2, attention_backend=CUDNN),
        _case("cudnn_offload_720p", P720, 2, attention_backend=CUDNN, offload_blocks=40),
        _case("cudnn_keepattn8_offload32_720p", P720, 2, attention_backend=CUDNN, keep_attention_blocks=8,
              offload_blocks=32),
        _case("compile_480p", P480, 3, compile_blocks=True),
        _case("cudnn_compile_480p", P480, 3, attention_backend=CUDNN, compile_blocks=True),
        _case("compile_keepattn_480p", P480, 3, compile_blocks=True, keep_attention_blocks=40),
        _case("compile_offload_720p", P720, 2, compile_blocks=True, offload_blocks=40),
        _case("compile_keepattn8_offload32_720p", P720, 2, compile_blocks=True, keep_attention_blocks=8,
              offload_blocks=32),
        _case("compile_720p", P720, 2, compile_blocks=True),
        _case("compile_keepattn16_offload24_720p", P720, 2, compile_blocks=True, keep_attention_blocks=16,
              offload_blocks=24),
        # offloaded blocks that keep their attention outputs too (in CPU memory): no attention recompute at all
        _case("compile_keepattn40_offload24_720p", P720, 2, compile_blocks=True, keep_attention_blocks=40,
              offload_blocks=24),
        _case("compile_keepattn40_offload40_720p", P720, 2, compile_blocks=True, keep_attention_blocks=40,
              offload_blocks=40),
        _case("compile_keepattn_720p", P720, 2, compile_blocks=True, keep_attention_blocks=40),  # > 80 GB
        # FlashAttention-4 as torch's flash kernel (needs the flash-attn-4 package)
        _case("compile_keepattn_fa4_480p", P480, 3, attention_backend=FA4, compile_blocks=True,
              keep_attention_blocks=40),
        _case("compile_keepattn40_offload40_fa4_480p", P480, 3, attention_backend=FA4, compile_blocks=True,
              keep_attention_blocks=40, offload_blocks=40),
        _case("compile_keepattn40_offload24_fa4_720p", P720, 2, attention_backend=FA4, compile_blocks=True,
              keep_attention_blocks=40, offload_blocks=24),
        _case("compile_keepattn40_offload40_fa4_720p", P720, 2, attention_backend=FA4, compile_blocks=True,
              keep_attention_blocks=40, offload_blocks=40),
        # the first j blocks not checkpointed (every activation kept, no recompute); the others offloaded
        _case("compile_nockpt4_keepattn40_offload36_fa4_480p", P480, 3, attention_backend=FA4, compile_blocks=True,
              uncheckpointed_blocks=4, keep_attention_blocks=40, offload_blocks=36),
        _case("compile_nockpt6_keepattn40_offload34_fa4_480p", P480, 3, attention_backend=FA4, compile_blocks=True,
              uncheckpointed_blocks=6, keep_attention_blocks=40, offload_blocks=34),
        _case("compile_nockpt8_keepattn40_offload32_fa4_480p", P480, 3, attention_backend=FA4, compile_blocks=True,
              uncheckpointed_blocks=8, keep_attention_blocks=40, offload_blocks=32),
        _case("compile_nockpt2_keepattn40_offload38_fa4_720p", P720, 2, attention_backend=FA4, compile_blocks=True,
              uncheckpointed_blocks=2, keep_attention_blocks=40, offload_blocks=38),
        _case("compile_nockpt4_keepattn40_offload36_fa4_720p", P720, 2, attention_backend=FA4, compile_blocks=True,
              uncheckpointed_blocks=4, keep_attention_blocks=40, offload_blocks=36),
        # the first n blocks keep their FFN pre-activation (on the GPU): the recompute skips the FFN's products
        # (their FFN stays a graph break of the compiled block, so after the other compiled cases but fp8's)
        *(_case(f"compile_keepffn{n}_keepattn40_offload40_fa4_{p}p", size, steps, attention_backend=FA4,
                compile_blocks=True, keep_ffn_blocks=n, keep_attention_blocks=40, offload_blocks=40)
          for p, size, steps, counts in ((480, P480, 3, (32, 40)), (720, P720, 2, (12, 32, 36, 40)))
          for n in counts),
        # fp8 frozen linears (irreversible, so last)
        _case("compile_keepattn_fp8_480p", P480, 3, compile_blocks=True, keep_attention_blocks=40, fp8_base=True),
        _case("compile_keepattn40_offload24_fp8_720p", P720, 2, compile_blocks=True, keep_attention_blocks=40,
              offload_blocks=24, fp8_base=True),
    ), configuration=P720, device="cuda", attention_sizes=(P480, P720)),
    # The same code paths at the smoke preset on the CPU, in seconds (tests, `make bench` without a GPU).
    "smoke": Plan("smoke", (
        _case("baseline", (5, 32, 32), 2),
        _case("math_attention", (5, 32, 32), 2, attention_backend="_native_math"),
        _case("no_checkpointing", (5, 32, 32), 2, checkpointing="none"),
        _case("keepattn1_offload1", (5, 32, 32), 2, keep_attention_blocks=1, offload_blocks=1),
        _case("nockpt1_keepattn2_offload1", (5, 32, 32), 2, uncheckpointed_blocks=1, keep_attention_blocks=2,
              offload_blocks=1),
        _case("keepffn2_keepattn2_offload1", (5, 32, 32), 2, keep_ffn_blocks=2, keep_attention_blocks=2,
              offload_blocks=1),
        _case("keepattn2_offload1_fp8", (5, 32, 32), 2, keep_attention_blocks=2, offload_blocks=1, fp8_base=True),
    ), configuration=(5, 32, 32), device="cpu"),
}


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    def fmt(value):
        return "%.6f" % value if isinstance(value, float) else str(value)

    body = sorted([fmt(row[c]) for c in columns] for row in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(body)
    atomic_write_text(path, buffer.getvalue())


def step_rows(device: str, architecture: str, case: BenchCase, figures: dict) -> list[dict]:
    """Tidy rows of one case's numeric figures (its error message goes to provenance, not here)."""
    lev = case.levers
    key = {"device": device, "architecture": architecture, "case": case.name, "frames": case.frames,
           "height": case.height, "width": case.width, "attention_backend": lev.attention_backend,
           "checkpointing": lev.checkpointing, "keep_attention_blocks": lev.keep_attention_blocks,
           "offload_blocks": lev.offload_blocks, "uncheckpointed_blocks": lev.uncheckpointed_blocks,
           "keep_ffn_blocks": lev.keep_ffn_blocks, "compile_blocks": int(lev.compile_blocks),
           "fp8_base": int(lev.fp8_base)}
    return [dict(key, metric=m, value=float(v)) for m, v in figures.items() if m != "message"]


def run_plan(name: str, out: Path, label: str, only: list[str] | None = None,
             max_seconds: float | None = None) -> dict:
    """Run plan `name` (the cases named in `only`, "configuration" among them, or all) and write its files.

    Cases that would start after `max_seconds` of wall time are skipped and listed in provenance.
    """
    plan = PLANS[name]
    known = [c.name for c in plan.cases] + [CONFIGURATION] + ([ATTENTION] if plan.attention_sizes else [])
    wanted = list(known) if only is None else only
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"plan {name!r} has no cases {unknown}; its cases: {known}")
    if plan.device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"plan {name!r} needs a CUDA GPU (none visible); `--plan smoke` runs on the CPU")
    device = torch.device(plan.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    record = {
        "plan": name, "label": label, "architecture": plan.architecture, "only": only, "max_seconds": max_seconds,
        "git": {"sha": provenance.git_sha(), "dirty": provenance.git_dirty()},
        "versions": provenance.package_versions(),
        "device": provenance.device_info(), "determinism": provenance.determinism_flags(),
        "peak_bf16_tflops_datasheet": peak_bf16_tflops(device_name) if device.type == "cuda" else None,
        "cases": {}, "skipped": [], "wall_seconds": {},
    }

    def save() -> None:
        record["wall_seconds"]["total"] = round(time.perf_counter() - t_start, 3)
        atomic_write_text(out / f"provenance_{label}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")

    if device.type == "cuda":
        record["matmul_bf16_tflops_measured"] = round(matmul_tflops(device), 1)
        record["native_sdpa_kernel"] = native_sdpa_kernel(device)
    # configuration first: it needs every component in memory, and compiled blocks may outlive the step bench
    if CONFIGURATION in wanted:
        if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
            record["skipped"].append(CONFIGURATION)
        else:
            frames, height, width = plan.configuration
            stages = configuration_time(plan.architecture, frames, height, width, device)
            _write_csv(out / f"configuration_{label}.csv", CONFIGURATION_COLUMNS,
                       [{"device": device_name, "architecture": plan.architecture, "frames": frames,
                         "height": height, "width": width, "stage": s, "seconds": float(v)}
                        for s, v in stages.items()])
            print("configuration: " + ", ".join(f"{k}={v:.3f}s" for k, v in stages.items()), flush=True)
            save()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if ATTENTION in wanted:
        config = transformer_config(plan.architecture)
        rows, refused = [], {}
        for size in plan.attention_sizes:
            more, why = attention.attention_rates(device, video_tokens(config, *size), config["num_attention_heads"],
                                                  config["attention_head_dim"])
            rows += more
            refused.update({f"{k}@{size[1]}p": v for k, v in why.items()})
        _write_csv(out / f"attention_{label}.csv", attention.COLUMNS, rows)
        record["attention_refused"] = refused
        save()
        for row in rows:
            print(f"attention {row['kernel']}/{row['layout']} N={row['tokens']} {row['pass']}: "
                  f"{row['seconds']:.4f} s, {row['tflops']:.0f} TFLOP/s", flush=True)
    step_cases = [c for c in plan.cases if c.name in wanted]
    rows: list[dict] = []
    if step_cases:
        bench = StepBench(plan.architecture, device)
        record["wall_seconds"]["build_transformer"] = round(bench.build_seconds, 3)
        config = transformer_config(plan.architecture)
        for case in step_cases:
            if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
                record["skipped"].append(case.name)
                continue
            t0 = time.perf_counter()
            figures = bench.run(case)
            record["cases"][case.name] = {
                "levers": case.levers.as_dict(), "frames": case.frames, "height": case.height, "width": case.width,
                "video_tokens": video_tokens(config, case.frames, case.height, case.width),
                "warmup": case.warmup, "steps": case.steps, "wall_seconds": round(time.perf_counter() - t0, 3),
                **({"message": figures["message"]} if "message" in figures else {})}
            rows += step_rows(device_name, plan.architecture, case, figures)
            _write_csv(out / f"steps_{label}.csv", STEP_COLUMNS, rows)
            save()
            print(f"{case.name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in figures.items()), flush=True)
    save()
    return record


__all__ = ["PLANS", "Plan", "DeviceUnavailableError", "run_plan", "step_rows", "STEP_COLUMNS",
           "CONFIGURATION_COLUMNS", "CONFIGURATION", "ATTENTION"]
