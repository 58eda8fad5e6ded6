"""R-LPIPS: head training (natural vs adversarial), robustness evaluation, heads I/O and the metric experiment."""
from __future__ import annotations

import json
from pathlib import Path

import lpips
import pytest
import torch

from cinelora import cli
from cinelora.adversarial import pixel_eps_to_unit_range
from cinelora.config import RLPIPSConfig, load_config
from cinelora.data.bapps import TwoAFCDataset
from cinelora.metrics.lpips_distance import MissingWeightsError, build_lpips, new_lpips, save_heads
from cinelora.data.two_afc_world import write_two_afc_world
from cinelora.results import ATTACK_CONDITION
from cinelora.metrics.rlpips import (attack_triplets, checkpoint_epoch, condition_name, evaluate_heads,
                                     lpips_features, lpips_from_features, lr_factor, ranking_loss, train_heads)

from conftest import tiny_metric_config

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> TwoAFCDataset:
    """100 procedural `traditional` triplets of 32x32 patches (seeded)."""
    root = tmp_path_factory.mktemp("2afc")
    write_two_afc_world(root, seed=0, triplets={"train": 100}, sets={"train": ["traditional"]}, patch_size=32,
                        frame_size=(64, 64), progress=False)
    return TwoAFCDataset(root, ["traditional"], "train", 32)


def tiny_config(**changes) -> RLPIPSConfig:
    # A larger lr than the recipe's 1e-4 so that 32 steps move the heads; ε = 2/255 pixel units.
    base = dict(backbone="random", patch_size=32, lr=0.1, epochs=8, decay_epochs=0, batch_size=25,
                attack_eps_255=2.0, attack_step_255=2.0, attack_steps=3)
    return RLPIPSConfig(**{**base, **changes})


def heads_of(model: lpips.LPIPS) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("lin") and not k.startswith("lins")}


def test_split_distance_equals_the_package_forward():
    model = new_lpips("alex", "random", 0).eval()
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        split = lpips_from_features(model, lpips_features(model, x0), lpips_features(model, x1))
        assert torch.allclose(split, model(x0, x1), rtol=1e-5, atol=1e-7)


def test_attack_conditions_name_the_attack_and_pixel_eps_and_pass_the_results_schema():
    assert [condition_name("pgd", 4.0), condition_name("fgsm", 0.5)] == ["pgd_eps4", "fgsm_eps0.5"]
    assert ATTACK_CONDITION.fullmatch("pgd_eps4") and ATTACK_CONDITION.fullmatch("fgsm_eps0.5")
    assert not any(ATTACK_CONDITION.fullmatch(c) for c in ("pgd_eps", "pgd_eps04", "cw_eps4", "attacked"))


def test_lr_schedule_is_lpips_train_py_linear_decay():
    assert [lr_factor(e, 5, 5) for e in range(10)] == pytest.approx([1] * 6 + [0.8, 0.6, 0.4, 0.2])
    assert [lr_factor(e, 2, 0) for e in range(2)] == [1.0, 1.0]


def test_adversarial_training_raises_attacked_2afc_above_natural_training(tiny_set):
    cfg = tiny_config()
    scores = {}
    for adversarial in (False, True):
        model, _ = train_heads(cfg, tiny_set, adversarial=adversarial, seed=0, device=CPU, progress=False)
        scores[adversarial] = evaluate_heads(model, tiny_set, eps_255=[2.0, 4.0], pgd_steps=3, batch_size=50,
                                             device=CPU, progress=False)
    natural, robust = scores[False], scores[True]
    assert natural["clean"]["2afc"] > 0.65  # the natural heads did learn the set
    assert robust["pgd_eps4"]["2afc"] > natural["pgd_eps4"]["2afc"] + 0.05
    assert robust["pgd_eps2"]["2afc"] > natural["pgd_eps2"]["2afc"]
    # the attack hurts both, PGD at least as much as FGSM at the same ε on the naturally trained heads
    assert natural["pgd_eps4"]["2afc"] < natural["clean"]["2afc"] - 0.1
    assert natural["pgd_eps4"]["2afc"] <= natural["fgsm_eps4"]["2afc"]
    assert robust["pgd_eps4"]["rel_dist_shift"] < natural["pgd_eps4"]["rel_dist_shift"]


def test_natural_and_adversarial_runs_differ_only_in_the_attack(tiny_set):
    """With a zero-radius attack the adversarial run must reproduce the natural one bit for bit."""
    cfg = tiny_config(epochs=1, attack_eps_255=0.0)
    natural, _ = train_heads(cfg, tiny_set, adversarial=False, seed=0, device=CPU, progress=False)
    zero_attack, _ = train_heads(cfg, tiny_set, adversarial=True, seed=0, device=CPU, progress=False)
    attacked, _ = train_heads(tiny_config(epochs=1), tiny_set, adversarial=True, seed=0, device=CPU, progress=False)
    for key, value in heads_of(natural).items():
        assert torch.equal(value, heads_of(zero_attack)[key])
        assert (value >= 0).all()  # clamped after every step
    assert any(not torch.equal(v, heads_of(attacked)[k]) for k, v in heads_of(natural).items())


def test_a_run_killed_after_an_epoch_resumes_to_the_same_heads(tiny_set, tmp_path):
    cfg = tiny_config(epochs=2, decay_epochs=1)
    whole, _ = train_heads(cfg, tiny_set, adversarial=True, seed=0, device=CPU, progress=False)

    class Killed(Exception):
        pass

    def killed_after_epoch_2(record: dict) -> None:
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_heads(cfg, tiny_set, adversarial=True, seed=0, device=CPU, progress=False, log=killed_after_epoch_2,
                    checkpoints=tmp_path)
    assert checkpoint_epoch(tmp_path) == 2 and len(list(tmp_path.glob("epoch_*.pt"))) == 1  # the last one kept
    records: list[dict] = []
    resumed, _ = train_heads(cfg, tiny_set, adversarial=True, seed=0, device=CPU, progress=False, log=records.append,
                             checkpoints=tmp_path)
    assert [r["epoch"] for r in records] == [3]
    for key, value in heads_of(whole).items():
        assert torch.equal(value, heads_of(resumed)[key])  # dropout stream and Adam state came back too


def test_training_attack_goes_through_the_trained_ranking_head(tiny_set):
    model, rank = train_heads(tiny_config(epochs=1), tiny_set, adversarial=False, seed=0, device=CPU, progress=False)
    batch = {k: torch.stack([tiny_set[i][k] for i in range(8)]) for k in ("ref", "p0", "p1", "judge")}
    eps = pixel_eps_to_unit_range(2.0)

    def objective(d0, d1):
        return ranking_loss(rank, d0, d1, batch["judge"])

    adversarial = attack_triplets(model, batch, "both", objective, norm="linf", eps=eps, step_size=eps / 2, steps=3)
    assert torch.equal(adversarial["ref"], batch["ref"])  # "both" = the two distorted patches only
    for key in ("p0", "p1"):
        assert (adversarial[key] - batch[key]).abs().max() <= eps + 1e-6
    with torch.no_grad():
        def loss(b):
            feats = {k: lpips_features(model, b[k]) for k in ("ref", "p0", "p1")}
            d0, d1 = (lpips_from_features(model, feats["ref"], feats[p]) for p in ("p0", "p1"))
            return ranking_loss(rank, d0, d1, batch["judge"]).item()
        assert loss(adversarial) > loss(batch)
    assert all(p.grad is None for p in rank.parameters())


def test_trained_heads_round_trip_through_safetensors(tiny_set, tmp_path):
    model, _ = train_heads(tiny_config(epochs=1), tiny_set, adversarial=False, seed=0, device=CPU, progress=False)
    path = tmp_path / "heads_lpips.safetensors"
    save_heads(model, path, mode="lin", training="natural", data="procedural test set", backbone="random")
    loaded = build_lpips("alex", "random", 0, heads=path)
    assert all(torch.equal(v, heads_of(loaded)[k]) for k, v in heads_of(model).items())
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["keys"] == [f"lin{i}.model.1.weight" for i in range(5)]
    assert (sidecar["net"], sidecar["training"], sidecar["attack"]) == ("alex", "natural", None)


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_shipped_heads_load_through_build_lpips_and_equal_the_packages(net):
    ours = build_lpips(net, "random", 0)
    package = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    assert heads_of(ours).keys() == heads_of(package).keys()
    assert all(torch.equal(v, heads_of(package)[k]) for k, v in heads_of(ours).items())


def test_missing_trunk_or_heads_file_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError, match=r"hub/checkpoints/alexnet-owt-7be5be79\.pth"):
        build_lpips("alex", "torchvision", 0)
    with pytest.raises(MissingWeightsError, match="rlpips-train"):
        build_lpips("alex", "random", 0, heads=tmp_path / "heads_rlpips.safetensors")


def test_experiment_config_states_the_r_lpips_recipe():
    full = load_config(REPO / "experiments" / "rlpips_metric" / "config.yaml", "full").rlpips
    assert (full.lr, full.betas, full.batch_size, full.epochs, full.decay_epochs) == (1e-4, [0.5, 0.999], 50, 5, 5)
    assert (full.attack_target, full.attack_norm, full.attack_steps) == ("ref", "linf", 50)
    assert pixel_eps_to_unit_range(full.attack_eps_255) == pytest.approx(8 / 255)
    assert full.attack_step_255 == full.attack_eps_255  # full-ε sign steps
    assert (full.backbone, full.procedural, full.mode) == ("torchvision", False, "lin")
    smoke = load_config(REPO / "experiments" / "rlpips_metric" / "config.yaml", "smoke").rlpips
    assert (smoke.backbone, smoke.procedural) == ("random", True)


def test_cli_runs_a_metric_experiment_end_to_end_and_resumes(tmp_path, monkeypatch):
    config = tiny_metric_config(tmp_path, eval_eps_255=[4.0])
    monkeypatch.chdir(tmp_path)
    cli.main(["run", "--config", str(config), "--profile", "smoke"])
    out = tmp_path / "results" / "rlpips_metric" / "smoke"
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0] == "experiment,profile,seed,domain,clip,condition,metric,value"
    assert len(lines) == 1 + 2 + 2 * 2 * 3  # clean: 2 scores; FGSM and PGD at one ε: 3 metrics x 2 heads
    assert "rlpips_metric,smoke,0,cnn,all,pgd_eps4,2afc_rlpips," in "\n".join(lines)
    extra = json.loads((out / "provenance.json").read_text())["extra"]
    assert "random" in extra["trunk"] and "procedural" in extra["data"] and extra["val_triplets"] == {"cnn": 6}
    assert json.loads((out / "heads_rlpips.json").read_text())["attack"]["eps_255"] == 4.0
    (out / "provenance.json").unlink()  # an unfinished run: the next call resumes, keeping the trained heads
    stamp = (out / "heads_lpips.safetensors").stat().st_mtime_ns
    cli.main(["run", "--config", str(config), "--profile", "smoke"])
    assert (out / "heads_lpips.safetensors").stat().st_mtime_ns == stamp and (out / "provenance.json").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(r["heads"], r["epoch"]) for r in log] == [("lpips", 1), ("rlpips", 1)]
