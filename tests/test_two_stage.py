"""The two-stage recipe: a style LoRA trained on single frames, then a motion LoRA trained on clips with the
style LoRA frozen; both load together in the stock diffusers pipeline."""
import dataclasses

import pytest
import torch

from cinelora import lora, models, train
from cinelora.checkpoint import latest_checkpoint, load_checkpoint
from cinelora.rundir import RunDir


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    base = tiny_world("two_stage_r8", ["cinematic"], {"train": 2, "val": 1})
    root = tmp_path_factory.mktemp("two_stage")
    tr = dataclasses.replace(base.train, steps=2, style_steps=2, grad_accum=1, val_every=2, val_batches=1,
                             checkpoint_every=2, lr=1e-2, early_stop_patience=0)
    cfg = dataclasses.replace(base, train=tr)
    train.train(cfg, RunDir(root / "out", root / "state"), progress=False)
    return cfg, root


def test_motion_stage_leaves_the_style_lora_untouched(trained):
    _, root = trained
    style = load_checkpoint(latest_checkpoint(root / "state" / "style" / "checkpoints"))[1]
    motion = load_checkpoint(latest_checkpoint(root / "state" / "checkpoints"))[1]
    style_keys = [k for k in motion if ".style." in k]
    assert style_keys and all(torch.equal(motion[k], style[k]) for k in style_keys)
    assert any(".motion." in k and "lora_B" in k and motion[k].abs().sum() > 0 for k in motion)


def test_both_loras_load_together_in_the_stock_pipeline(trained):
    cfg, root = trained
    pipe = models.make_pipeline(models.build_components(cfg.model, seed=cfg.seed))
    lora.load_lora_into_pipeline(pipe, root / "out" / "style" / "lora", adapter_name="style")
    lora.load_lora_into_pipeline(pipe, root / "out" / "lora", adapter_name="motion")
    g = torch.Generator().manual_seed(0)
    t = pipe.transformer
    inputs = dict(hidden_states=torch.randn(1, 36, 2, 4, 4, generator=g), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, 512, t.config.text_dim, generator=g),
                  encoder_hidden_states_image=torch.randn(1, 65, t.config.image_dim, generator=g), return_dict=False)
    outputs = {}
    for active in (["style"], ["motion"], ["style", "motion"]):
        pipe.set_adapters(active)
        assert sorted(pipe.get_active_adapters()) == sorted(active)
        with torch.no_grad():
            outputs[tuple(active)] = t(**inputs)[0]
    both = outputs[("style", "motion")]
    assert not torch.allclose(both, outputs[("style",)]) and not torch.allclose(both, outputs[("motion",)])
