"""The proxy evaluators (experiments/proxy_evaluators): one smoke run end to end, whose files the full profile's
loaders must read (load_i3d, load_clip, LPIPS's trunk loader); the parts the numbers rest on (recall@k and its
chance, the corruptions, the labels, the I3D width read from a file); the config's rules."""
from __future__ import annotations

import hashlib
import itertools
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from cinelora import runner
from cinelora.config import ConfigError, load_config
from cinelora.instrument import clip_training, evaluators, fvd_sanity
from cinelora.instrument.attributes import IGNORE, LabelSpace, canonical_camera
from cinelora.metrics import i3d
from cinelora.metrics.clip_sim import image_embeddings, load_clip
from cinelora.metrics.fvd import i3d_features
from cinelora.metrics.lpips_distance import build_lpips, new_lpips
from cinelora.rundir import RunDir

from conftest import ROOT

CONFIG = ROOT / "experiments" / "proxy_evaluators" / "config.yaml"
# every file a finished run leaves in its results folder, at any profile (smoke writes what proxy writes)
RUN_FILES = {
    "config.resolved.yaml", "config.sha256", "provenance.json", "chunks.json", "evaluators.md",
    "i3d.safetensors", "i3d.json", "i3d_log.jsonl", "i3d_accuracy.csv", "i3d_accuracy.png",
    "fvd_sanity.csv", "fvd_sanity.png",
    "clip.json", "clip_log.jsonl", "clip_recall.csv", "clip_recall.png", "clip/config.json", "clip/model.safetensors",
    "clip/processor_config.json", "clip/tokenizer.json", "clip/tokenizer_config.json",
    "alexnet_trunk.safetensors", "alexnet_trunk.json", "trunk_log.jsonl", "trunk_accuracy.csv", "trunk_accuracy.png",
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(config, run folders) of one smoke run of the experiment, made in a temporary working folder."""
    cfg = load_config(CONFIG, "smoke")
    folder = tmp_path_factory.mktemp("proxy_evaluators")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        runner.run_experiment(cfg, str(CONFIG), force=False)
        yield cfg, RunDir(folder / "results" / cfg.name / "smoke", folder / "runs" / cfg.name / "smoke")


def test_a_smoke_run_writes_every_file_and_finishes(smoke_run):
    _, run = smoke_run
    written = {str(p.relative_to(run.out)) for p in run.out.rglob("*") if p.is_file()}
    assert written == RUN_FILES
    provenance = run.read_json("provenance.json")
    assert provenance["extra"]["chunks"][-1]["finished"] is True
    assert set(provenance["extra"]["weights"]) == {"i3d", "clip", "trunk"}
    for key in evaluators.SIDECARS:  # each sidecar's sha256 is the file's as written
        record = evaluators.read_sidecar(run, key)
        for name, facts in record["files"].items():
            assert facts["sha256"] == hashlib.sha256((run.out / name).read_bytes()).hexdigest() and facts["bytes"] > 0
        assert record["provenance"]["config_sha256"] == (run.out / "config.sha256").read_text().strip()


def test_the_saved_i3d_loads_through_load_i3d_and_gives_its_logits_as_fvd_features(smoke_run):
    cfg, run = smoke_run
    sidecar = evaluators.read_sidecar(run, "i3d")
    assert load_file(run.out / evaluators.I3D_FILE)["Conv3d_1a_7x7.conv3d.weight"].dtype == torch.bfloat16
    model = i3d.load_i3d(run.out / evaluators.I3D_FILE, cfg.i3d.release)
    assert model.Conv3d_1a_7x7.conv3d.out_channels == 64 // cfg.i3d.width_divisor  # the width, read from the file
    assert next(model.parameters()).dtype == torch.float32
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {i3d.RELEASES["pytorch-i3d"][1]}
    logits = sidecar["architecture"]["logits"]
    assert logits == sum(len(c) for c in sidecar["labels"].values()) == max(b for _, b in sidecar["logit_blocks"].values())
    features = i3d_features(model, torch.rand(3, 3, 9, 32, 32) * 2 - 1)
    assert features.shape == (3, logits) and torch.isfinite(features).all()
    assert i3d_features(model, torch.empty(0, 3, 9, 32, 32)).shape == (0, logits)


def test_the_clip_folder_loads_through_load_clip_in_float32(smoke_run):
    cfg, run = smoke_run
    model, processor = load_clip(run.out / evaluators.CLIP_DIR)
    assert next(model.parameters()).dtype == torch.float32  # stored bf16, config float32: loaded upcast
    assert load_file(run.out / "clip" / "model.safetensors")["logit_scale"].dtype == torch.bfloat16
    assert model.config.vision_config.image_size == cfg.corpus.height
    embeddings = image_embeddings(model, processor, torch.rand(2, 3, cfg.corpus.height, cfg.corpus.width) * 2 - 1)
    assert embeddings.shape == (2, cfg.clip.projection_dim)
    rows = evaluators.read_rows(run.out / evaluators.TABLES["clip"])
    assert {(r["direction"], r["k"]) for r in rows} == {("t2i", 1), ("t2i", 5), ("i2t", 1), ("i2t", 5)}
    assert all(0 <= r["recall"] <= 1 and r["pairs"] == cfg.clip.retrieval_pairs for r in rows)


def test_the_trunk_file_is_what_lpips_builds_as_its_backbone(smoke_run):
    _, run = smoke_run
    path = run.out / evaluators.TRUNK_FILE
    stored = load_file(path)
    assert sorted(stored) == sorted(f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias"))
    trunk = new_lpips("alex", str(path), seed=0).net.state_dict()
    for key, value in trunk.items():  # slice<k>.<i>.* ← features.<i>.*, upcast
        assert torch.equal(value, stored["features." + key.split(".", 1)[1]].float())
    random_trunk = new_lpips("alex", "random", seed=0).net.state_dict()
    assert not torch.equal(trunk["slice1.0.weight"], random_trunk["slice1.0.weight"])
    metric = build_lpips("alex", str(path), 0)  # the path every experiment's config takes (shipped heads)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert metric(x, x).abs().max() < 1e-6 and (metric(x, x.flip(0)) > 0).all()


def test_fvd_sanity_rows_have_every_corruption_at_every_strength_and_the_floor_is_below_the_strongest(smoke_run):
    cfg, run = smoke_run
    rows = evaluators.read_rows(run.out / evaluators.TABLES["fvd"])
    s = cfg.fvd_sanity
    floor = [r for r in rows if r["corruption"] == "none"]
    assert [r["split"] for r in floor] == list(range(s.floor_splits)) and {r["strength"] for r in floor} == {0.0}
    for name, strengths in s.strengths.items():
        assert [r["strength"] for r in rows if r["corruption"] == name] == strengths
    assert {r["domain"] for r in rows} == set(s.domains)
    assert all(r["clips_a"] == r["clips_b"] == s.clips and r["fvd"] >= 0 for r in rows)
    strongest = [r["fvd"] for r in rows if r["corruption"] != "none" and r["strength"] == s.strengths[r["corruption"]][-1]]
    assert floor[0]["fvd"] < max(strongest)
    checks = fvd_sanity.sanity_checks(rows)
    assert len(checks) == len(s.domains) * len(s.strengths) and all(c["floor"] == floor[0]["fvd"] for c in checks)


def test_accuracy_tables_list_every_label_set_with_its_chance(smoke_run):
    cfg, run = smoke_run
    for key, sets in (("i3d", cfg.i3d.label_sets), ("trunk", cfg.trunk.label_sets)):
        rows = evaluators.read_rows(run.out / evaluators.TABLES[key])
        assert [r["label_set"] for r in rows] == sets
        assert all(0 <= r["accuracy"] <= 1 and r["chance_uniform"] == pytest.approx(1 / r["classes"], abs=1e-6)
                   for r in rows)


def test_a_finished_run_is_kept_and_a_passed_deadline_stops_a_run_resumably(smoke_run, tmp_path, monkeypatch):
    cfg, run = smoke_run
    with pytest.raises(runner.ResultsExistError), pytest.MonkeyPatch.context() as mp:
        mp.chdir(run.out.parents[2])
        runner.run_experiment(cfg, str(CONFIG), force=False)
    from cinelora.instrument.loop import Deadline

    monkeypatch.chdir(tmp_path)
    deadline = Deadline(1e-9)  # already passed: the first phase checkpoints at once and stops
    fresh = RunDir(tmp_path / "results", tmp_path / "runs")
    assert evaluators.run_evaluators(cfg, fresh, deadline, progress=False) is False
    assert not (fresh.out / evaluators.SIDECARS["i3d"]).exists()
    assert (fresh.state / "i3d_checkpoints" / "step_0000000" / "state.json").is_file()


# --- the parts -------------------------------------------------------------------------------------------------


def test_recall_at_k_on_a_constructed_case():
    # 4 pairs in 2-d: caption i's embedding is nearest to image order [1, 0, 2, 3] rotated, so t2i@1 hits 2 of 4
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), dim=1)
    texts = torch.nn.functional.normalize(torch.tensor([[0.1, 1.0], [0.0, 1.0], [-1.0, 0.1], [0.1, -1.0]]), dim=1)
    captions = ["a", "b", "c", "d"]
    recall = clip_training.retrieval_recall(images, texts, captions, ks=(1, 2))
    # text 0 → image 1 (miss), 1 → 1 (hit), 2 → 2 (hit), 3 → 3 (hit); image 1's nearest text is 1 (0 ties lower)
    assert recall["t2i", 1] == 0.75
    assert recall["t2i", 2] == 1.0  # text 0's second-nearest image is image 0
    i2t = (texts @ images.T).T.argmax(1)
    assert recall["i2t", 1] == float((i2t == torch.arange(4)).float().mean())
    # repeated captions: a retrieved item counts when its caption is the query's
    assert clip_training.retrieval_recall(images, texts, ["a", "a", "c", "d"], ks=(1,))["t2i", 1] == 1.0


def test_chance_recall_equals_the_mean_over_every_ranking():
    captions = ["x", "x", "y", "z", "z", "z"]
    for k in (1, 2, 5):
        hits = []
        for query in range(len(captions)):
            subsets = list(itertools.combinations(range(len(captions)), k))
            hits.append(sum(any(captions[j] == captions[query] for j in s) for s in subsets) / len(subsets))
        assert clip_training.chance_recall(captions, k) == pytest.approx(sum(hits) / len(hits))
    assert clip_training.chance_recall([str(i) for i in range(10)], 5) == pytest.approx(5 / 10)


def test_clip_training_preprocessing_is_the_processors():
    _, processor = clip_training.build_clip(load_config(CONFIG, "smoke").clip, 32, seed=0)
    frames = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    expected = processor.image_processor(images=list(frames.permute(0, 3, 1, 2).float() / 255), do_rescale=False,
                                         return_tensors="pt")["pixel_values"]
    assert torch.allclose(clip_training.pixel_values(processor, frames), expected, atol=1e-5)


def test_corruptions_do_what_they_say():
    clips = torch.randint(0, 256, (2, 8, 16, 16, 3), dtype=torch.uint8)
    real = clips.float() / 255 * 2 - 1  # [N, T, H, W, 3] in [-1, 1]
    as_frames = lambda video: video.permute(0, 2, 3, 4, 1)  # [N, 3, T, H, W] → [N, T, H, W, 3]
    assert torch.allclose(as_frames(fvd_sanity.corrupt(clips, "noise", 0.0, 0)), real)
    shuffled = as_frames(fvd_sanity.corrupt(clips, "shuffle", 1.0, 0))
    for n in range(2):  # every frame leaves its place, the frames stay the clip's
        assert all(not torch.equal(shuffled[n, t], real[n, t]) for t in range(8))
        assert sorted(shuffled[n].sum((1, 2, 3)).tolist()) == pytest.approx(sorted(real[n].sum((1, 2, 3)).tolist()))
    half = as_frames(fvd_sanity.corrupt(clips, "shuffle", 0.5, 0))
    assert sum(not torch.equal(half[0, t], real[0, t]) for t in range(8)) == 4
    frozen = as_frames(fvd_sanity.corrupt(clips, "freeze", 1.0, 0))
    assert all(torch.equal(frozen[:, t], real[:, 0]) for t in range(8))
    late = as_frames(fvd_sanity.corrupt(clips, "freeze", 0.5, 0))
    assert torch.equal(late[:, :4], real[:, :4]) and torch.equal(late[:, 7], real[:, 4])
    grey = torch.full((1, 4, 8, 8, 3), 128, dtype=torch.uint8)
    shifted = as_frames(fvd_sanity.corrupt(grey, "colour", 0.1, 0))
    assert shifted.mean(-1).sub(grey.float().mean() / 255 * 2 - 1).abs().max() < 1e-5  # hue, not brightness
    assert (shifted - (grey.float() / 255 * 2 - 1)).abs().max() > 0.05
    assert torch.allclose(as_frames(fvd_sanity.corrupt(grey, "blur", 2.0, 0)), grey.float() / 255 * 2 - 1, atol=1e-5)
    noisy = [as_frames(fvd_sanity.corrupt(clips, "noise", s, 0)) for s in (0.02, 0.1)]
    assert (noisy[0] - real).abs().mean() < (noisy[1] - real).abs().mean()
    # clip i draws from (seed, first + i): a set corrupted in two batches is the set corrupted at once
    whole = fvd_sanity.corrupt(clips, "noise", 0.1, 3)
    assert torch.equal(torch.cat([fvd_sanity.corrupt(clips[:1], "noise", 0.1, 3),
                                  fvd_sanity.corrupt(clips[1:], "noise", 0.1, 3, first=1)]), whole)


def test_labels_name_the_camera_by_direction_and_ignore_what_does_not_apply():
    assert [canonical_camera(m) for m in ("camera pans left", "slow dolly in", "slow tilt up", "static camera",
                                          "slow zoom out")] == ["pan left", "zoom in", "tilt up", "static", "zoom out"]
    attributes = [{"domain": "studio", "camera": {"move": "camera pans left"},
                   "objects": [{"motion": "spins", "shape": "ring", "colour": "red"}], "backdrop": {"kind": "plain"}},
                  {"domain": "stills", "camera": {"move": "slow zoom in"}, "photo": "brick"}]
    space = LabelSpace.from_attributes(["domain", "motion", "object", "colour"], attributes)
    assert space.classes["object"] == ("brick", "ring") and space.classes["motion"] == ("spins",)
    targets = space.encode(attributes)
    assert targets.tolist() == [[1, 0, 1, 0], [0, IGNORE, 0, IGNORE]]  # classes sorted: stills < studio
    loss, terms = space.loss(torch.zeros(1, space.total), targets[1:])  # a batch where motion never applies
    assert torch.isfinite(loss) and "ce_motion" not in terms and terms["ce_domain"] == pytest.approx(math.log(2))
    unknown = space.encode([{**attributes[0], "domain": "figures"}])
    assert unknown[0, 0] == IGNORE  # a class the training corpus lacks


def test_load_i3d_reads_the_width_and_head_of_a_width_scaled_file(tmp_path):
    model = i3d.InceptionI3d(num_classes=30, width_divisor=4)
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()},
              tmp_path / "small.safetensors")
    loaded = i3d.load_i3d(tmp_path / "small.safetensors", "pytorch-i3d")
    assert loaded.logits.conv3d.out_channels == 30 and loaded.Mixed_5c.b0.conv3d.out_channels == 384 // 4
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    state = model.state_dict()
    state["Mixed_4b.b1b.conv3d.weight"] = state["Mixed_4b.b1b.conv3d.weight"][:10]  # inconsistent widths
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match=r"width 1/4 and a 30-class head.*wrong shapes .*Mixed_4b\.b1b"):
        i3d.load_i3d(tmp_path / "broken.safetensors", "pytorch-i3d")
    with pytest.raises(ValueError, match="width_divisor 3"):
        i3d.InceptionI3d(width_divisor=3)


# --- the config -------------------------------------------------------------------------------------------------


def _variant(tmp_path, change) -> str:
    raw = yaml.safe_load(CONFIG.read_text())
    change(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_the_config_is_refused_at_full_and_never_trains_on_photos(tmp_path):
    with pytest.raises(ConfigError, match="profile.*proxy or smoke"):
        load_config(CONFIG, "full")
    with pytest.raises(ConfigError, match=r"corpus\.domains.*photos"):
        load_config(_variant(tmp_path, lambda raw: raw["corpus"]["domains"].append("photos")), "proxy")
    with pytest.raises(ConfigError, match=r"fvd_sanity\.strengths\.shuffle"):
        load_config(_variant(tmp_path, lambda raw: raw["fvd_sanity"]["strengths"].update(shuffle=[0.5, 1.5])),
                    "proxy")
    with pytest.raises(ConfigError, match=r"fvd_sanity\.strengths"):
        load_config(_variant(tmp_path, lambda raw: raw["fvd_sanity"]["strengths"].pop("freeze")), "proxy")
    with pytest.raises(ConfigError, match=r"i3d\.label_sets"):
        load_config(_variant(tmp_path, lambda raw: raw["i3d"].update(label_sets=["domain", "backdrop"])), "proxy")


def test_the_config_mirrors_the_i3d_module_and_the_proxy_metric_names_the_trunk():
    from cinelora import config
    from cinelora.metrics.fvd import COVARIANCES

    choices = config._EVALUATOR_CHOICES  # config.py imports no torch: its choices must be the modules' own
    assert choices["i3d.width_divisor"] == i3d.WIDTH_DIVISORS and set(choices["i3d.release"]) == set(i3d.RELEASES)
    assert set(choices["fvd_sanity.covariance"]) == set(COVARIANCES)
    assert tuple(fvd_sanity.CORRUPTIONS) == config.FVD_CORRUPTIONS
    metric = load_config(ROOT / "experiments" / "rlpips_metric" / "config.yaml", "proxy")
    evaluators_cfg = load_config(CONFIG, "proxy")
    assert metric.rlpips.backbone == str(RunDir.of(evaluators_cfg).out / evaluators.TRUNK_FILE)
