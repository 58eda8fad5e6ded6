"""`make gallery`: one static HTML page per profile (study) from results/ only: for each evaluation domain (the
fine-tuning domain first) and method, the run's frame strip (ground truth above generated, clean conditioning
frames: `samples/<domain>.png`) and its metrics, clean and attacked, mean over clips and seeds.

Pages link the strips where the runs wrote them (`../results/...` from `gallery/`), so they open from a clone with
no server; `gallery/index.html` lists the pages. Every page says what its profile's numbers are.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from cinelora.atomic import atomic_write_text
from cinelora.config import PROFILES
from cinelora.results import METRICS, read_results
from cinelora.study import ABLATIONS, METHODS, PROFILE_TEXT, TRAIN_DOMAIN

GALLERY_METRICS = ("lpips", "rlpips", "clip_sim", "frame_consistency", "fvd")
CONDITIONS = ("clean", "attacked")
STYLE = ("body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:6px;vertical-align:top}th{background:#f3f3f3}"
         "img{image-rendering:pixelated;width:320px;display:block}.m td{border:none;padding:1px 6px;"
         "font-size:12px}.note{color:#555;max-width:60em}")


def _order(experiments: set[str]) -> list[str]:
    known = [e for e in (*METHODS, *ABLATIONS) if e in experiments]
    return known + sorted(experiments - set(known))


def _domains(present: set[str]) -> list[str]:
    return ([TRAIN_DOMAIN] if TRAIN_DOMAIN in present else []) + sorted(present - {TRAIN_DOMAIN})


def _metrics_table(rows: pd.DataFrame) -> str:
    means = rows.groupby(["metric", "condition"]).value.mean()
    head = "".join(f"<td><b>{c}</b></td>" for c in CONDITIONS)
    lines = [f"<tr><td></td>{head}</tr>"]
    for metric in GALLERY_METRICS:
        info = METRICS[metric]
        cells = "".join(f"<td>{means[metric, c]:.{info.decimals}f}</td>" if (metric, c) in means else "<td>–</td>"
                        for c in CONDITIONS)
        arrow = "↓" if info.direction == "lower" else "↑"
        lines.append(f"<tr><td>{html.escape(info.label)} {arrow}</td>{cells}</tr>")
    return f"<table class=m>{''.join(lines)}</table>"


def make_page(results: pd.DataFrame, results_root: Path, profile: str, page: Path) -> str:
    """The HTML of one profile's page (written at `page`: its image links are relative to it)."""
    rows = results[(results.profile == profile) & results.condition.isin(CONDITIONS)]
    experiments = _order(set(rows.experiment))
    header = "".join(f"<th>{html.escape(e)}</th>" for e in experiments)
    body = []
    for domain in _domains(set(rows.domain)):
        cells = []
        for experiment in experiments:
            run = rows[(rows.experiment == experiment) & (rows.domain == domain)]
            strip = results_root / experiment / profile / "samples" / f"{domain}.png"
            image = (f'<img src="{html.escape(os.path.relpath(strip, page.parent))}" '
                     f'alt="{html.escape(f"{experiment}, {domain}: ground truth above generated")}">'
                     if strip.is_file() else "<i>no frame strip</i>")
            cells.append(f"<td>{image}{_metrics_table(run)}</td>" if len(run) else "<td>–</td>")
        held = "held in" if domain == TRAIN_DOMAIN else "held out"
        body.append(f"<tr><th>{html.escape(domain)}<br><small>{held}</small></th>{''.join(cells)}</tr>")
    text = PROFILE_TEXT[profile]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>CineLoRA gallery: {profile}</title>"
            f"<style>{STYLE}</style></head><body><h1>CineLoRA gallery: {html.escape(text.title)}</h1>"
            f"<p class=note>{html.escape(text.generator)} Each strip: ground truth (top) and the clip generated from "
            "its clean first frame (bottom). Metrics: mean over clips and seeds, clean and with the conditioning frame "
            "attacked (PGD, the evaluation attack); the runs save strips of clean generations only. "
            f"Fine-tuning domain: {TRAIN_DOMAIN}.</p><table><tr><th>domain</th>{header}</tr>{''.join(body)}</table>"
            "<p class=note>Made by <code>make gallery</code> from results/ (metrics.csv and samples/ of every "
            "finished run).</p></body></html>\n")


def main(results_root: Path, out: Path) -> None:
    """Write `out` (the index) and one `<profile>.html` beside it per profile with generator results."""
    results = read_results(results_root)
    results = results[results.metric.isin(GALLERY_METRICS)]  # generator runs (2AFC rows are not videos)
    profiles = [p for p in PROFILES if p in set(results.profile)]
    links = []
    for profile in profiles:
        page = out.parent / f"{profile}.html"
        atomic_write_text(page, make_page(results, Path(results_root), profile, page))
        links.append(f'<li><a href="{profile}.html">{html.escape(PROFILE_TEXT[profile].title)}</a></li>')
    atomic_write_text(out, f"<!doctype html><html lang=en><head><meta charset=utf-8><title>CineLoRA gallery</title>"
                           f"</head><body><h1>CineLoRA gallery</h1><ul>{''.join(links)}</ul></body></html>\n")
    print(f"wrote {out} and {', '.join(f'{p}.html' for p in profiles)}")
