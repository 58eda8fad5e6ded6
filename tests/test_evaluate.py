"""The evaluation loop at smoke scale: tidy rows for every metric and condition, generation cache reuse,
and the CLI's refusal to overwrite finished metrics without --force."""
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
import pytest

from cinelora import evaluate as ev
from cinelora.cli import main

from conftest import ROOT

PER_CLIP = {"lpips", "clip_sim", "frame_consistency", "temporal_lpips_gap", "flicker"}


@pytest.fixture(scope="module")
def cfg(tiny_world):
    base = tiny_world("base", ["actors"], {"test": 2})
    return dataclasses.replace(base, eval=dataclasses.replace(base.eval, clips_per_domain=2, rlpips_heads="",
                                                              attack_steps=1))


def test_rows_cover_every_metric_and_condition_and_the_cache_is_reused(cfg, tmp_path, monkeypatch):
    rows = ev.evaluate(cfg, None, tmp_path / "cache", tmp_path / "samples", progress=False)
    got = {(r["condition"], r["metric"]) for r in rows}
    for condition in ("clean", "attacked"):
        assert {(condition, m) for m in PER_CLIP | {"fvd", "fvd_clips"}} <= got
    assert (tmp_path / "samples" / "actors.png").is_file()
    clean = {r["metric"]: r["value"] for r in rows if r["condition"] == "clean"}
    attacked = {r["metric"]: r["value"] for r in rows if r["condition"] == "attacked"}
    assert clean["lpips"] != attacked["lpips"]  # the attack changed the generated clip

    def no_generation(*args, **kwargs):
        raise AssertionError("a cached clip was generated again")

    monkeypatch.setattr(ev, "generate_clips", no_generation)
    assert ev.evaluate(cfg, None, tmp_path / "cache", None, progress=False) == rows


def _base_with_one_clip(folder: Path) -> Path:
    """`base` and its parent copied under `folder`, evaluating one clip per domain and no R-LPIPS rows."""
    for name in ("lora_r8", "base"):
        (folder / name).mkdir()
        (folder / name / "config.yaml").write_text((ROOT / "experiments" / name / "config.yaml").read_text())
    config = folder / "base" / "config.yaml"
    config.write_text(config.read_text() + 'profiles:\n  smoke: {eval.clips_per_domain: 1, eval.rlpips_heads: ""}\n')
    return config


def test_cli_evaluate_refuses_to_overwrite_without_force(cfg, tmp_path, monkeypatch):
    config = _base_with_one_clip(tmp_path)
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or [
        {"experiment": "base", "profile": "smoke", "seed": 0, "domain": "actors", "clip": "c0",
         "condition": "clean", "metric": "lpips", "value": 0.5}])
    args = ["evaluate", "--config", str(config), "--profile", "smoke"]
    metrics = tmp_path / "results" / "base" / "smoke" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("left by a run killed before its provenance.json\n")  # unfinished: not taken as done
    main(args)
    first = metrics.read_bytes()
    with pytest.raises(SystemExit, match="--force"):
        main(args)
    assert metrics.read_bytes() == first and len(calls) == 1
    main(args + ["--force"])
    assert len(calls) == 2 and os.path.isfile(metrics)
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))  # killed
    with pytest.raises(KeyboardInterrupt):
        main(args + ["--force"])
    assert metrics.is_file() and not (metrics.parent / "provenance.json").exists()  # not taken for finished


def test_a_corrupt_evaluation_clip_stops_the_run_before_training(tiny_world, tmp_path, monkeypatch):
    from cinelora import runner
    from cinelora.data.videos import VideoDataError

    cfg = tiny_world("lora_r8", ["cinematic"], {"train": 2, "val": 1, "test": 1})
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, rlpips_heads=""))
    bad = sorted(Path(cfg.eval.domains["cinematic"]).glob("*.avi"))[0]
    bad.write_bytes(b"not a video")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "_train", lambda *a, **k: pytest.fail("trained before probing the test clips"))
    with pytest.raises(VideoDataError, match=rf"{bad.name}: cannot be decoded"):
        runner.run_generator(cfg, "config.yaml", force=False)


def test_sample_strips_name_their_rows_and_the_fvd_warning_is_said_once(cfg, tmp_path, capsys):
    from PIL import Image

    from cinelora.results import SAMPLE_LABEL_WIDTH

    ev.evaluate(cfg, None, tmp_path / "cache", tmp_path / "samples", progress=False)
    strip = np.asarray(Image.open(tmp_path / "samples" / "actors.png").convert("RGB"))
    margin = strip[:, :SAMPLE_LABEL_WIDTH]
    assert (margin < 128).any() and (margin == 255).mean() > 0.5  # dark row names on a white margin
    halves = np.array_split(margin, 2)  # one name a row: "ground truth" is longer than "generated"
    assert (halves[0] < 128).any(axis=(0, 2)).sum() > (halves[1] < 128).any(axis=(0, 2)).sum()
    said = capsys.readouterr()
    assert (said.out + said.err).count("dominated by sample-size bias") == 1  # 2 FVDs (clean, attacked), one line


def test_a_rerun_beside_the_committed_results_is_compared_with_them(tmp_path, monkeypatch, capsys):
    from cinelora import rundir

    config = _base_with_one_clip(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir, "_roots", list(rundir._roots))  # the CLI's --results-root sets them per process
    values = iter([0.5, 0.5, 0.25])
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: [
        {"experiment": "base", "profile": "smoke", "seed": 0, "domain": "actors", "clip": "c0",
         "condition": "clean", "metric": "lpips", "value": next(values)}])
    args = ["evaluate", "--config", str(config), "--profile", "smoke"]
    main(args)  # the committed results
    committed = (tmp_path / "results" / "base" / "smoke" / "metrics.csv").read_bytes()
    with pytest.raises(SystemExit, match="--results-root DIR to rerun it beside it"):
        main(args)
    main(args + ["--results-root", "rerun"])
    assert "compared with results/base/smoke/metrics.csv: all 1 values identical" in capsys.readouterr().out
    main(args + ["--results-root", "rerun2"])
    assert "1 of 1 values differ (largest |difference| 0.250000)" in capsys.readouterr().out
    assert (tmp_path / "results" / "base" / "smoke" / "metrics.csv").read_bytes() == committed
    assert (tmp_path / "rerun" / "base" / "smoke" / "provenance.json").is_file()


def test_lpips_rows_score_with_the_heads_the_config_names(cfg):
    """eval.lpips_heads: a trained heads file (the proxy trunk needs its own heads), or "" for the shipped ones."""
    from cinelora.metrics.lpips_distance import read_heads

    heads = ROOT / "results" / "rlpips_metric" / "smoke" / "heads_lpips.safetensors"
    named = ev.build_evaluators(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, lpips_heads=str(heads))),
                                "cpu").lpips.state_dict()
    shipped = ev.build_evaluators(cfg, "cpu").lpips.state_dict()
    stored = read_heads("alex", heads)
    assert stored and all(torch.equal(named[k], v.float()) for k, v in stored.items())
    assert any(not torch.equal(shipped[k], v.float()) for k, v in stored.items())


def test_a_batch_of_clips_is_attacked_as_each_clip_alone(cfg, smoke_components):
    data = ev._dataset(cfg, cfg.eval.domains["actors"])
    items, indices = [data[i] for i in range(2)], [11, 22]
    steps = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, attack_steps=3))
    together = ev.attacked_conditions(smoke_components, items, steps, indices)
    alone = torch.cat([ev.attacked_conditions(smoke_components, [it], steps, [i]) for it, i in zip(items, indices)])
    clean = torch.stack([it["condition"] for it in items])
    eps = 2 * steps.eval.attack_eps_255 / 255  # in [-1, 1]
    assert (together - clean).abs().max() <= eps + 1e-6 and not torch.equal(together, clean)
    # the same frames but where a gradient entry is ~0 and float order flips its sign
    assert (together - alone).abs().gt(1e-6).float().mean() < 1e-3


def test_clip_metrics_of_a_batch_equal_each_clip_scored_alone(cfg):
    evaluators = ev.build_evaluators(cfg, "cpu")
    g = torch.Generator().manual_seed(0)
    generated, reference = (torch.rand(3, 5, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    captions = ["a red ball rolls left", "a blue cube", "a dancer turns"]
    together = ev.clip_metrics(evaluators, generated, reference, captions)
    alone = [ev.clip_metrics(evaluators, generated[i:i + 1], reference[i:i + 1], captions[i:i + 1])[0]
             for i in range(3)]
    assert [set(row) for row in together] == [PER_CLIP] * 3
    for row, single in zip(together, alone):
        assert row == pytest.approx(single, abs=1e-5)
    assert together[0] != pytest.approx(together[1], abs=1e-5)  # the clips differ, so must their scores


def test_metric_groups_cover_every_clip_once_within_the_pixel_budget():
    clip = 17 * 64 * 64
    groups = ev.metric_groups(5000, clip)
    assert [i for g in groups for i in g] == list(range(5000))
    assert max(len(g) for g in groups) * clip <= ev.METRIC_PIXELS < (max(len(g) for g in groups) + 1) * clip
    assert ev.metric_groups(3, ev.METRIC_PIXELS * 2) == [range(0, 1), range(1, 2), range(2, 3)]
