"""`docs/performance.md`: what each speed lever of the LoRA step does, what it measured, and why the hardware
presets hold their values; a pure function of `results/bench/` and `configs/hardware/*.yaml`.

The prose (a lever's mechanism, the reason behind a preset) lives here, once. Every figure in it is read from
the bench files: a case is cited by its run label and case name, so a rerun changes the figures, and citing a
withdrawn or missing case stops the build. `python -m cinelora report performance` calls `main`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from cinelora.atomic import atomic_write_text
from cinelora.config import CONFIGS_ROOT, DEFAULT_HARDWARE
from cinelora.report import table4
from cinelora.speed.levers import SpeedLevers

HARDWARE_ROOT = CONFIGS_ROOT / "hardware"
DEFAULT_LEVERS = SpeedLevers().as_dict()
NONE = "—"
# the cases the text cites most: the levers of the h100-80gb preset at 720p, and those of h200-141gb
PRESET_720 = "compile_keepattn40_offload40_fa4_720p"
FFN_720 = "compile_keepffn40_keepattn40_offload40_fa4_720p"
CASE_COLUMNS = ("Run", "GPU", "Case", "Clip", "s/step", "× baseline", "Peak alloc. GiB", "Peak reserved GiB", "MFU",
                "Grad norm")


def seconds(value: float) -> str:
    return f"{value:.2f}"


def gib(value: float) -> str:
    return f"{value:.1f}"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def times(ratio: float) -> str:
    return f"{ratio:.2f}×"


def _gpu(device: str) -> str:
    return device.removeprefix("NVIDIA ")


@dataclass(frozen=True)
class Case:
    """One case of one bench run: its levers (a lever column its file predates reads as the default), clip
    (frames, height, width), figures ({metric: value}) and the s/step of its run's baseline at that clip."""

    label: str
    device: str
    name: str
    clip: tuple[int, int, int]
    levers: dict
    figures: dict
    baseline: float | None

    @property
    def failed(self) -> str | None:
        return "OOM" if self.figures.get("oom") else "error" if self.figures.get("error") else None

    def _get(self, metric: str, fmt) -> str:
        return fmt(self.figures[metric]) if metric in self.figures and not self.failed else NONE

    @property
    def s(self) -> str:
        return self.failed or self._get("s_per_step_median", seconds)

    @property
    def s_min(self) -> str:
        return self._get("s_per_step_min", seconds)

    @property
    def x(self) -> str:
        step = self.figures.get("s_per_step_median")
        return times(self.baseline / step) if self.baseline and step and not self.failed else NONE

    @property
    def alloc(self) -> str:
        return gib(self.figures["peak_allocated_gib"]) if "peak_allocated_gib" in self.figures else NONE

    @property
    def reserved(self) -> str:
        return gib(self.figures["peak_reserved_gib"]) if "peak_reserved_gib" in self.figures else NONE

    @property
    def mfu(self) -> str:
        return self._get("mfu", percent)

    @property
    def grad(self) -> str:
        return self._get("grad_norm_first_step", lambda v: f"{v:.6f}")

    @property
    def clip_text(self) -> str:
        return "×".join(str(n) for n in self.clip)

    def cells(self) -> tuple[str, ...]:
        return (self.label, _gpu(self.device), f"`{self.name}`", self.clip_text, self.s, self.x, self.alloc,
                self.reserved, self.mfu, self.grad)


def _lever(row: dict, name: str):
    default = DEFAULT_LEVERS[name]
    value = row.get(name)
    if value is None:
        return default
    return value == "1" if isinstance(default, bool) else int(value) if isinstance(default, int) else value


@dataclass(frozen=True)
class Bench:
    """Every case of `results/bench/steps_*.csv` by (label, case), the withdrawn ones with their reason, the
    standing ones (Table 4's), each run's provenance, and the attention and loss-term rows (with their label)."""

    cases: dict[tuple[str, str], Case]
    withdrawn: dict[tuple[str, str], str]
    standing: frozenset[tuple[str, str]]
    provenance: dict[str, dict]
    attention: tuple[dict, ...]
    terms: tuple[dict, ...]

    def __call__(self, label: str, case: str) -> Case:
        """The case cited as evidence; a withdrawn or unknown one is an error, never a silent gap."""
        if (label, case) in self.withdrawn:
            raise ValueError(f"docs/performance.md cites {label} {case}, withdrawn: {self.withdrawn[label, case]}")
        if (label, case) not in self.cases:
            raise ValueError(f"docs/performance.md cites {label} {case}, which no results/bench/steps_*.csv holds")
        return self.cases[label, case]


def _run_cases(path: Path, rows: list[dict]) -> list[Case]:
    """The cases of one steps file (one run), each with the s/step of the run's baseline at its clip."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["case"], []).append(row)
    cases = [Case(table4._label(path), r[0]["device"], name, (int(r[0]["frames"]), int(r[0]["height"]),
                                                             int(r[0]["width"])),
                  {lever: _lever(r[0], lever) for lever in DEFAULT_LEVERS},
                  {row["metric"]: float(row["value"]) for row in r}, None) for name, r in grouped.items()]
    baselines = {(c.device, c.clip): c.figures["s_per_step_median"] for c in cases
                 if c.name.startswith("baseline") and "s_per_step_median" in c.figures}
    return [replace(c, baseline=baselines.get((c.device, c.clip))) for c in cases]


def read_bench(results_root: Path) -> Bench:
    """Everything the doc reads under `results_root/bench/`, through Table 4's readers."""
    inputs = table4.read_compute(results_root)
    standing = table4.current_bench_steps(inputs).steps  # also checks withdrawn.csv
    cases = {(c.label, c.name): c for path, rows in inputs.bench_steps.items() for c in _run_cases(path, rows)}
    bench = Path(results_root) / "bench"
    provenance = {label: json.loads((bench / f"provenance_{label}.json").read_text())
                  for label in sorted({label for label, _ in cases}) if (bench / f"provenance_{label}.json").is_file()}

    def labelled(pattern: str) -> tuple[dict, ...]:
        return tuple({**row, "label": table4._label(path)} for path in sorted(bench.glob(pattern))
                     for row in table4._read_csv(path))

    return Bench(cases, {(r["label"], r["case"]): r["reason"] for r in inputs.withdrawn},
                 frozenset((table4._label(p), r["case"]) for p, rows in standing.items() for r in rows),
                 provenance, labelled("attention_*.csv"), labelled("terms_*.csv"))


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]


def _cases_table(cases: list[Case]) -> list[str]:
    return _table(CASE_COLUMNS, [c.cells() for c in cases])


def _section(title: str, paragraphs: list[str], evidence: list[Case]) -> list[str]:
    return [f"## {title}", "", *(line for p in paragraphs for line in (p, "")), *_cases_table(evidence)]


def _preset_line(presets: dict[str, dict], lever: str) -> str:
    """What each preset sets `lever` to, read from the preset files ("(default)" where a preset leaves it)."""
    return "Presets: " + "; ".join(
        f"`{name}` {_value(presets[name][lever])}" if lever in presets[name] else
        f"`{name}` {_value(DEFAULT_LEVERS[lever])} (default)" for name in sorted(presets)) + "."


def _sha(b: Bench, label: str) -> str:
    return (b.provenance.get(label, {}).get("git", {}).get("sha") or "unknown")[:7]


def _intro(b: Bench) -> list[str]:
    shown = sorted({c.clip for c in b.cases.values()})
    tokens = {}
    for label, prov in b.provenance.items():
        for case in prov.get("cases", {}).values():
            if "video_tokens" in case:
                tokens[case["frames"], case["height"], case["width"]] = case["video_tokens"]
    clips = ", ".join(f"{'×'.join(map(str, clip))} ({tokens[clip]:,} video tokens)" if clip in tokens
                      else "×".join(map(str, clip)) for clip in shown)
    peaks = sorted({(_gpu(p["device"]["cuda_device"]), p["peak_bf16_tflops_datasheet"]) for p in b.provenance.values()
                    if p.get("device", {}).get("cuda_device") and "peak_bf16_tflops_datasheet" in p})
    return [
        "# Performance of the LoRA step",
        "",
        "Generated by `make performance` (`python -m cinelora report performance`, "
        "`cinelora/report/performance.py`) from `results/bench/` and `configs/hardware/*.yaml`: do not edit. "
        "The project's speed and memory figures live here and in the paper's Table 4, both made from those "
        "files; docstrings, config comments and the README point here instead of quoting them.",
        "",
        "`python -m bench --plan full` (`make bench`) times one LoRA training step of the true-size Wan2.1 "
        "I2V-14B transformer with random bf16 weights (speed and memory do not depend on the values): the LoRA "
        "of the experiment config, one clip, the training loop's step (noise draw, flow-matching loss, "
        "backward, gradient clipping, AdamW) on random inputs of the cached shapes. Each run is one GPU call "
        "with a label; each case is one setting of the speed levers (`SpeedLevers`, "
        "`cinelora/speed/levers.py`; the case name spells it out, the lever columns of `steps_<label>.csv` "
        f"hold it) at one clip size, frames×height×width: {clips}. `baseline_*` is the plain diffusers + "
        "peft + gradient-checkpointing step with torch's default attention, the levers' defaults. Columns "
        "are defined in `results/SCHEMA.md`:",
        "",
        "- **s/step**: median wall time of the timed steps, after an untimed warm-up step;",
        "- **× baseline**: the `baseline_*` case of the same run and clip over this case "
        f"({NONE} where that run has no baseline at that clip); compare other rows only on the same GPU;",
        "- **Peak alloc. / reserved**: torch's `max_memory_allocated` / `max_memory_reserved`, weights "
        "included; for a case that ran out of memory, the peaks when it failed;",
        "- **MFU**: model FLOPs of the step / (s/step × the datasheet dense bf16 peak: "
        + ", ".join(f"{gpu} {peak:g} TFLOP/s" for gpu, peak in peaks) + ");",
        "- **Grad norm**: the first step's LoRA gradient norm: the cases of a run start from the same LoRA "
        "and noise, so equal values show that a lever changed the speed, not the computation (bf16 rounding "
        "aside).",
        "",
    ]


def _headline(b: Bench) -> list[str]:
    """Per GPU, the fastest standing case at the largest clip it measured."""
    standing = [b.cases[k] for k in sorted(b.standing) if not b.cases[k].failed
                and "s_per_step_median" in b.cases[k].figures]
    best = {}
    for c in standing:
        key = (c.clip[1] * c.clip[2], -c.figures["s_per_step_median"])
        if c.device not in best or key > best[c.device][0]:
            best[c.device] = (key, c)
    return ["## Fastest step", "", "Per GPU, the fastest standing case (Table 4's rows) at the largest clip "
            "that GPU measured:", "", *_cases_table([best[d][1] for d in sorted(best)])]


def _attention(b: Bench) -> list[str]:
    base, cudnn = b("h100-a", "baseline_480p"), b("h100-a", "cudnn_480p")
    torch_choice, fa4 = b("h100-i", "compile_keepattn_480p"), b("h100-i", "compile_keepattn_fa4_480p")
    native720, fa4_720 = b("h100-k", "compile_keepattn40_offload40_720p"), b("h100-j", PRESET_720)
    picks: dict[str, list[str]] = {}
    for label, prov in sorted(b.provenance.items()):
        picks.setdefault(prov.get("native_sdpa_kernel", "not recorded"), []).append(label)
    picked = ("`" + next(iter(picks)) + "` in every run" if len(picks) == 1 else
              "; ".join(f"`{k}` in {', '.join(v)}" for k, v in sorted(picks.items())))
    rates: dict[tuple, dict[str, float]] = {}
    for r in b.attention:
        rates.setdefault((r["label"], r["device"], int(r["tokens"]), r["kernel"], r["layout"]), {})[r["pass"]] = \
            float(r["tflops"])
    kernel_rows = [(label, _gpu(device), f"`{kernel}`", f"`{layout}`", f"{tokens:,}",
                    *(f"{p[k]:.0f}" if k in p else NONE for k in ("forward", "forward_backward")))
                   for (label, device, tokens, kernel, layout), p in sorted(rates.items())]
    files = ", ".join(f"`attention_{label}.csv`" for label in sorted({r["label"] for r in b.attention}))
    fastest = sorted({max(((p.get("forward_backward", 0), key[3]) for key, p in rates.items()
                           if key[:3] == group))[1] for group in {key[:3] for key in rates}})
    fa4_note = ("" if any(r["kernel"] == "fa4" for r in b.attention) else
                " No committed attention file has an `fa4` row yet (the bench's attention stage adds one where "
                "flash-attn-4 is installed); an earlier one-off probe of FlashAttention-4's kernel alone was not "
                "kept in `results/bench/`, so its kernel rate is not quoted here.")
    return _section("Attention backend and FlashAttention-4 (`attention_backend`)", [
        "`attention_backend` picks a backend of diffusers' attention dispatcher. `native` leaves the choice to "
        f"torch SDPA, which picked {picked} (`native_sdpa_kernel` in provenance). On the self-attention shape, "
        f"the kernel with the highest forward+backward rate was {' / '.join(f'`{k}`' for k in fastest)} "
        f"({files}; model TFLOP/s, the table right below).{fa4_note}",
        "\n".join(_table(("Run", "GPU", "Kernel", "Layout", "Tokens", "Forward TFLOP/s", "Forward+backward TFLOP/s"),
                         kernel_rows)[:-1]),
        "`_native_cudnn` forces cuDNN and first copies q, k and v into [B, H, S, D]: "
        f"{cudnn.s} s, {cudnn.x} the baseline of run {cudnn.label} ({base.s} s), so it is not used.",
        "`fa4` is diffusers' `_native_flash` with FlashAttention-4 swapped in as torch's flash kernel "
        "(`cinelora/speed/fa4.py`). It needs the flash-attn-4 package of `requirements-gpu.txt`, which `make "
        "test` does not install; a config that asks for it without the package stops before any work. With "
        f"compiled blocks and kept attention at {fa4.clip_text} it takes {fa4.s} s against {torch_choice.s} s "
        f"with torch's choice, {fa4.x} against {torch_choice.x} the baseline of run {fa4.label}; at "
        f"{fa4_720.clip_text} with every block offloaded, {fa4_720.s} s (run {fa4_720.label}) against "
        f"{native720.s} s with torch's choice (run {native720.label}; two runs, so no same-run ratio): the "
        "fastest attention measured. diffusers' `*_hub` kernels need a download at run time and are not offered.",
    ], [base, cudnn, b("h100-i", "baseline_480p"), torch_choice, fa4, native720, fa4_720])


def _keep_attention(b: Bench) -> list[str]:
    base, kept = b("h100-g", "baseline_480p"), b("h100-g", "compile_keepattn_480p")
    compiled720, kept720 = b("h100-e", "compile_720p"), b("h100-g", "compile_keepattn40_offload24_720p")
    extra = kept.figures["peak_allocated_gib"] - base.figures["peak_allocated_gib"]
    return _section("Kept attention (`keep_attention_blocks`)", [
        "The first k blocks also keep their self-attention kernel outputs (the output and its log-sum-exp, "
        "memory linear in the tokens), so their recompute in the backward skips the step's dearest op, the "
        "attention that is quadratic in the tokens. The outputs are recorded and replayed by `_AttentionTape` "
        "(`cinelora/speed/checkpointing.py`), not by torch's selective checkpointing: that kept the kernel's "
        "output buffer itself, which compiled blocks reuse, and gave wrong gradients (the withdrawn cases below).",
        f"With compiled blocks, all {kept.levers['keep_attention_blocks']} blocks keeping attention at "
        f"{kept.clip_text}: {kept.s} s, {kept.x} the "
        f"baseline of run {kept.label}, MFU {kept.mfu}, for {gib(extra)} GiB more peak memory than the "
        f"baseline. At {kept720.clip_text} with compiled blocks: {kept720.s} s with attention kept in "
        f"{kept720.levers['keep_attention_blocks']} blocks ({kept720.levers['offload_blocks']} of them "
        f"offloaded; run {kept720.label}) against {compiled720.s} s without (run {compiled720.label}).",
    ], [base, kept, compiled720, kept720])


def _uncheckpointed(b: Bench) -> list[str]:
    kept, offloaded = b("h100-l", "compile_keepattn_fa4_480p"), b("h100-l", "compile_keepattn40_offload40_fa4_480p")
    four, eight, six = (b("h100-l", "compile_nockpt4_keepattn40_offload36_fa4_480p"),
                        b("h100-l", "compile_nockpt8_keepattn40_offload32_fa4_480p"),
                        b("h100-m", "compile_nockpt6_keepattn40_offload34_fa4_480p"))
    h200_none, h200_four = b("h200-c", PRESET_720), b("h200-c", "compile_nockpt4_keepattn40_offload36_fa4_720p")
    h100_none, h100_two = b("h100-j", PRESET_720), b("h100-m", "compile_nockpt2_keepattn40_offload38_fa4_720p")
    ffn_none, ffn_all = b("h200-f", PRESET_720), b("h200-f", FFN_720)

    def n(c: Case) -> int:
        return c.levers["uncheckpointed_blocks"]

    return _section("Uncheckpointed blocks (`uncheckpointed_blocks`)", [
        "The first j blocks are not checkpointed: they keep every activation and skip their recompute, in GPU "
        "memory that offloading the other blocks frees (`checkpointing: none` does this for every block; no "
        "bench case runs it at true size).",
        f"At {four.clip_text} on the H100 with FA4, compiled blocks and kept attention (run {four.label}): "
        f"{n(four)} blocks {four.s} s at {four.alloc} GiB, {four.x} the run's baseline, against {offloaded.s} s "
        f"({offloaded.x}) with none uncheckpointed and all offloaded, and {kept.s} s ({kept.x}) with none "
        f"uncheckpointed or offloaded; {n(six)} blocks "
        f"{six.s} s with {six.reserved} GiB reserved (run {six.label}); {n(eight)} blocks ran out of memory. "
        f"At {h200_four.clip_text} on the H200 (run {h200_four.label}): {n(h200_four)} blocks {h200_four.s} s "
        f"at {h200_four.alloc} GiB against {h200_none.s} s at {h200_none.alloc} GiB for none. On the H100, "
        f"{n(h100_two)} blocks took {h100_two.s} s with {h100_two.reserved} GiB reserved (run {h100_two.label}) "
        f"against {h100_none.s} s for none (run {h100_none.label}; two runs).",
        f"So at {h100_two.clip_text}, the `full` profile's clip, the blocks that fit next to the rest on the "
        "H100 did not pay, and on the H200 the same memory buys more "
        f"as kept FFNs (next section): {_saved_per_gib(h200_none, h200_four)} s a step saved per GiB of peak "
        f"memory by uncheckpointed blocks (run {h200_four.label}) against {_saved_per_gib(ffn_none, ffn_all)} s "
        f"by kept FFNs (run {ffn_all.label}). No case combines the two.",
    ], [kept, offloaded, four, eight, six, h100_none, h100_two, h200_none, h200_four])


def _saved_per_gib(reference: Case, case: Case) -> str:
    saved = reference.figures["s_per_step_median"] - case.figures["s_per_step_median"]
    return f"{saved / (case.figures['peak_allocated_gib'] - reference.figures['peak_allocated_gib']):.3f}"


def _most_reserved(b: Bench, device: str) -> str:
    return gib(max(c.figures["peak_reserved_gib"] for c in b.cases.values()
                   if c.device == device and "peak_reserved_gib" in c.figures))


def _keep_ffn(b: Bench) -> list[str]:
    base, none, every = b("h200-f", "baseline_720p"), b("h200-f", PRESET_720), b("h200-f", FFN_720)
    e36, e40 = b("h200-e", "compile_keepffn36_keepattn40_offload40_fa4_720p"), b("h200-e", FFN_720)
    d32 = b("h200-d", "compile_keepffn32_keepattn40_offload40_fa4_720p")
    h100 = b("h100-j", PRESET_720)

    def n(c: Case) -> int:
        return c.levers["keep_ffn_blocks"]

    per_block = (every.figures["peak_allocated_gib"] - none.figures["peak_allocated_gib"]) / n(every)
    return _section("Kept FFN pre-activations (`keep_ffn_blocks`)", [
        "The first n checkpointed blocks keep their FFN pre-activation h = x W1 + b1 on the GPU, so their "
        "recompute skips the FFN's two matrix products (nearly half of a block's linear FLOPs, `bench/flops.py`) "
        "and the FFN's backward runs from h (`_FeedForwardReplay`). It is exact where only attention layers "
        "train, which `check_keep_ffn` checks before the first step; `SpeedLevers` refuses it with `fp8_base` "
        "(a kept FFN backpropagates through the FFN's bf16 weights).",
        f"At {every.clip_text} on the H200 with FA4, compiled blocks, kept attention and every block offloaded "
        f"(run {every.label}, where the plain step takes {base.s} s at {base.alloc} GiB): {n(every)} blocks "
        f"{every.s} s, MFU {every.mfu}, {every.alloc} GiB, {every.x} the baseline, against {none.s} s "
        f"({none.x}, {none.alloc} GiB) for none, with first-step LoRA "
        f"gradient norms {every.grad} and {none.grad}. Run {e40.label}: {n(e40)} blocks {e40.s} s ({e40.x}), "
        f"{n(e36)} blocks {e36.s} s median ({e36.s_min} s its fastest step); run {d32.label}: {n(d32)} blocks "
        f"{d32.s} s with {d32.reserved} GiB reserved.",
        f"Each kept block costs about {per_block:.2f} GiB at this clip (peak allocated of {n(every)} blocks "
        f"over none, run {every.label}), so the setting needs {every.alloc} GiB, far beyond the "
        f"{_most_reserved(b, h100.device)} GiB that any H100 case reserved. A partial setting on the H100 is not "
        "measured.",
    ], [base, none, every, e36, e40, d32])


def _offload(b: Bench) -> list[str]:
    before, after = b("h200-c", PRESET_720), b("h200-f", PRESET_720)
    part, every = b("h100-j", "compile_keepattn40_offload24_fa4_720p"), b("h100-j", PRESET_720)
    kept480, every480 = b("h100-l", "compile_keepattn_fa4_480p"), b("h100-l", "compile_keepattn40_offload40_fa4_480p")
    native_part = b("h100-g", "compile_keepattn40_offload24_720p")
    native_every = b("h100-k", "compile_keepattn40_offload40_720p")

    def m(c: Case) -> int:
        return c.levers["offload_blocks"]

    return _section("Offloaded blocks (`offload_blocks`)", [
        "The last m blocks keep what they keep (their input; their attention outputs too where they are among "
        "the first k) in pinned CPU memory: copied out on a side stream in the forward and back in the "
        "backward, prefetched one block ahead. The CPU queues at most `BLOCKS_IN_FLIGHT` offloaded blocks "
        "ahead of the GPU (`_throttle`, `cinelora/speed/checkpointing.py`): the allocator reuses a tensor an "
        "offload copy reads only once the copy stream has passed it, so a CPU running the whole forward ahead "
        "kept every block's input reserved.",
        f"The throttle, same case at {after.clip_text} on the H200: {before.reserved} GiB reserved for "
        f"{before.alloc} GiB allocated before it (run {before.label}, git {_sha(b, before.label)}), "
        f"{after.reserved} GiB for {after.alloc} GiB with it (run {after.label}, git {_sha(b, after.label)}), "
        f"at {before.s} and {after.s} s. The copies hide behind compute: at {every.clip_text} with FA4 (run "
        f"{every.label}) {m(every)} blocks offloaded take {every.s} s at {every.alloc} GiB against {part.s} s "
        f"at {part.alloc} GiB for {m(part)}; without FA4, {native_every.s} s for {m(native_every)} (run "
        f"{native_every.label}) against {native_part.s} s for {m(native_part)} (run {native_part.label}); at "
        f"{every480.clip_text} (run {every480.label}) {every480.s} s at {every480.alloc} GiB against "
        f"{kept480.s} s at {kept480.alloc} GiB with none.",
        "Offloading every block gives the lowest peak at no cost in speed, leaving the GPU memory to the "
        "clip's activations (and, on the H200, to kept FFNs). The host memory this pins is not recorded in "
        "`results/bench/`; at the `full` profile's clip it is large (torch's pinned-memory cache also rounds "
        "each buffer up to a power of two), so the host needs room for it; the bench frees that cache between "
        "cases (`_empty_host_cache`, `bench/step_bench.py`).",
    ], [kept480, every480, native_part, native_every, part, every, before, after])


def _compile(b: Bench) -> list[str]:
    eager, compiled = b("h100-a", "cudnn_480p"), b("h100-b", "cudnn_compile_480p")
    plain720, compiled720 = b("h100-b", "cudnn_720p"), b("h100-e", "compile_720p")
    eager_off, compiled_off = b("h100-a", "cudnn_offload_720p"), b("h100-c", "compile_offload_720p")
    ratio = eager.figures["s_per_step_median"] / compiled.figures["s_per_step_median"]
    return _section("Compiled blocks (`compile_blocks`)", [
        "Regional `torch.compile` of each transformer block (diffusers' `compile_repeated_blocks`, static "
        "shapes) fuses the fp32 norms, modulation, RoPE and gating between the matrix products. Compilation "
        "is paid once per process and clip size (in the untimed warm-up step; not timed separately in "
        "`results/bench/`). torch.compile's recompile limit is raised (`RECOMPILE_LIMIT`): at torch's default "
        "the blocks fell back to eager and ran out of memory (a withdrawn case below).",
        f"With cuDNN forced at {compiled.clip_text}: {compiled.s} s at {compiled.alloc} GiB compiled (run "
        f"{compiled.label}) against {eager.s} s at {eager.alloc} GiB not (run {eager.label}), {times(ratio)} "
        f"across two runs. At {compiled720.clip_text} compiled blocks alone fit on the H100 ({compiled720.s} s, "
        f"{compiled720.alloc} GiB, run {compiled720.label}) where the plain step with cuDNN forced ran out of "
        f"memory (run {plain720.label}); with every block offloaded, {compiled_off.s} s compiled with torch's "
        f"attention choice (run {compiled_off.label}) against {eager_off.s} s not compiled, with cuDNN forced "
        f"(run {eager_off.label}).",
    ], [eager, compiled, plain720, compiled720, eager_off, compiled_off])


def _fp8(b: Bench) -> list[str]:
    bf16, fp8 = b("h100-g", "compile_keepattn_480p"), b("h100-h", "compile_keepattn_fp8_480p")
    bf16_720 = b("h100-g", "compile_keepattn40_offload24_720p")
    fp8_720 = b("h100-h", "compile_keepattn40_offload24_fp8_720p")
    return _section("Frozen linears in fp8 (`fp8_base`)", [
        "The blocks' frozen linears multiply in float8 e4m3 with row-wise scales (`cinelora/speed/fp8.py`); "
        "the LoRA stays in bf16.",
        f"With compiled blocks and kept attention at {fp8.clip_text}: {fp8.s} s at {fp8.alloc} GiB (run "
        f"{fp8.label}) against {bf16.s} s at {bf16.alloc} GiB in bf16 (run {bf16.label}); at {fp8_720.clip_text} "
        f"with {fp8_720.levers['offload_blocks']} blocks offloaded, {fp8_720.s} s at {fp8_720.alloc} GiB "
        f"against {bf16_720.s} s at {bf16_720.alloc} GiB. Its rounding error is tested on single linears on the "
        "CPU (`tests/test_fp8.py`); an earlier one-off comparison of the smoke model's LoRA gradient with "
        "bf16's was not kept, and `results/bench/` holds no same-run gradient check at true size, so it is "
        "not used for training yet. With `fa4` it failed in FlashAttention-4's tensor checks (withdrawn cases "
        "below) and `SpeedLevers` refuses the combination.",
    ], [bf16, fp8, bf16_720, fp8_720])


def _allocator(b: Bench) -> list[str]:
    default, expandable = b("h100-d", "compile_720p"), b("h100-e", "compile_720p")
    message = b.provenance.get(default.label, {}).get("cases", {}).get(default.name, {}).get("message", "")
    found = re.search(r"([\d.]+ [GM]iB) is reserved by PyTorch but unallocated", message)
    recorded = sorted((label, p["device"]["cuda_alloc_conf"]) for label, p in b.provenance.items()
                      if p.get("device", {}).get("cuda_alloc_conf"))
    free = f" and {found[1]} reserved by PyTorch but unallocated (its failure message in provenance)" if found else ""
    since = (f" Provenance records the setting from run {recorded[0][0]} on (`{recorded[0][1]}`); earlier runs "
             "predate that field." if recorded else "")
    return _section("The CUDA allocator", [
        "`configure_cuda_allocator` (`cinelora/speed/levers.py`) sets `PYTORCH_CUDA_ALLOC_CONF` to expandable "
        "segments before CUDA's first use, unless the user set it; the CLI and the bench call it. With torch's "
        f"default allocator the compiled step at {default.clip_text} ran out of memory in run {default.label}, "
        f"at {default.alloc} GiB allocated{free}; run {expandable.label} fits the same case at "
        f"{expandable.alloc} GiB.{since}",
    ], [default, expandable])


def read_presets(root: Path = HARDWARE_ROOT) -> dict[str, dict]:
    """Preset name -> {lever: value} of `configs/hardware/<name>.yaml` (its `speed.*` keys)."""
    presets = {}
    for path in sorted(Path(root).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        presets[path.stem] = {key.removeprefix("speed."): value for key, value in raw.items()}
    return presets


def _value(value) -> str:
    return "`true`" if value is True else "`false`" if value is False else f"`{value}`"


# Why each preset holds its values: the lever sections above give the figures.
PRESET_REASONS = {
    "h100-80gb": "Sized for the H100's memory at the `full` profile's clip: FlashAttention-4, compiled blocks "
                 "and kept attention in every block each make the step faster, and offloading every block keeps "
                 "the peak lowest at no cost in speed, which leaves room for the clip's activations. "
                 "Uncheckpointed blocks did not pay at that clip on this GPU, kept FFNs do not fit, and fp8 has "
                 "no true-size gradient check.",
    "h200-141gb": "The H100 preset's levers plus kept FFN pre-activations in every block, which fit in the "
                  "H200's memory and make its step faster still; the FFNs take the memory uncheckpointed "
                  "blocks would use, since they save more time per GiB.",
}


def _presets(b: Bench, presets: dict[str, dict]) -> list[str]:
    unexplained = sorted(set(presets) - set(PRESET_REASONS))
    if unexplained:
        raise ValueError(f"configs/hardware/{unexplained[0]}.yaml has no reason in performance.PRESET_REASONS")
    names = sorted(presets)
    rows = [(f"`{lever}`", _value(default), *(_value(presets[n][lever]) if lever in presets[n] else
                                              f"({_value(default)})" for n in names))
            for lever, default in DEFAULT_LEVERS.items()]
    lines = ["## Hardware presets", "",
             f"`--profile full` takes its speed levers from a hardware preset, `configs/hardware/<name>.yaml` "
             f"(`--hardware`; default `{DEFAULT_HARDWARE}`). A preset sets `speed.*` keys only; a lever it does "
             "not set (in parentheses) keeps the experiment's value, the plain step's default.", "",
             *_table(("Lever", "Default", *(f"`{n}`" for n in names)), rows)]
    for name in names:
        levers = {**DEFAULT_LEVERS, **presets[name]}
        measured = [b.cases[k] for k in sorted(b.cases) if k not in b.withdrawn and b.cases[k].levers == levers]
        lines += [f"### `{name}`", "", PRESET_REASONS[name], ""]
        lines += (["Cases measured with exactly these levers:", "", *_cases_table(measured)] if measured else
                  ["No bench case has exactly these levers.", ""])
    return lines


def _terms(b: Bench) -> list[str]:
    medians: dict[tuple, dict[str, float]] = {}
    for r in b.terms:
        if r["metric"] == "s_per_step_median":
            medians.setdefault((r["label"], r["device"], r["profile"]), {})[r["variant"]] = float(r["value"])
    rows = [(label, _gpu(device), f"`{profile}`", f"`{variant}`", seconds(value),
             times(value / variants["flow"]) if "flow" in variants else NONE)
            for (label, device, profile), variants in sorted(medians.items())
            for variant, value in sorted(variants.items(), key=lambda item: item[1])]
    return ["## Loss terms", "",
            "`python -m bench.terms` (`make bench-terms`) times the optimizer step of the one training loop with "
            "each optional term of the objective on or off, at the smoke or proxy sizes: small models, so the "
            "figures say what a term costs next to flow matching alone, not what a true-size step costs.", "",
            *_table(("Run", "Device", "Profile", "Objective", "s/step", "× flow"), rows)]


def _withdrawn(b: Bench) -> list[str]:
    return ["## Withdrawn cases", "",
            "Cases of a run that no longer stand (`results/bench/withdrawn.csv`); their rows stay in "
            "`steps_<label>.csv` as written, and nothing above cites them. A reason names the code of its time.",
            "", *_table(("Run", "Case", "Reason"), [(label, f"`{case}`", reason)
                                                    for (label, case), reason in sorted(b.withdrawn.items())])]


def _runs(b: Bench) -> list[str]:
    rows = []
    for label, p in sorted(b.provenance.items()):
        device, versions = p.get("device", {}), p.get("versions", {})
        wall = p.get("wall_seconds", {}).get("total")
        rows.append((label, _gpu(device.get("cuda_device") or "cpu"), _sha(b, label), versions.get("torch", NONE),
                     versions.get("diffusers", NONE), f"{p['matmul_bf16_tflops_measured']:.1f}"
                     if "matmul_bf16_tflops_measured" in p else NONE, f"`{device['cuda_alloc_conf']}`"
                     if device.get("cuda_alloc_conf") else NONE, f"{wall:.0f}" if wall is not None else NONE))
    return ["## Runs", "", "From `provenance_<label>.json`: the code and packages of each run, the bf16 "
            "matrix-product rate it measured (TFLOP/s), its allocator setting and its wall time (seconds, its "
            "cases' compilation included).", "",
            *_table(("Run", "GPU", "Git", "torch", "diffusers", "Measured bf16 TFLOP/s", "Allocator", "Wall s"), rows)]


# the lever sections in order, each with the lever whose preset values it states
SECTIONS = ((_attention, "attention_backend"), (_keep_attention, "keep_attention_blocks"),
            (_uncheckpointed, "uncheckpointed_blocks"), (_keep_ffn, "keep_ffn_blocks"), (_offload, "offload_blocks"),
            (_compile, "compile_blocks"), (_fp8, "fp8_base"), (_allocator, None))


def make_performance(bench: Bench, presets: dict[str, dict]) -> str:
    """docs/performance.md as text; a pure function of the parsed bench files and presets."""
    lines = [*_intro(bench), *_headline(bench)]
    for section, lever in SECTIONS:
        heading, blank, *rest = section(bench)
        lines += [heading, blank, *((_preset_line(presets, lever), "") if lever else ()), *rest]
    lines += [*_presets(bench, presets), *_terms(bench), *_withdrawn(bench), *_runs(bench)]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(results_root: Path, out: Path, hardware_root: Path = HARDWARE_ROOT) -> None:
    """Write docs/performance.md (`out`) atomically from `results_root/bench/` and the hardware presets."""
    atomic_write_text(out, make_performance(read_bench(results_root), read_presets(hardware_root)))


__all__ = ["main", "make_performance", "read_bench", "read_presets", "Bench", "Case", "seconds", "gib", "percent",
           "times", "PRESET_REASONS"]
