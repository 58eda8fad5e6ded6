"""`make gallery`: a page per profile from results/ only, strips linked where the runs wrote them, metrics as the
runs' metrics.csv gives them, unfinished runs left out."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from cinelora.report import gallery

from conftest import ROOT


def _results(tmp: Path, finished: tuple[str, ...], unfinished: tuple[str, ...] = ()) -> Path:
    root = tmp / "results"
    for experiment in finished + unfinished:
        run = root / experiment / "smoke"
        run.mkdir(parents=True)
        for name in ("metrics.csv", "provenance.json"):
            shutil.copy(ROOT / "results" / experiment / "smoke" / name, run)
        shutil.copytree(ROOT / "results" / experiment / "smoke" / "samples", run / "samples")
    for experiment in unfinished:
        (root / experiment / "smoke" / "provenance.json").unlink()
    return root


def test_pages_link_every_strip_and_show_the_runs_metrics(tmp_path):
    root = _results(tmp_path, ("lora_r8", "base"), unfinished=("robust_lpips_r8",))
    out = tmp_path / "gallery" / "index.html"
    gallery.main(root, out)
    assert 'href="smoke.html"' in out.read_text()
    page = (out.parent / "smoke.html").read_text()
    headers = re.findall(r"<th>([a-z0-9_]+)</th>", page)
    assert headers[:3] == ["domain", "base", "lora_r8"] and "robust_lpips_r8" not in page  # study order; unfinished left out
    assert [d for d in ("cinematic", "actors", "photos") if f"<th>{d}<br>" in page] == ["cinematic", "actors",
                                                                                          "photos"]
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 * 3 and all((out.parent / s).resolve().is_file() for s in sources)
    metrics = pd.read_csv(root / "lora_r8" / "smoke" / "metrics.csv")
    for condition in ("clean", "attacked"):
        value = metrics[(metrics.domain == "photos") & (metrics.metric == "lpips")
                        & (metrics.condition == condition)].value.mean()
        assert f"<td>{value:.3f}</td>" in page
    assert "pipeline check only, not evidence" in page
    first = page
    gallery.main(root, out)
    assert (out.parent / "smoke.html").read_text() == first  # the same results give the same page
