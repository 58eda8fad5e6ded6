"""R-LPIPS (Ghazanfari et al. 2023, arXiv 2307.15157): LPIPS heads trained adversarially on 2AFC
triplets, and the robustness evaluation that compares them with naturally trained heads (the LPIPS baseline).

Training follows LPIPS's recipe (Zhang et al. 2018, arXiv 1801.03924, §3.3 and its train.py): distances
d0 = d(ref, p0), d1 = d(ref, p1) go through LPIPS's small ranking head G (`lpips.BCERankingLoss`, inputs
d0, d1, d0 − d1, d0/(d1+0.1), d1/(d0+0.1)), whose output is fitted to the judge by binary cross-entropy;
Adam; heads clamped ≥ 0 after every step; `epochs` at the base lr, then `decay_epochs` of linear decay. R-LPIPS
replaces every training triplet by its PGD adversary (no clean term), maximising that same loss. One fix
of the public R-LPIPS code, which builds a fresh, untrained ranking head inside every attack step (so its
attack ignores the judgment): here the attack goes through the ranking head being trained.

Natural and adversarial runs start from the same seeded heads, see the same batches in the same order and
draw the same dropout masks: they differ only in the attack.

Units: configs give every ε in pixel units ×255 of [0, 1] images; patches are in [-1, 1], where the radius
is `pixel_eps_to_unit_range(ε) = 2ε/255` (the recipe's 8/255 in [-1, 1] is 4/255 in pixel units). For the
L2 attack the same fields are L2 radii of a whole patch, in the same units.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import lpips
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cinelora import seeding
from cinelora.atomic import atomic_path
from cinelora.adversarial import pgd_attack, pixel_eps_to_unit_range
from cinelora.config import MetricExperimentConfig, RLPIPSConfig
from cinelora.data.bapps import TwoAFCDataset
from cinelora.instrument.loop import training_device
from cinelora.metrics.two_afc import two_afc_agreement
from cinelora.metrics.lpips_distance import TRUNK_FILES, build_lpips, is_trunk_file, new_lpips, save_heads
from cinelora.data.two_afc_world import write_two_afc_world

INPUTS = ("ref", "p0", "p1")
ATTACK_INPUTS = {"x0": ("p0",), "x1": ("p1",), "both": ("p0", "p1"), "ref": ("ref",)}
HEADS = {"lpips": "heads_lpips.safetensors", "rlpips": "heads_rlpips.safetensors"}  # natural, adversarial
ADVERSARIAL = {"lpips": False, "rlpips": True}
EVAL_ATTACKS = ("fgsm", "pgd")
PGD_STEP_FACTOR = 2.5  # eval PGD step = 2.5·ε/steps (Madry et al. 2018): the whole ball is reachable
TRAIN_SUMMARY = "train_summary.json"

Features = list[Tensor]
Objective = Callable[[Tensor, Tensor], Tensor]


def lpips_features(model: lpips.LPIPS, x: Tensor) -> Features:
    """Channel-normalised trunk activations ŷ^l [N, C_l, H_l, W_l] of x [N, 3, H, W] in [-1, 1] (LPIPS eq. 1)."""
    return [lpips.normalize_tensor(f) for f in model.net(model.scaling_layer(x))]


def lpips_from_features(model: lpips.LPIPS, f0: Features, f1: Features) -> Tensor:
    """LPIPS eq. 1, d = Σ_l mean_hw Σ_c w_lc (ŷ0 − ŷ1)²_lc (the package's w ≥ 0 stands for the paper's w²), as
    [N, 1, 1, 1]: `model(x0, x1)` (v0.1, not spatial) split in two, so the features of an input shared by both
    distances, or fixed during an attack, are computed once."""
    return sum(lin((a - b) ** 2).mean([2, 3], keepdim=True) for lin, a, b in zip(model.lins, f0, f1))


def triplet_distances(model: lpips.LPIPS, feats: dict[str, Features]) -> tuple[Tensor, Tensor]:
    return lpips_from_features(model, feats["ref"], feats["p0"]), lpips_from_features(model, feats["ref"], feats["p1"])


def ranking_loss(rank: lpips.BCERankingLoss, d0: Tensor, d1: Tensor, judge: Tensor) -> Tensor:
    """LPIPS's 2AFC objective: BCE between G(d0, d1), the predicted fraction preferring p1, and judge [N]."""
    return rank(d0, d1, judge.view(-1, 1, 1, 1) * 2 - 1)  # the package takes the judge in [-1, 1]


def ranking_margin(d0: Tensor, d1: Tensor, judge: Tensor) -> Tensor:
    """Σ (2·judge − 1)(d1 − d0): grows as the metric moves towards the patch the raters did not prefer.

    The evaluation attack maximises this, not a ranking head's loss: the 2AFC score depends on the
    distances alone, and the shipped or natural heads come with no ranking head to attack through.
    """
    return ((2 * judge.view(-1, 1, 1, 1) - 1) * (d1 - d0)).sum()


def attack_triplets(model: lpips.LPIPS, batch: dict, target: str, objective: Objective, *, norm: str, eps: float,
                    step_size: float, steps: int) -> dict:
    """`batch` with its `target` input(s) (x0 = p0, x1 = p1, both, ref) replaced by the PGD adversary that
    maximises objective(d0, d1); eps and step_size in [-1, 1] units, per patch. "both" attacks p0 and p1
    jointly. The model's mode is the caller's; gradients reach the inputs only."""
    names = ATTACK_INPUTS[target]
    with torch.no_grad():
        fixed = {k: lpips_features(model, batch[k]) for k in INPUTS if k not in names}
    n = batch["ref"].shape[0]

    def loss_fn(x: Tensor) -> Tensor:
        attacked = lpips_features(model, x)
        feats = {**fixed, **{k: [f[i * n:(i + 1) * n] for f in attacked] for i, k in enumerate(names)}}
        return objective(*triplet_distances(model, feats))

    adversary = pgd_attack(loss_fn, torch.cat([batch[k] for k in names]), eps=eps, step_size=step_size, steps=steps,
                           norm=norm)
    return {**batch, **{k: adversary[i * n:(i + 1) * n] for i, k in enumerate(names)}}


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """LPIPS train.py's schedule for 0-based `epoch`: 1 for the first `epochs + 1`, then down by
    1/decay_epochs per epoch (its lr update runs after each epoch past `epochs`)."""
    return 1.0 if decay_epochs == 0 else min(1.0, (epochs + decay_epochs - epoch) / decay_epochs)


def clamp_heads(model: lpips.LPIPS) -> None:
    """Keep every head weight ≥ 0 (LPIPS: a distance must not reward a feature difference)."""
    with torch.no_grad():
        for lin in model.lins:
            lin.model[-1].weight.clamp_(min=0)


def _loader(data: TwoAFCDataset, order: list[int], batch_size: int, workers: int) -> DataLoader:
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return DataLoader(data, batch_sampler=batches, num_workers=workers)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def checkpoint_epoch(checkpoints: Path | None) -> int:
    """Epochs done by the last complete checkpoint in `checkpoints` (0 when there is none)."""
    done = sorted(checkpoints.glob("epoch_*.pt")) if checkpoints is not None and checkpoints.is_dir() else []
    return int(done[-1].stem.split("_")[1]) if done else 0


def _save_epoch(checkpoints: Path, epoch: int, model: lpips.LPIPS, rank: lpips.BCERankingLoss,
                optimizer: torch.optim.Optimizer) -> None:
    checkpoints.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "rank": rank.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    with atomic_path(checkpoints / f"epoch_{epoch:04d}.pt") as tmp:
        torch.save(state, tmp)
    for old in sorted(checkpoints.glob("epoch_*.pt"))[:-1]:
        old.unlink()


def _resume(checkpoints: Path, model: lpips.LPIPS, rank: lpips.BCERankingLoss,
            optimizer: torch.optim.Optimizer) -> int:
    epoch = checkpoint_epoch(checkpoints)
    if epoch:
        state = torch.load(checkpoints / f"epoch_{epoch:04d}.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        rank.load_state_dict(state["rank"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    return epoch


def train_heads(cfg: RLPIPSConfig, data: TwoAFCDataset, *, adversarial: bool, seed: int, device: torch.device,
                workers: int = 0, progress: bool = True, log: Callable[[dict], None] | None = None,
                checkpoints: Path | None = None) -> tuple[lpips.LPIPS, lpips.BCERankingLoss]:
    """Train LPIPS heads (mode "lin"; "tune" also the trunk) and the ranking head on `data`.

    adversarial=False: LPIPS's natural training. adversarial=True: R-LPIPS, each batch's `cfg.attack_target`
    replaced by a PGD adversary (`cfg.attack_norm`, radius `cfg.attack_eps_255`, `cfg.attack_steps` steps of
    `cfg.attack_step_255`, no random start) against the current ranking loss, with the metric in eval mode
    (no dropout: the attack sees the metric that is deployed). `log` receives one record per epoch, after the
    epoch's checkpoint in `checkpoints` (when given) is written: a killed run resumes from its last whole epoch
    and ends with the heads an uninterrupted run gives.
    """
    seeding.seed_everything(seed)  # the dropout stream: the same for natural and adversarial runs
    model = new_lpips(cfg.net, cfg.backbone, seed, tune=cfg.mode == "tune").to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, "lpips_init", 1))
        rank = lpips.BCERankingLoss().to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(rank.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
    start = _resume(checkpoints, model, rank, optimizer) if checkpoints is not None else 0
    eps, step = pixel_eps_to_unit_range(cfg.attack_eps_255), pixel_eps_to_unit_range(cfg.attack_step_255)
    total_epochs = cfg.epochs + cfg.decay_epochs
    steps_per_epoch = -(-len(data) // cfg.batch_size)
    name = "R-LPIPS" if adversarial else "LPIPS"
    with tqdm(total=total_epochs * steps_per_epoch, initial=start * steps_per_epoch, desc=f"train {name} heads",
              unit="step", disable=not progress) as bar:
        for epoch in range(start, total_epochs):
            lr = cfg.lr * lr_factor(epoch, cfg.epochs, cfg.decay_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            order = torch.randperm(len(data), generator=seeding.generator(seed, "data_order", epoch)).tolist()
            losses, agreements = [], []
            for batch in _loader(data, order, cfg.batch_size, workers):
                batch = _to(batch, device)
                judge = batch["judge"]
                if adversarial:
                    model.eval()
                    batch = attack_triplets(model, batch, cfg.attack_target,
                                            lambda d0, d1: ranking_loss(rank, d0, d1, judge), norm=cfg.attack_norm,
                                            eps=eps, step_size=step, steps=cfg.attack_steps)
                    model.train()
                stacked = lpips_features(model, torch.cat([batch[k] for k in INPUTS]))
                n = judge.shape[0]
                feats = {k: [f[i * n:(i + 1) * n] for f in stacked] for i, k in enumerate(INPUTS)}
                d0, d1 = triplet_distances(model, feats)
                loss = ranking_loss(rank, d0, d1, judge)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                clamp_heads(model)
                losses.append(loss.item())
                agreements.append(two_afc_agreement(d0.detach(), d1.detach(), judge).cpu())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            record = {"heads": "rlpips" if adversarial else "lpips", "epoch": epoch + 1, "lr": lr,
                      "loss": sum(losses) / len(losses), "train_2afc": float(torch.cat(agreements).mean())}
            if checkpoints is not None:
                _save_epoch(checkpoints, epoch + 1, model, rank, optimizer)
            if log is not None:
                log(record)
    optimizer.zero_grad(set_to_none=True)  # hand back modules without stale gradients
    return model.eval(), rank.eval()


def condition_name(attack: str, eps_255: float) -> str:
    """`fgsm_eps4`, `pgd_eps0.5`: attack and L∞ radius in pixel units ×255 (results' `condition`)."""
    return f"{attack}_eps{eps_255:g}"


def evaluate_heads(model: lpips.LPIPS, data: TwoAFCDataset, *, eps_255: list[float], pgd_steps: int,
                   batch_size: int, device: torch.device, progress: bool = True) -> dict[str, dict[str, float]]:
    """2AFC score of a frozen metric, clean and with the reference attacked (L∞, FGSM and PGD at each ε).

    The attack maximises `ranking_margin` (no random start; PGD: `pgd_steps` steps of 2.5·ε/steps).
    Returns {condition: {"2afc": score, "dist_shift": mean |d(adv ref, p) − d(ref, p)| over p0 and p1,
    "rel_dist_shift": that mean divided by the mean clean distance}}; "clean" has "2afc" only.
    """
    conditions = ["clean"] + [condition_name(a, e) for e in eps_255 for a in EVAL_ATTACKS]
    agreements: dict[str, list[Tensor]] = {c: [] for c in conditions}
    shifts: dict[str, list[Tensor]] = {c: [] for c in conditions[1:]}
    clean_distances: list[Tensor] = []
    order = list(range(len(data)))
    for batch in tqdm(_loader(data, order, batch_size, 0), desc="2afc eval", unit="batch", leave=False,
                      disable=not progress):
        batch = _to(batch, device)
        judge = batch["judge"]
        with torch.no_grad():
            clean = triplet_distances(model, {k: lpips_features(model, batch[k]) for k in INPUTS})
        agreements["clean"].append(two_afc_agreement(*clean, judge).cpu())
        clean_distances.append(torch.cat(clean).flatten().cpu())
        for e in eps_255:
            eps = pixel_eps_to_unit_range(e)
            for attack in EVAL_ATTACKS:
                steps, step = (1, eps) if attack == "fgsm" else (pgd_steps, PGD_STEP_FACTOR * eps / pgd_steps)
                adversarial = attack_triplets(model, batch, "ref", lambda d0, d1: ranking_margin(d0, d1, judge),
                                              norm="linf", eps=eps, step_size=step, steps=steps)
                with torch.no_grad():
                    attacked = triplet_distances(model, {k: lpips_features(model, adversarial[k]) for k in INPUTS})
                name = condition_name(attack, e)
                agreements[name].append(two_afc_agreement(*attacked, judge).cpu())
                shifts[name].append((torch.cat(attacked) - torch.cat(clean)).abs().flatten().cpu())
    mean_clean = float(torch.cat(clean_distances).mean())
    out = {c: {"2afc": float(torch.cat(agreements[c]).mean())} for c in conditions}
    for c in conditions[1:]:
        shift = float(torch.cat(shifts[c]).mean())
        out[c].update(dist_shift=shift, rel_dist_shift=shift / max(mean_clean, 1e-12))
    return out


# ---------------------------------------------------------------------------------------------------------
# The `rlpips_metric` experiment's parts (cinelora.runner runs them into its run folder)


def data_source(cfg: MetricExperimentConfig) -> str:
    """What the 2AFC data are, in words every result carries (proxy vs real)."""
    if cfg.rlpips.procedural:
        return (f"procedural 2AFC from the procedural world (seed {cfg.world.seed}) at {cfg.rlpips.bapps_root}: "
                "distortion-severity judgments, proxy data, not BAPPS human judgments")
    return f"BAPPS 2AFC (human judgments) at {cfg.rlpips.bapps_root}"


def trunk_source(cfg: RLPIPSConfig) -> str:
    if cfg.backbone == "torchvision":
        return f"torchvision ImageNet {cfg.net} trunk ({TRUNK_FILES[cfg.net]})"
    if is_trunk_file(cfg.backbone):
        return f"{cfg.net} trunk from {cfg.backbone} (the proxy instrument's, trained on world frames: proxy only)"
    return f"seeded random {cfg.net} trunk (not the published metric's ImageNet trunk)"


def prepare_data(cfg: MetricExperimentConfig, progress: bool = True) -> None:
    """Write the procedural 2AFC set under `rlpips.bapps_root` when `rlpips.procedural` (kept if current)."""
    r = cfg.rlpips
    if r.procedural:
        write_two_afc_world(r.bapps_root, seed=cfg.world.seed, domains=cfg.world.domains,
                            triplets=r.procedural_triplets, sets={"train": r.train_sets, "val": r.val_sets},
                            patch_size=r.patch_size, frame_size=(cfg.world.height, cfg.world.width), progress=progress)


def _attack_record(r: RLPIPSConfig) -> dict:
    return {"norm": r.attack_norm, "target": r.attack_target, "eps_255": r.attack_eps_255,
            "eps_units": "pixel units x255 of [0, 1] images (x2 in the [-1, 1] input range)",
            "step_255": r.attack_step_255, "steps": r.attack_steps, "random_start": False}


def train_metric_heads(cfg: MetricExperimentConfig, key: str, path: Path, log: Callable[[dict], None],
                       checkpoints: Path | None = None, progress: bool = True) -> dict:
    """Train the `key` heads ("lpips": natural, "rlpips": adversarial) of `cfg` on its 2AFC train sets, save
    them to `path` (safetensors + JSON sidecar), and return their training summary; `log` gets one record per
    epoch; `checkpoints`: the folder of per-epoch checkpoints a killed run resumes from."""
    r, device = cfg.rlpips, training_device()
    data = TwoAFCDataset(r.bapps_root, r.train_sets, "train", r.patch_size)
    adversarial = ADVERSARIAL[key]
    start = time.perf_counter()
    model, _ = train_heads(r, data, adversarial=adversarial, seed=cfg.seed, device=device,
                           workers=4 if device.type == "cuda" else 0, progress=progress, log=log,
                           checkpoints=checkpoints)
    save_heads(model, path, mode=r.mode, training="adversarial" if adversarial else "natural",
               data=data_source(cfg), backbone=trunk_source(r), attack=_attack_record(r) if adversarial else None)
    return {"heads": path.name, "training": "adversarial" if adversarial else "natural",
            "train_triplets": len(data), "epochs": r.epochs + r.decay_epochs,
            "steps": (r.epochs + r.decay_epochs) * -(-len(data) // r.batch_size),
            "seconds": round(time.perf_counter() - start, 3)}


def evaluate_metric_heads(cfg: MetricExperimentConfig, heads: dict[str, Path], progress: bool = True) -> list[dict]:
    """Tidy rows (results.METRIC_COLUMNS) for the saved heads {key: file} on every val set: `2afc_<key>` per
    condition, `dist_shift_<key>` and `rel_dist_shift_<key>` per attacked condition; domain = set, clip = "all"."""
    r, device = cfg.rlpips, training_device()
    rows = []
    for key, path in heads.items():
        model = build_lpips(r.net, r.backbone, cfg.seed, heads=path).to(device)
        for name in r.val_sets:
            data = TwoAFCDataset(r.bapps_root, [name], "val", r.patch_size)
            scores = evaluate_heads(model, data, eps_255=r.eval_eps_255, pgd_steps=r.eval_pgd_steps,
                                    batch_size=r.batch_size, device=device, progress=progress)
            rows += score_rows(cfg, key, name, scores)
    return rows


def score_rows(cfg: MetricExperimentConfig, key: str, val_set: str, scores: dict[str, dict[str, float]]) -> list[dict]:
    """`evaluate_heads`' scores of the `key` heads on one val set as tidy rows (results.METRIC_COLUMNS)."""
    return [{"experiment": cfg.name, "profile": cfg.profile, "seed": cfg.seed, "domain": val_set, "clip": "all",
             "condition": condition, "metric": f"{metric}_{key}", "value": value}
            for condition, values in scores.items() for metric, value in values.items()]


def metric_provenance(cfg: MetricExperimentConfig) -> dict:
    """What a metric run's provenance says of its trunk, data and attacks (proxy vs real among them)."""
    r = cfg.rlpips
    return {"lpips_backbone": r.backbone, "trunk": trunk_source(r), "data": data_source(cfg),
            "procedural_data": r.procedural, "mode": r.mode, "train_sets": r.train_sets, "val_sets": r.val_sets,
            "val_triplets": {name: len(TwoAFCDataset(r.bapps_root, [name], "val", r.patch_size))
                             for name in r.val_sets},
            "train_attack": _attack_record(r),
            "eval_attack": {"norm": "linf", "target": "ref", "objective": "ranking margin", "random_start": False,
                            "pgd_steps": r.eval_pgd_steps, "pgd_step": f"{PGD_STEP_FACTOR} * eps / steps",
                            "eps_255": r.eval_eps_255, "eps_units": "pixel units x255 of [0, 1] images"},
            "heads": HEADS}


__all__ = [
    "lpips_features", "lpips_from_features", "triplet_distances", "ranking_loss", "ranking_margin",
    "attack_triplets", "lr_factor", "clamp_heads", "train_heads", "checkpoint_epoch", "condition_name", "evaluate_heads", "data_source",
    "trunk_source", "prepare_data", "train_metric_heads", "evaluate_metric_heads", "score_rows", "metric_provenance", "HEADS",
    "ADVERSARIAL", "TRAIN_SUMMARY",
]
