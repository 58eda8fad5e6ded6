"""The R-LPIPS training radius, searched on the 2AFC validation sets of a profile whose trunk is not the
published one (`proxy`: the project's AlexNet trunk on procedural 2AFC data).

For each training ε: R-LPIPS heads trained as `rlpips_metric` trains them (its config at that profile, only
`rlpips.attack_eps_255` and `rlpips.attack_step_255` set to ε), then scored on the validation sets clean and
under FGSM/PGD at every `rlpips.eval_eps_255`. One `eps<ε>.csv` (results.METRIC_COLUMNS) and `eps<ε>.json`
(per-epoch training log, provenance) per ε under results/rlpips_eps_search/<profile>/, and `eps_search.md`,
the table of all of them. An ε already searched is kept (`--force` redoes it), so a search stopped midway
continues. The metric run itself uses the profile's ε: this search is the record of how it was chosen.

    python -m cinelora.metrics.rlpips_eps_search --profile proxy --eps 0.5 1 2 4
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd

from cinelora.atomic import atomic_write_text
from cinelora.config import MetricExperimentConfig, load_config
from cinelora.data.bapps import TwoAFCDataset
from cinelora.instrument.loop import training_device
from cinelora.metrics import rlpips
from cinelora.provenance import collect_provenance
from cinelora.results import read_metrics, write_metrics

CONFIG = "experiments/rlpips_metric/config.yaml"
NAME = "rlpips_eps_search"
TABLE = "eps_search.md"


def output_dir(cfg: MetricExperimentConfig, results_root: Path = Path("results")) -> Path:
    return results_root / NAME / cfg.profile


def with_train_eps(cfg: MetricExperimentConfig, eps_255: float) -> MetricExperimentConfig:
    """`cfg` with R-LPIPS trained at radius ε (full-ε sign steps, as the recipe's)."""
    return dataclasses.replace(cfg, rlpips=dataclasses.replace(cfg.rlpips, attack_eps_255=eps_255,
                                                               attack_step_255=eps_255))


def search_one(cfg: MetricExperimentConfig, eps_255: float, out: Path, progress: bool = True) -> Path:
    """Train and score R-LPIPS heads at training radius `eps_255`; returns the CSV written."""
    cfg = with_train_eps(cfg, eps_255)
    r, device = cfg.rlpips, training_device()
    start = time.perf_counter()
    epochs: list[dict] = []
    data = TwoAFCDataset(r.bapps_root, r.train_sets, "train", r.patch_size)
    model, _ = rlpips.train_heads(r, data, adversarial=True, seed=cfg.seed, device=device, progress=progress,
                                  workers=4 if device.type == "cuda" else 0, log=epochs.append)
    trained = time.perf_counter()
    rows = []
    for name in r.val_sets:
        val = TwoAFCDataset(r.bapps_root, [name], "val", r.patch_size)
        scores = rlpips.evaluate_heads(model, val, eps_255=r.eval_eps_255, pgd_steps=r.eval_pgd_steps,
                                       batch_size=r.batch_size, device=device, progress=progress)
        rows += rlpips.score_rows(cfg, "rlpips", name, scores)
    csv, log = (out / f"eps{eps_255:g}{suffix}" for suffix in (".csv", ".json"))
    out.mkdir(parents=True, exist_ok=True)
    record = collect_provenance(cfg, phase_seconds={"train": trained - start, "evaluate": time.perf_counter() - trained},
                                extra={"train_eps_255": eps_255, "train_attack": rlpips.metric_provenance(cfg)["train_attack"],
                                       "trunk": rlpips.trunk_source(r), "data": rlpips.data_source(cfg)})
    atomic_write_text(log, json.dumps({"epochs": epochs, "provenance": record}, indent=1) + "\n")
    write_metrics(rows, csv)  # last: its presence marks this ε done
    return csv


def summary_table(out: Path) -> str:
    """Markdown: per training ε, the 2AFC score (mean over val sets) clean and under PGD at each eval ε, and the
    last epoch's training loss (ln 2 = 0.693 is a metric that gave up: equal distances for every triplet)."""
    frames = []
    for csv in sorted(out.glob("eps*.csv")):
        eps = float(csv.stem[3:])
        table = read_metrics([csv])
        table = table[table.metric == "2afc_rlpips"].groupby("condition").value.mean()
        epochs = json.loads((out / f"{csv.stem}.json").read_text())["epochs"]
        frames.append({"train ε (/255)": eps, **table.to_dict(), "final train loss": epochs[-1]["loss"]})
    if not frames:
        raise FileNotFoundError(f"{out}: no eps*.csv yet (run the search first)")
    df = pd.DataFrame(frames).sort_values("train ε (/255)")
    attacked = sorted((c for c in df.columns if c.startswith("pgd_")), key=lambda c: float(c.split("eps")[1]))
    df = df[["train ε (/255)", "clean", *attacked, "final train loss"]]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(f"{v:g}" if i == 0 else f"{v:.3f}" for i, v in enumerate(row)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cinelora.metrics.rlpips_eps_search", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--profile", default="smoke", choices=("proxy", "smoke"))
    p.add_argument("--eps", type=float, nargs="*", default=[], help="training radii, pixel units x255")
    p.add_argument("--force", action="store_true", help="redo an ε already searched")
    p.add_argument("--results-root", default="results", type=Path)
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.profile)
    if not isinstance(cfg, MetricExperimentConfig):
        p.error(f"{args.config}: kind {cfg.kind!r}, expected a metric experiment")
    out = output_dir(cfg, args.results_root)
    rlpips.prepare_data(cfg)
    for eps in args.eps:
        done = out / f"eps{eps:g}.csv"
        if done.is_file() and not args.force:
            print(f"{done}: searched before, kept (--force redoes it)")
            continue
        print(f"wrote {search_one(cfg, eps, out)}")
    atomic_write_text(out / TABLE, summary_table(out))
    print((out / TABLE).read_text(), end="")


if __name__ == "__main__":
    main()
