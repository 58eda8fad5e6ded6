"""A run's two folders and every file in them, owned by one class: `RunDir` names each file, writes it
atomically and writes `provenance.json` last, so its presence means "finished"; `claim` refuses a finished run
without `force` and keeps an unfinished one, which then resumes.

A run of experiment `name` at profile `p` has `results/<name>/<p>/` (`RunDir.out`: small, committed, the paper's
data; layout and columns in results/SCHEMA.md) and `runs/<name>/<p>/` (`RunDir.state`: checkpoints, generated
clips; git-ignored). A run of seed k > 0 (a study's further seeds, `--seed`) has `results/<name>/<p>/seed<k>/` and
`runs/<name>/<p>-seed<k>/`; seed 0 keeps the plain folders, which a rerun of it replaces without touching the
seed folders inside. `cinelora.runner` runs the experiments into them.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from cinelora.atomic import atomic_write_text, remove_temporaries
from cinelora.config import ExperimentConfig, MetricExperimentConfig, config_hash, config_yaml

RESULTS_ROOT = Path("results")  # the committed results: the paper's data
RUNS_ROOT = Path("runs")
_roots = [RESULTS_ROOT, RUNS_ROOT]  # where this process's runs go (`use_results_root`)
FINISHED_MARKER = "provenance.json"  # written last by a run, so its presence means "finished"
SEED_FOLDER = "seed{seed}"  # results/<name>/<profile>/seed<k>: the run of seed k > 0
Config = ExperimentConfig | MetricExperimentConfig


class ResultsExistError(FileExistsError):
    """The run directory holds a finished run and `force` was not given."""


class ConfigChangedError(ValueError):
    """An unfinished run was started with another resolved config: resuming would mix the two."""


class RunLockedError(RuntimeError):
    """Another process is running the same experiment at the same profile."""


@dataclass(frozen=True)
class RunDir:
    """The two folders of one run and the name of every file in them."""

    out: Path  # results/<experiment>/<profile>: committed
    state: Path  # runs/<experiment>/<profile>: heavy, git-ignored
    replaces: Path | None = None  # a --force rerun of a finished run: the folder it takes the place of when finished

    @classmethod
    def of(cls, cfg: Config, results_root: Path | None = None, runs_root: Path | None = None) -> RunDir:
        """The folders of `cfg`'s run (under `use_results_root`'s roots unless given): a replacement under way
        (`claim` with `force`) where there is one; the experiment name must be one plain folder name."""
        if not cfg.name or Path(cfg.name).name != cfg.name or cfg.name in (".", ".."):
            raise ValueError(f"experiment name {cfg.name!r} cannot name a results folder")
        results_root, runs_root = Path(results_root or _roots[0]), Path(runs_root or _roots[1])
        out, state = run_folder(results_root, cfg.name, cfg.profile, cfg.seed), runs_root / cfg.name / cfg.profile
        if cfg.seed:
            state = state.with_name(f"{cfg.profile}-seed{cfg.seed}")
        staged = _replacement(out)
        if staged.is_dir():
            if not (staged / FINISHED_MARKER).is_file():
                return cls(staged, state, replaces=out)
            _take_place(staged, out)  # it finished, but was killed before taking the old run's place
        return cls(out, state)

    @property
    def committed(self) -> Path | None:
        """The same run's folder under the committed results/, when this one is elsewhere."""
        place = self.replaces or self.out
        depth = 3 if is_seed_folder(place) else 2  # <name>/<profile>[/seed<k>] under the results root
        committed = RESULTS_ROOT.joinpath(*place.parts[-depth:])
        return None if committed.resolve() == place.resolve() else committed

    def stage(self, name: str) -> RunDir:
        """The folders of one stage of a two-stage run (the style LoRA): its own log, LoRA and checkpoints."""
        return RunDir(self.out / name, self.state / name)

    @property
    def finished(self) -> bool:
        return (self.out / FINISHED_MARKER).is_file()

    @property
    def lora(self) -> Path:
        return self.out / "lora"

    @property
    def samples(self) -> Path:
        return self.out / "samples"

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.csv"

    @property
    def log(self) -> Path:
        return self.out / "train_log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.state / "checkpoints"

    @property
    def generated(self) -> Path:
        return self.state / "generated"

    def append_log(self, record: dict) -> None:
        """Append `record` to the training log as one JSON line (one write call, so lines never interleave)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def keep_log(self, keep: Callable[[dict], bool]) -> None:
        """Drop the log records `keep` rejects (those of a part of the run that a resume redoes)."""
        if self.log.is_file():
            lines = [line for line in self.log.read_text().splitlines() if keep(json.loads(line))]
            atomic_write_text(self.log, "".join(line + "\n" for line in lines))

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.out / name, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def read_json(self, name: str) -> dict | None:
        path = self.out / name
        return json.loads(path.read_text()) if path.is_file() else None

    def write_config(self, cfg: Config) -> None:
        """`config.resolved.yaml` (the frozen record of what ran) and `config.sha256` (`config_hash`)."""
        atomic_write_text(self.out / "config.resolved.yaml", config_yaml(cfg))
        atomic_write_text(self.out / "config.sha256", config_hash(cfg) + "\n")

    def write_metrics(self, rows: list[dict]) -> None:
        from cinelora.results import write_metrics

        write_metrics(rows, self.metrics)

    def finish(self, cfg: Config, phases: dict[str, float], extra: dict) -> RunDir:
        """Write `provenance.json`, last: the run is finished; a replacement then takes the old run's place.
        Returns the run's folders where they now are."""
        from cinelora.provenance import collect_provenance

        self.write_json(FINISHED_MARKER, collect_provenance(cfg, phase_seconds=phases, extra=extra))
        if self.replaces is None:
            return self
        _take_place(self.out, self.replaces)
        return RunDir(self.replaces, self.state)


def run_folder(results_root: Path, name: str, profile: str, seed: int) -> Path:
    """The results folder of the run of `name` at `profile` with `seed`: `<name>/<profile>`, and `seed<k>/`
    inside it for k > 0 (`cinelora.results.run_folder_key` reads it back)."""
    folder = Path(results_root) / name / profile
    return folder / SEED_FOLDER.format(seed=seed) if seed else folder


def _replacement(out: Path) -> Path:
    """Where a --force rerun of the finished run in `out` is built, beside it (hidden: no reader takes it)."""
    return out.with_name(f".{out.name}.replacing")


def is_seed_folder(path: Path) -> bool:
    """Whether `path` is the results folder of a seed k > 0 run (`<profile>/seed<k>`)."""
    return re.fullmatch(r"seed[1-9][0-9]*", path.name) is not None


def _seed_folders(out: Path) -> list[Path]:
    """The seed<k> runs inside a seed-0 run's folder, with any --force rerun of one being built there."""
    pattern = re.compile(r"\.?seed[1-9][0-9]*(\.replacing)?")
    return sorted(p for p in out.iterdir() if p.is_dir() and pattern.fullmatch(p.name)) if out.is_dir() else []


def _take_place(staged: Path, out: Path) -> None:
    """Put the finished `staged` run where `out` is, in two renames (the old run is removed only after); the
    seed<k> runs inside the old folder move into the new one first."""
    for seed in _seed_folders(out):
        seed.rename(staged / seed.name)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    staged.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _remove_run(place: Path) -> None:
    """Delete the run in `place`, but not the seed<k> runs inside it."""
    if not place.is_dir():
        return
    keep = _seed_folders(place)
    for child in place.iterdir():
        if child.is_dir() and child not in keep:
            shutil.rmtree(child)
        elif not child.is_dir():
            child.unlink()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


def check_same_config(run: RunDir, cfg: Config) -> None:
    """Refuse to go on with an unfinished run whose recorded config (`config.resolved.yaml`) is not `cfg`,
    naming the keys that changed: its checkpoints and logs were made with the old values."""
    recorded = run.out / "config.resolved.yaml"
    if not recorded.is_file() or recorded.read_text() == config_yaml(cfg):
        return
    old, new = _flat(yaml.safe_load(recorded.read_text()) or {}), _flat(yaml.safe_load(config_yaml(cfg)))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    raise ConfigChangedError(f"{run.out} holds an unfinished run made with another config; changed: "
                             + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
                             + ". Put the old values back to resume it, or pass --force to start it again")


@contextlib.contextmanager
def locked(cfg: Config) -> Iterator[None]:
    """Hold the run's lock while working: a second run of the same experiment and profile stops at once, saying
    which process has it. The lock file (the holder's process id) lives in the system's temporary folder, keyed
    by the run's absolute results path, so a run refused before any work leaves nothing in the project."""
    run = RunDir.of(cfg)
    key = hashlib.sha256(str(run.out.resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "cinelora-locks" / f"{cfg.name}-{cfg.profile}-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RunLockedError(f"{run.out} is in use by process {holder}: another run of {cfg.name} at profile "
                                 f"{cfg.profile} is in progress; wait for it to end (or stop it). Lock: {path}"
                                 ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_root() -> Path:
    """Where encoded training clips are kept for every run (cinelora.latent_cache): `cache/` of the runs' root."""
    return _roots[1] / "cache"


def use_results_root(root: str | Path) -> None:
    """Send this process's runs to `root`/<experiment>/<profile> instead of results/ (their heavy state to
    `root`/.runs): a rerun beside the committed results, which it never touches."""
    root = Path(root)
    _roots[:] = [root, RUNS_ROOT if root.resolve() == RESULTS_ROOT.resolve() else root / ".runs"]


def claim(cfg: Config, force: bool) -> RunDir:
    """The run's folders, ready: a finished run is refused unless `force`, which starts again beside it (the
    finished run is replaced only when the new one finishes, `RunDir.finish`); an unfinished one is kept as it is
    so the run resumes, if it was made with the same config (else ConfigChangedError). Stray temporaries of a
    killed writer are removed. Writes the resolved config."""
    run = RunDir.of(cfg)
    if run.finished and not force:
        raise ResultsExistError(f"{run.out} holds a finished run ({FINISHED_MARKER} exists); pass --force to "
                                "run it again (the finished one stays until the new one finishes), or "
                                "--results-root DIR to rerun it beside it (compared with these results)")
    if force:
        place = run.replaces or run.out
        shutil.rmtree(run.state, ignore_errors=True)
        shutil.rmtree(_replacement(place), ignore_errors=True)
        if (place / FINISHED_MARKER).is_file():  # kept until the new run finishes: a killed rerun loses nothing
            run = RunDir(_replacement(place), run.state, replaces=place)
        else:
            _remove_run(place)
            run = RunDir(place, run.state)
    check_same_config(run, cfg)
    remove_temporaries(run.out)
    run.out.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    return run


__all__ = ["RunDir", "ResultsExistError", "ConfigChangedError", "RunLockedError", "claim", "check_same_config",
           "locked", "use_results_root", "cache_root", "is_seed_folder", "run_folder", "FINISHED_MARKER", "SEED_FOLDER",
           "RESULTS_ROOT", "RUNS_ROOT"]
