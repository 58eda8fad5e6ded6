"""Shared smoke fixtures: the smoke Wan components, and smoke configs whose data is a tiny procedural world of
their own (each built once per module, in a temporary folder)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cinelora import models
from cinelora.config import ExperimentConfig, ModelConfig, load_config
from cinelora.data.world import generate_world

ROOT = Path(__file__).resolve().parents[1]
SMOKE_MODEL = ModelConfig(source="random", architecture="smoke", weight_dtype="fp32")


@pytest.fixture(scope="module")
def smoke_components() -> models.WanComponents:
    """The smoke profile's random-weight Wan components (seed 0), shared by a module's tests."""
    return models.build_components(SMOKE_MODEL, seed=0)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Callable[..., ExperimentConfig]:
    """`make(experiment, domains, splits)`: the experiment's smoke config on a world of just those domains and
    split sizes; training reads the first domain's train/val split, evaluation every domain's test split."""

    def make(experiment: str, domains: list[str], splits: dict[str, int]) -> ExperimentConfig:
        cfg = load_config(ROOT / "experiments" / experiment / "config.yaml", "smoke")
        root = tmp_path_factory.mktemp("world")
        world = dataclasses.replace(cfg.world, root=str(root), domains=domains, splits=splits)
        generate_world(world, progress=False)
        data = dataclasses.replace(cfg.data, train=str(root / domains[0] / "train"),
                                   val=str(root / domains[0] / "val"))
        evaluation = dataclasses.replace(cfg.eval, domains={d: str(root / d / "test") for d in domains}) \
            if "test" in splits else cfg.eval
        return dataclasses.replace(cfg, world=world, data=data, eval=evaluation)

    return make


def tiny_metric_config(folder: Path, eval_eps_255: list[float]) -> Path:
    """experiments/rlpips_metric at smoke on 10 + 6 procedural triplets of one set each, one attack step: a config
    file in `folder` (the CLI and the radius search read files)."""
    raw = yaml.safe_load((ROOT / "experiments" / "rlpips_metric" / "config.yaml").read_text())
    raw["world"].update(height=64, width=64)
    raw["profiles"] = {"smoke": {"rlpips.procedural_triplets": {"train": 10, "val": 6}, "rlpips.patch_size": 32,
                                 "rlpips.train_sets": ["traditional"], "rlpips.val_sets": ["cnn"],
                                 "rlpips.batch_size": 5, "rlpips.decay_epochs": 0, "rlpips.attack_steps": 1,
                                 "rlpips.eval_pgd_steps": 1}}
    raw["rlpips"]["eval_eps_255"] = eval_eps_255
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config
