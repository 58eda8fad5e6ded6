"""What the CSV benchmarks (`terms`, `proxy_loop`, `vae_step`) share: their command-line options and their two
output files, `<out>/<name>_<label>.csv` and its provenance record `<out>/<name>_<label>.json`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cinelora import provenance
from cinelora.atomic import atomic_write_text


def bench_parser(prog: str, doc: str | None, default_profile: str) -> argparse.ArgumentParser:
    """A parser with --profile, --label and --out; the bench adds its own options."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("smoke", "proxy"), default=default_profile)
    parser.add_argument("--label", required=True, help="file suffix, e.g. the device: h200, cpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    return parser


def write_bench_files(out: Path, stem: str, lines: list[str], seconds: float, **facts) -> Path:
    """Write the CSV `lines` (header first) and the run's provenance (`facts`: the config it timed, ...)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.csv"
    atomic_write_text(path, "\n".join(lines) + "\n")
    record = provenance.bench_provenance(seconds, **facts)
    atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path
