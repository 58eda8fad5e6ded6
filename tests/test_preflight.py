"""Preflight: what a generator run would read is checked before any work, the base model folder first."""
from __future__ import annotations

import dataclasses

import pytest

from cinelora import cli
from cinelora.config import load_config
from cinelora.preflight import missing_inputs

from conftest import ROOT

CONFIG = ROOT / "experiments" / "lora_r8" / "config.yaml"


def test_a_missing_pretrained_folder_is_named_before_any_work(tmp_path, monkeypatch):
    cfg = load_config(CONFIG, "proxy")
    assert cfg.model.source == "pretrained"  # the proxy profile loads the project's base model
    absent = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(tmp_path / "no_model")))
    assert [p for p in missing_inputs(absent, train=True, evaluate=True) if p.startswith("model.path")] == [
        f"model.path: {tmp_path / 'no_model'} is not a folder (a diffusers-format Wan2.1 I2V folder; at proxy the "
        "project's base model: make proxy-base)"]
    (tmp_path / "empty_model").mkdir()
    empty = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(tmp_path / "empty_model")))
    assert any(p.startswith("model.path: ") and "no_model" not in p for p in missing_inputs(empty, train=True,
                                                                                             evaluate=False))
    monkeypatch.chdir(tmp_path)  # a checkout without the committed proxy base: its relative paths name nothing
    with pytest.raises(SystemExit, match="cannot start; missing inputs:\n  - model.path: results/proxy_base"):
        cli.main(["run", "--config", str(CONFIG), "--profile", "proxy", "--results-root", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()  # nothing was claimed, rendered or trained


def test_tensorboard_without_its_package_is_named_unless_turned_off(monkeypatch):
    import importlib.util

    cfg = load_config(CONFIG, "smoke")
    assert cfg.train.tensorboard
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert [p for p in missing_inputs(cfg, train=True, evaluate=False) if p.startswith("train.tensorboard")] == [
        "train.tensorboard: true needs the tensorboard package (pip install -r requirements.txt), or set it to false"]
    off = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tensorboard=False))
    assert not [p for p in missing_inputs(off, train=True, evaluate=False) if p.startswith("train.tensorboard")]
    assert not [p for p in missing_inputs(cfg, train=False, evaluate=True) if p.startswith("train.tensorboard")]
