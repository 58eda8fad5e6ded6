"""The proxy evaluators (DESIGN §9, issue 15 §3): an I3D, a CLIP and an AlexNet trunk trained by the project on
world clips disjoint from every evaluation clip, saved in the file layouts the `full` profile's loaders read, each
beside the evidence that it measures something. At `full` the published weights take their place.

Data: one corpus of the configured training domains (block `evaluators_train` of `cinelora.data.corpus`, beyond
every index the world's video splits use, so no evaluation clip is in it; `photos` is refused, since every clip of
it shows one of the same few photos, and the `stills` photos stand in for it) and a held-out one (`evaluators_val`).
All three networks train on the same corpus, each drawing its own batches (`loop.fit`, the instrument's one loop).

Phases, each skipped once its product exists under `results/<name>/<profile>/`, and resumable within (checkpoints
under `runs/`), so `cinelora run ... --budget-minutes M` continues where it stopped:
1. `i3d`: `i3d_training` → i3d.safetensors (+ i3d.json); its validation accuracy per label set against chance
   (i3d_accuracy.csv/.png, through `load_i3d` and FVD's feature path), then the FVD sanity (`fvd_sanity`:
   fvd_sanity.csv/.png) on 2N clips per sanity domain of the held-out block;
2. `clip`: `clip_training` → clip/ (a transformers folder, + clip.json); recall@1/@5 both ways on held-out pairs
   against chance (clip_recall.csv/.png, through `load_clip` and CLIP-SIM's embedding functions);
3. `trunk`: `trunk_training` → alexnet_trunk.safetensors (+ alexnet_trunk.json); its frame-attribute accuracy
   (trunk_accuracy.csv/.png). The LPIPS and R-LPIPS heads on top are experiments/rlpips_metric's (its proxy profile
   names this trunk file): Table 1 at proxy.
Then evaluators.md, the summary a reader starts from. Weights are stored in bf16 (the loaders upcast to float32)
and every number reported comes from the stored file read by the study's own loader.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cinelora.atomic import atomic_directory, atomic_path, atomic_write_text
from cinelora.config import EvaluatorsConfig
from cinelora.data.corpus import CorpusSpec, render_corpus
from cinelora.data.world import clip_attributes
from cinelora.instrument import clip_training, fvd_sanity, i3d_training, trunk_training
from cinelora.instrument.attributes import LabelSpace
from cinelora.instrument.loop import Deadline, final_record, fit, sha256_file, training_device
from cinelora.provenance import collect_provenance
from cinelora.rundir import RunDir

STORAGE = torch.bfloat16  # every evaluator's stored dtype; the loaders upcast to float32
I3D_FILE, CLIP_DIR, TRUNK_FILE = "i3d.safetensors", "clip", "alexnet_trunk.safetensors"
SIDECARS = {"i3d": "i3d.json", "clip": "clip.json", "trunk": "alexnet_trunk.json"}
TABLES = {"i3d": "i3d_accuracy.csv", "fvd": "fvd_sanity.csv", "clip": "clip_recall.csv", "trunk": "trunk_accuracy.csv"}
SUMMARY = "evaluators.md"
LABEL = "proxy instrument, trained on the procedural world: proxy numbers only"


def corpus_spec(cfg: EvaluatorsConfig, split: str) -> CorpusSpec:
    c = cfg.corpus
    return CorpusSpec(f"evaluators_{split}", tuple(c.domains), c.train_clips if split == "train" else c.val_clips,
                      c.seed, c.height, c.width, c.num_frames)


def sanity_spec(cfg: EvaluatorsConfig, domain: str) -> CorpusSpec:
    """The 2N held-out clips of one FVD-sanity domain (block evaluators_val: no network trains on it)."""
    c = cfg.corpus
    return CorpusSpec("evaluators_val", (domain,), 2 * cfg.fvd_sanity.clips, c.seed, c.height, c.width, c.num_frames)


def corpus_attributes(spec: CorpusSpec) -> list[dict]:
    """The attributes of `spec`'s clips without rendering them (attributes are drawn before any pixel)."""
    return [clip_attributes(*spec.clip(i), spec.seed) for i in range(spec.count)]


@dataclass
class _Split:
    frames: torch.Tensor  # uint8 [N, T, H, W, 3] on the device
    captions: list[str]


class _Corpora:
    """The corpora, rendered on first use (a resumed run that only validates renders no training clip)."""

    def __init__(self, cfg: EvaluatorsConfig, device: torch.device, progress: bool):
        self.cfg, self.device, self.progress = cfg, device, progress
        self.attributes = {s: corpus_attributes(corpus_spec(cfg, s)) for s in ("train", "val")}

    def _render(self, spec: CorpusSpec) -> _Split:
        corpus = render_corpus(spec, progress=self.progress)
        return _Split(torch.from_numpy(corpus.frames).to(self.device), corpus.captions)

    @functools.cached_property
    def train(self) -> _Split:
        return self._render(corpus_spec(self.cfg, "train"))

    @functools.cached_property
    def val(self) -> _Split:
        return self._render(corpus_spec(self.cfg, "val"))

    def sanity(self, domain: str) -> torch.Tensor:
        return self._render(sanity_spec(self.cfg, domain)).frames

    def targets(self, space: LabelSpace, split: str) -> torch.Tensor:
        return space.encode(self.attributes[split]).to(self.device)


# --- files: weights, sidecars, tables, figures -----------------------------------------------------------------


def _stored(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors in the storage dtype (integer counters such as num_batches_tracked as they are)."""
    return {k: (v.to(STORAGE) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in state.items()}


def _save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": "pt"})


def _write_sidecar(cfg: EvaluatorsConfig, run: RunDir, key: str, files: list[Path], record: dict,
                   seconds: float) -> None:
    """`<key>.json` beside the weights: what they are, each file's bytes and sha256, how they were trained, and the
    run's provenance (git state, config hash, versions, device, wall time of the phase's last chunk)."""
    sidecar = {"what": f"{cfg.name}: {record.pop('what')} ({LABEL})",
               "files": {str(p.relative_to(run.out)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                         for p in files},
               "dtype": f"{str(STORAGE).removeprefix('torch.')} (loaders upcast to float32)",
               **record,
               "trained": final_record(run.out / f"{key}_log.jsonl"),
               "corpus": {"blocks": ["evaluators_train", "evaluators_val"], "domains": cfg.corpus.domains,
                          "train_clips": cfg.corpus.train_clips, "val_clips": cfg.corpus.val_clips,
                          "seed": cfg.corpus.seed,
                          "size": [cfg.corpus.num_frames, cfg.corpus.height, cfg.corpus.width]},
               "provenance": collect_provenance(cfg, phase_seconds={key: seconds})}
    atomic_write_text(run.out / SIDECARS[key], json.dumps(sidecar, indent=1) + "\n")


def read_sidecar(run: RunDir, key: str) -> dict:
    return json.loads((run.out / SIDECARS[key]).read_text())


def _format(value) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def write_rows(path: Path, rows: list[dict]) -> None:
    """A tidy CSV (columns: the first row's keys; floats with 6 decimals)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(rows[0]))
    writer.writerows([[_format(r[k]) for k in rows[0]] for r in rows])
    atomic_write_text(path, buffer.getvalue())


def read_rows(path: Path) -> list[dict]:
    def parse(value: str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return {"True": True, "False": False}.get(value, value)

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _save_png(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from cinelora.report import STYLE

    buffer = io.BytesIO()
    with plt.rc_context(STYLE):
        fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def accuracy_figure(rows: list[dict], title: str):
    """Validation accuracy per label set beside its two chance levels."""
    import matplotlib.pyplot as plt

    from cinelora.report import STYLE

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(0.75 * len(rows) + 1.2, 2.2))
        x = torch.arange(len(rows)).numpy()
        for offset, key, label, style in ((-0.27, "accuracy", "validation accuracy", {"color": "C0"}),
                                          (0.0, "chance_majority", "chance: majority class", {"color": "0.6"}),
                                          (0.27, "chance_uniform", "chance: 1 / classes", {"color": "0.85"})):
            ax.bar(x + offset, [r[key] for r in rows], width=0.27, label=label, **style)
        ax.set_xticks(x, [f"{r['label_set']}\n({r['classes']})" for r in rows])
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        ax.set_title(title)
        fig.tight_layout()
    return fig


def recall_figure(rows: list[dict], title: str):
    import matplotlib.pyplot as plt

    from cinelora.report import STYLE

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(3.8, 2.2))
        names = [f"{r['direction']} R@{r['k']}" for r in rows]
        x = torch.arange(len(rows)).numpy()
        ax.bar(x - 0.2, [r["recall"] for r in rows], width=0.4, color="C0", label="recall")
        ax.bar(x + 0.2, [r["chance"] for r in rows], width=0.4, color="0.6", label="chance")
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        ax.set_title(title)
        fig.tight_layout()
    return fig


# --- phase 1: I3D and the FVD sanity ---------------------------------------------------------------------------


def _train_i3d(cfg: EvaluatorsConfig, run: RunDir, data: _Corpora, deadline: Deadline, progress: bool) -> bool:
    space = LabelSpace.from_attributes(cfg.i3d.label_sets, data.attributes["train"])
    model = i3d_training.build_i3d(cfg.i3d, space.total, cfg.seed).to(data.device)
    start = time.perf_counter()
    result = fit("i3d", model,
                 i3d_training.step_loss(cfg.i3d, model, space, data.train.frames, data.targets(space, "train"),
                                        cfg.seed),
                 i3d_training.validation(model, space, data.val.frames, data.targets(space, "val"),
                                         cfg.fvd_sanity.batch_size),
                 cfg.i3d, run.state / "i3d_checkpoints", run.out / "i3d_log.jsonl", deadline, progress)
    if not result.finished:
        return False
    path = run.out / I3D_FILE
    _save_safetensors(path, _stored(model.state_dict()))
    _write_sidecar(cfg, run, "i3d", [path], {
        "what": "I3D (pytorch-i3d InceptionI3d layout, width-scaled) classifying world attributes",
        "loader": f"cinelora.metrics.i3d.load_i3d(path, {cfg.i3d.release!r}) (eval.i3d_release: {cfg.i3d.release})",
        "architecture": {"class": "InceptionI3d", "width_divisor": cfg.i3d.width_divisor, "logits": space.total,
                         "release": cfg.i3d.release,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "input": "16 frames resized to 224x224, [-1, 1] (cinelora.metrics.fvd.preprocess_clips)",
        "fvd_feature": "the logits averaged over time: one block per label set (logit_blocks)",
        "labels": {k: list(v) for k, v in space.classes.items()},
        "logit_blocks": {k: list(v) for k, v in space.blocks().items()}}, time.perf_counter() - start)
    return True


def _saved_space(run: RunDir, key: str) -> LabelSpace:
    return LabelSpace({k: tuple(v) for k, v in read_sidecar(run, key)["labels"].items()})


def _validate_i3d(cfg: EvaluatorsConfig, run: RunDir, data: _Corpora) -> None:
    from cinelora.metrics.i3d import load_i3d

    model = load_i3d(run.out / I3D_FILE, cfg.i3d.release).to(data.device)
    space = _saved_space(run, "i3d")
    logits = i3d_training.logits_of(model, data.val.frames, cfg.fvd_sanity.batch_size)
    rows = space.accuracy_rows(logits, space.encode(data.attributes["val"]), space.encode(data.attributes["train"]))
    write_rows(run.out / TABLES["i3d"], rows)
    _save_png(accuracy_figure(rows, f"I3D, {len(data.attributes['val'])} held-out clips ({cfg.profile})"),
              run.out / "i3d_accuracy.png")


def _fvd_sanity(cfg: EvaluatorsConfig, run: RunDir, data: _Corpora) -> None:
    from cinelora.metrics.i3d import load_i3d

    model = load_i3d(run.out / I3D_FILE, cfg.i3d.release).to(data.device)
    rows = []
    for domain in cfg.fvd_sanity.domains:
        rows += fvd_sanity.sanity_rows(model, domain, data.sanity(domain), cfg.fvd_sanity, cfg.seed)
    write_rows(run.out / TABLES["fvd"], rows)
    _save_png(fvd_sanity.sanity_figure(rows, f"FVD sanity of the proxy I3D ({cfg.profile}): real vs corrupted real; "
                                             "bands: real vs real"), run.out / "fvd_sanity.png")


# --- phase 2: CLIP -----------------------------------------------------------------------------------------------


def _save_clip(model, processor, folder: Path) -> None:
    """A transformers folder `load_clip` reads: config (dtype float32, so it loads upcast), bf16 weights, the
    processor (the offline tokenizer and the image preprocessing)."""
    with atomic_directory(folder, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        weights = tmp / "model.safetensors"
        save_file(_stored(load_file(weights)), weights, metadata={"format": "pt"})


def _train_clip(cfg: EvaluatorsConfig, run: RunDir, data: _Corpora, deadline: Deadline, progress: bool) -> bool:
    model, processor = clip_training.build_clip(cfg.clip, cfg.corpus.height, cfg.seed)
    model = model.to(data.device)
    ids, mask = (t.to(data.device) for t in clip_training.tokenize(processor, data.train.captions))
    pairs = cfg.clip.retrieval_pairs
    val_ids, val_mask = (t.to(data.device) for t in clip_training.tokenize(processor, data.val.captions[:pairs]))
    start = time.perf_counter()
    result = fit("clip", model,
                 clip_training.step_loss(cfg.clip, model, processor, data.train.frames, ids, mask, cfg.seed),
                 clip_training.validation(model, processor, data.val.frames[:pairs], val_ids, val_mask,
                                          data.val.captions[:pairs]),
                 cfg.clip, run.state / "clip_checkpoints", run.out / "clip_log.jsonl", deadline, progress)
    if not result.finished:
        return False
    folder = run.out / CLIP_DIR
    _save_clip(model, processor, folder)
    _write_sidecar(cfg, run, "clip", sorted(p for p in folder.iterdir() if p.is_file()), {
        "what": "CLIP (transformers CLIPModel, small) trained contrastively on world frame-caption pairs",
        "loader": "cinelora.metrics.clip_sim.load_clip(folder)",
        "architecture": {"class": "CLIPModel", "hidden_size": cfg.clip.hidden_size, "layers": cfg.clip.layers,
                         "heads": cfg.clip.heads, "image_size": cfg.corpus.height, "patch_size": cfg.clip.patch_size,
                         "projection_dim": cfg.clip.projection_dim, "tokenizer": "clip_sim.build_clip_tokenizer",
                         "parameters": sum(p.numel() for p in model.parameters())},
        "pairs": "one random frame of each training clip per step, with the clip's caption"},
        time.perf_counter() - start)
    return True


def _validate_clip(cfg: EvaluatorsConfig, run: RunDir, data: _Corpora) -> None:
    pairs = cfg.clip.retrieval_pairs
    frames = data.val.frames[:pairs, cfg.corpus.num_frames // 2].cpu()
    rows = clip_training.saved_model_recall(run.out / CLIP_DIR, frames, data.val.captions[:pairs])
    write_rows(run.out / TABLES["clip"], rows)
    _save_png(recall_figure(rows, f"CLIP retrieval, {pairs} held-out pairs ({cfg.profile})"),
              run.out / "clip_recall.png")


# --- phase 3: the AlexNet trunk ------------------------------------------------------------------------------


def _train_trunk(cfg: EvaluatorsConfig, run: RunDir, data: _Corpora, deadline: Deadline, progress: bool) -> bool:
    space = LabelSpace.from_attributes(cfg.trunk.label_sets, data.attributes["train"])
    model = trunk_training.build_trunk(space.total, cfg.seed).to(data.device)
    val_targets = data.targets(space, "val")
    start = time.perf_counter()
    result = fit("trunk", model,
                 trunk_training.step_loss(cfg.trunk, model, space, data.train.frames, data.targets(space, "train"),
                                          cfg.seed),
                 trunk_training.validation(model, space, data.val.frames, val_targets),
                 cfg.trunk, run.state / "trunk_checkpoints", run.out / "trunk_log.jsonl", deadline, progress)
    if not result.finished:
        return False
    path = run.out / TRUNK_FILE
    _save_safetensors(path, _stored(trunk_training.trunk_state(model)))
    # the accuracy table needs the classification head, which is not saved: it is measured now (before the sidecar
    # marks the phase done), with the trunk as LPIPS reads it from the stored file
    model.features.load_state_dict(_lpips_trunk(path, cfg.seed))
    logits = trunk_training.logits_of(model.eval(), data.val.frames[:, cfg.corpus.num_frames // 2])
    rows = space.accuracy_rows(logits, val_targets.cpu(), data.targets(space, "train").cpu())
    write_rows(run.out / TABLES["trunk"], rows)
    _save_png(accuracy_figure(rows, f"AlexNet trunk + linear probe (not saved), middle frames ({cfg.profile})"),
              run.out / "trunk_accuracy.png")
    stored = load_file(path)
    _write_sidecar(cfg, run, "trunk", [path], {
        "what": "AlexNet trunk (torchvision alexnet().features keys) for LPIPS / R-LPIPS, trained on world frames",
        "loader": "cinelora.metrics.lpips_distance.new_lpips('alex', <this file>, seed) (rlpips.backbone, "
                  "eval.lpips_backbone, perceptual.backbone)",
        "architecture": {"class": "torchvision.models.alexnet().features", "keys": sorted(stored),
                         "parameters": sum(v.numel() for v in stored.values())},
        "training": "frame-attribute classification (label sets below) through a linear head on the spatial mean "
                    "of relu5; the head is not saved; inputs through LPIPS's scaling layer; horizontal flips",
        "labels": {k: list(v) for k, v in space.classes.items()}}, time.perf_counter() - start)
    return True


def _lpips_trunk(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """The trunk LPIPS builds from the file (`new_lpips` with the file as its backbone, the path the metric
    experiments take), as torchvision `features` keys: `slice<k>.<i>.*` → `<i>.*`."""
    from cinelora.metrics.lpips_distance import new_lpips

    return {key.split(".", 1)[1]: value for key, value in new_lpips("alex", str(path), seed).net.state_dict().items()}


# --- the whole experiment ------------------------------------------------------------------------------------


def weight_files(run: RunDir) -> dict[str, Path]:
    """What the proxy profile's evaluator keys name (eval.i3d_weights, eval.clip_model, rlpips.backbone, ...)."""
    return {"i3d": run.out / I3D_FILE, "clip": run.out / CLIP_DIR, "trunk": run.out / TRUNK_FILE}


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def summary_markdown(cfg: EvaluatorsConfig, run: RunDir) -> str:
    """evaluators.md: every evaluator's validation in one page (proxy numbers)."""
    lines = [f"# Proxy evaluators ({cfg.profile}): {LABEL}", "",
             f"Training corpus: {cfg.corpus.train_clips} clips of {', '.join(cfg.corpus.domains)} "
             f"({cfg.corpus.num_frames}x{cfg.corpus.height}x{cfg.corpus.width}, block evaluators_train); validation: "
             f"{cfg.corpus.val_clips} held-out clips (block evaluators_val).", ""]
    for key, title in (("i3d", "I3D validation accuracy"), ("trunk", "AlexNet trunk validation accuracy "
                                                                      "(linear probe, middle frames)")):
        lines += [f"## {title}", "", "| label set | classes | clips | accuracy | chance (majority) | chance (1/K) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['label_set']} | {r['classes']} | {r['clips']} | {r['accuracy']:.3f} | "
                  f"{r['chance_majority']:.3f} | {r['chance_uniform']:.3f} |" for r in read_rows(run.out / TABLES[key])]
        lines.append("")
    rows = read_rows(run.out / TABLES["clip"])
    lines += [f"## CLIP retrieval ({rows[0]['pairs']} held-out pairs, {rows[0]['captions']} distinct captions)", "",
              "| direction | k | recall | chance |", "|---|---|---|---|"]
    lines += [f"| {r['direction']} | {r['k']} | {r['recall']:.3f} | {r['chance']:.3f} |" for r in rows]
    rows = read_rows(run.out / TABLES["fvd"])
    lines += ["", f"## FVD sanity (N = {rows[0]['clips_a']} clips per set; covariance {cfg.fvd_sanity.covariance})", "",
              "Floor: real vs real (sets A, B); band: over the re-partitions of the 2N clips. Monotone: every strength "
              "step raises FVD, except a step within the band (strict: no exception); fvd_sanity.csv has every value.",
              "", "| domain | corruption | floor (A, B) | floor band top | strongest | monotone | strict | leaves floor |",
              "|---|---|---|---|---|---|---|---|"]
    yes = {True: "yes", False: "NO"}
    lines += [f"| {c['domain']} | {c['corruption']} | {c['floor']:.4g} | {c['floor_max']:.4g} | {c['strongest']:.4g} | "
              f"{yes[c['monotone']]} | {yes[c['strict']]} | {yes[c['leaves_floor']]} |"
              for c in fvd_sanity.sanity_checks(rows)]
    lines += ["", "## Files", "", "| file | bytes |", "|---|---|"]
    files = weight_files(run)
    lines += [f"| {path.name}{'/' if path.is_dir() else ''} | {_bytes(path)} |" for path in files.values()]
    lines += [f"| all | {sum(_bytes(p) for p in files.values())} |", "",
              "LPIPS / R-LPIPS heads on this trunk: experiments/rlpips_metric at this profile (Table 1).", ""]
    return "\n".join(lines)


def run_evaluators(cfg: EvaluatorsConfig, run: RunDir, deadline: Deadline, progress: bool = True) -> bool:
    """Every phase not done yet; False when the deadline stopped it (run the same command again)."""
    data = _Corpora(cfg, training_device(), progress)
    out = run.out
    if not (out / SIDECARS["i3d"]).is_file() and not _train_i3d(cfg, run, data, deadline, progress):
        return False
    if not (out / TABLES["i3d"]).is_file():
        _validate_i3d(cfg, run, data)
    if not (out / TABLES["fvd"]).is_file():
        _fvd_sanity(cfg, run, data)
    if not (out / SIDECARS["clip"]).is_file() and not _train_clip(cfg, run, data, deadline, progress):
        return False
    if not (out / TABLES["clip"]).is_file():
        _validate_clip(cfg, run, data)
    if not (out / SIDECARS["trunk"]).is_file() and not _train_trunk(cfg, run, data, deadline, progress):
        return False
    atomic_write_text(out / SUMMARY, summary_markdown(cfg, run))
    return True


def weights_record(run: RunDir) -> dict:
    """{evaluator: {file, bytes, sidecar}} for provenance.json (names relative to the run folder)."""
    return {key: {"file": path.name, "bytes": _bytes(path), "sidecar": SIDECARS[key]}
            for key, path in weight_files(run).items()}


__all__ = ["run_evaluators", "weight_files", "weights_record", "summary_markdown", "corpus_spec", "sanity_spec",
           "corpus_attributes", "read_sidecar", "read_rows", "write_rows", "accuracy_figure", "recall_figure",
           "I3D_FILE", "CLIP_DIR", "TRUNK_FILE", "SIDECARS", "TABLES", "SUMMARY", "STORAGE"]
