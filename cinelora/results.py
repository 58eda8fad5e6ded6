"""The tidy metrics format of `metrics.csv` (columns and metric names defined in results/SCHEMA.md): checked
rows written in one canonical form, and read back checked. The run folder itself is `cinelora.runner`'s."""
from __future__ import annotations

import csv
import io
import math
import numbers
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from cinelora.atomic import atomic_write_text
from cinelora.config import PROFILES
from cinelora.rundir import FINISHED_MARKER, is_seed_folder

METRIC_COLUMNS = ("experiment", "profile", "seed", "domain", "clip", "condition", "metric", "value")
KEY_COLUMNS = METRIC_COLUMNS[:-1]
CONDITIONS = ("clean", "attacked")
# Metric-robustness rows (rlpips_metric) name the attack on the 2AFC reference and its L∞ radius in pixel
# units x255, e.g. `pgd_eps4` (cinelora.metrics.rlpips.condition_name).
# samples/<domain>.png: the rows of a frame strip, top to bottom, named in a left margin of this many pixels
SAMPLE_ROWS = ("ground truth", "generated")
SAMPLE_LABEL_WIDTH = 72
ATTACK_CONDITION = re.compile(r"(fgsm|pgd)_eps(0|[1-9][0-9]*)(\.[0-9]+)?")


@dataclass(frozen=True)
class Metric:
    """How to read one metric name: `direction` is "lower" or "higher" (which is better)."""

    label: str  # LaTeX column label
    direction: str
    decimals: int  # digits shown in tables (the CSV always keeps 6)
    unit: str


# Every metric name a metrics.csv may hold; results/SCHEMA.md defines each (a test keeps them in step).
METRICS: dict[str, Metric] = {
    "lpips": Metric(label="LPIPS", direction="lower", decimals=3, unit="unitless"),
    "rlpips": Metric(label="R-LPIPS", direction="lower", decimals=3, unit="unitless"),
    "fvd": Metric(label="FVD", direction="lower", decimals=1, unit="squared I3D logit units"),
    "fvd_clips": Metric(label="FVD N", direction="higher", decimals=0, unit="clips"),
    "clip_sim": Metric(label="CLIP-SIM", direction="higher", decimals=3, unit="cosine"),
    "frame_consistency": Metric(label="CLIP frame cons.", direction="higher", decimals=3, unit="cosine"),
    "temporal_lpips_gap": Metric(label="tLPIPS gap", direction="lower", decimals=3, unit="unitless"),
    "flicker": Metric(label="Flicker", direction="lower", decimals=4, unit="luma"),
    "2afc_lpips": Metric(label="2AFC LPIPS", direction="higher", decimals=3, unit="fraction"),
    "2afc_rlpips": Metric(label="2AFC R-LPIPS", direction="higher", decimals=3, unit="fraction"),
    "dist_shift_lpips": Metric(label="LPIPS shift", direction="lower", decimals=3, unit="LPIPS distance"),
    "dist_shift_rlpips": Metric(label="R-LPIPS shift", direction="lower", decimals=3, unit="R-LPIPS distance"),
    "rel_dist_shift_lpips": Metric(label="LPIPS rel. shift", direction="lower", decimals=3, unit="fraction"),
    "rel_dist_shift_rlpips": Metric(label="R-LPIPS rel. shift", direction="lower", decimals=3, unit="fraction"),
}


def sample_strip(frames: np.ndarray, rows: tuple[str, ...] = SAMPLE_ROWS) -> Image.Image:
    """`samples/<domain>.png` from its frames, uint8 [H, W, 3] with `rows` (equal heights) stacked top to bottom,
    each row named in a white left margin of `SAMPLE_LABEL_WIDTH` pixels."""
    strip = Image.new("RGB", (SAMPLE_LABEL_WIDTH + frames.shape[1], frames.shape[0]), "white")
    strip.paste(Image.fromarray(frames), (SAMPLE_LABEL_WIDTH, 0))
    draw, height = ImageDraw.Draw(strip), frames.shape[0] // len(rows)
    for row, label in enumerate(rows):
        draw.text((2, row * height + height // 2), label, fill="black", anchor="lm", font=ImageFont.load_default())
    return strip


def _check_text(row: dict, column: str, where: str) -> None:
    value = row[column]
    if not isinstance(value, str) or not value or value != value.strip() or "\n" in value:
        raise ValueError(f"{where}: column '{column}': found {value!r}, expected a non-empty one-line string")


def _check_row(row: dict, where: str) -> None:
    if not isinstance(row, dict) or set(row) != set(METRIC_COLUMNS):
        keys = set(row) if isinstance(row, dict) else set()
        raise ValueError(f"{where}: columns must be exactly {list(METRIC_COLUMNS)}; "
                         f"missing {sorted(set(METRIC_COLUMNS) - keys)}, unexpected {sorted(keys - set(METRIC_COLUMNS))}")
    for column in ("experiment", "domain", "clip", "metric"):
        _check_text(row, column, where)
    if row["profile"] not in PROFILES:
        raise ValueError(f"{where}: column 'profile': found {row['profile']!r}, expected one of {list(PROFILES)}")
    if row["condition"] not in CONDITIONS and not ATTACK_CONDITION.fullmatch(row["condition"]):
        raise ValueError(f"{where}: column 'condition': found {row['condition']!r}, expected one of {list(CONDITIONS)} "
                         "or an attack condition like 'pgd_eps4' / 'fgsm_eps0.5'")
    if row["metric"] not in METRICS:
        raise ValueError(f"{where}: column 'metric': found {row['metric']!r}, expected one of {sorted(METRICS)} "
                         "(a new metric goes into METRICS in cinelora/results.py and results/SCHEMA.md)")
    seed = row["seed"]
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{where}: column 'seed': found {seed!r}, expected an integer >= 0")
    value = row["value"]
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{where}: column 'value': found {value!r}, expected a finite number")


def _row_key(row: dict) -> tuple:
    return tuple(int(row[c]) if c == "seed" else row[c] for c in KEY_COLUMNS)


def write_metrics(rows: list[dict], path: Path) -> None:
    """Validate tidy metric rows, sort them by every key column and write a plain CSV atomically.

    Values are written with `%.6f` so the same numbers always give the same bytes.
    """
    for index, row in enumerate(rows):
        _check_row(row, f"metrics row {index}")
    ordered = sorted(rows, key=_row_key)
    for previous, row in zip(ordered, ordered[1:]):
        if _row_key(previous) == _row_key(row):
            raise ValueError(f"metrics rows: duplicate key {dict(zip(KEY_COLUMNS, _row_key(row)))}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in ordered:
        writer.writerow([*(int(row[c]) if c == "seed" else row[c] for c in KEY_COLUMNS), "%.6f" % float(row["value"])])
    atomic_write_text(path, buffer.getvalue())


def _read_one(path: Path) -> pd.DataFrame:
    # csv, not pandas.read_csv: pandas silently pads short rows and turns extra fields into an index.
    records = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if tuple(header) != METRIC_COLUMNS:
            raise ValueError(f"{path}: header {header} does not match the metrics schema {list(METRIC_COLUMNS)}")
        for line, fields in enumerate(reader, start=2):
            where = f"{path}: line {line}"
            if len(fields) != len(METRIC_COLUMNS):
                raise ValueError(f"{where}: {len(fields)} fields, expected {len(METRIC_COLUMNS)}")
            row = dict(zip(METRIC_COLUMNS, fields))
            try:
                row["seed"], row["value"] = int(row["seed"]), float(row["value"])
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            _check_row(row, where)
            records.append(row)
    return pd.DataFrame(records, columns=list(METRIC_COLUMNS)).astype({"seed": "int64", "value": "float64"})


def _combine(frames: list[pd.DataFrame], paths: list[Path]) -> pd.DataFrame:
    metrics = pd.concat(frames, ignore_index=True)
    duplicated = metrics.duplicated(list(KEY_COLUMNS))
    if duplicated.any():
        raise ValueError(f"metrics files {[str(p) for p in paths]}: duplicate key "
                         f"{metrics.loc[duplicated, list(KEY_COLUMNS)].iloc[0].to_dict()}")
    return metrics.sort_values(list(KEY_COLUMNS), kind="stable", ignore_index=True)


def read_metrics(paths: Iterable[Path]) -> pd.DataFrame:
    """Read metrics.csv files into one frame sorted by the key columns; a wrong header names its file."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_metrics: no metrics.csv files given")
    return _combine([_read_one(p) for p in paths], paths)


def run_folder_key(folder: Path) -> tuple[str, str, int]:
    """(experiment, profile, seed) of a run's results folder: `<experiment>/<profile>` (seed 0) or
    `<experiment>/<profile>/seed<k>` (cinelora.rundir's layout)."""
    if is_seed_folder(folder):
        return folder.parent.parent.name, folder.parent.name, int(folder.name.removeprefix("seed"))
    return folder.parent.name, folder.name, 0


def read_results(results_root: Path) -> pd.DataFrame:
    """Every finished run's `metrics.csv` (`results_root/<experiment>/<profile>/`, and `seed<k>/` inside for the
    runs of further seeds), checked to hold only its own run's rows. A folder without `provenance.json` (written
    last) is an unfinished run: skipped, and said on stderr."""
    paths = []
    found_paths = [*Path(results_root).glob("*/*/metrics.csv"), *Path(results_root).glob("*/*/seed*/metrics.csv")]
    for path in sorted(found_paths):
        if path.parent.name.startswith(".") or (path.parent.name.startswith("seed") and
                                                not is_seed_folder(path.parent)):
            continue  # a --force rerun being built beside a finished run
        if (path.parent / FINISHED_MARKER).is_file():
            paths.append(path)
        else:
            print(f"{path.parent}: unfinished run (no {FINISHED_MARKER}): its metrics.csv is left out", file=sys.stderr)
    if not paths:
        raise FileNotFoundError(f"no {results_root}/<experiment>/<profile>/metrics.csv found")
    frames = []
    for path in paths:
        frame = _read_one(path)
        expected = run_folder_key(path.parent)
        found = set(zip(frame["experiment"], frame["profile"], frame["seed"].astype(int)))
        if found - {expected}:
            raise ValueError(f"{path}: rows name (experiment, profile, seed) {sorted(found - {expected})}, "
                             f"but the folder says {expected}")
        frames.append(frame)
    return _combine(frames, paths)


__all__ = [
    "METRIC_COLUMNS", "KEY_COLUMNS", "CONDITIONS", "ATTACK_CONDITION", "METRICS", "Metric", "SAMPLE_ROWS",
    "SAMPLE_LABEL_WIDTH", "sample_strip", "write_metrics",
    "read_metrics", "read_results", "run_folder_key",
]
