"""LoRA: attach (only LoRA trains), target checks, the diffusers save/load round trip, checkpoint state."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from cinelora import lora, models
from cinelora.config import CROSS_ATTENTION_TARGETS, LoraConfig, ModelConfig
from cinelora.lora_wan_layout import WAN_LAYOUT_WEIGHTS

R8_A16 = LoraConfig(rank=8, alpha=16.0, dropout=0.0, targets=list(CROSS_ATTENTION_TARGETS))


def _smoke(weight_dtype: str = "fp32") -> models.WanComponents:
    return models.build_components(ModelConfig(source="random", architecture="smoke", weight_dtype=weight_dtype),
                                   seed=0)


def _inputs(seed: int = 0) -> dict:
    """Smoke transformer inputs for two different 32x32x5 clips."""
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(2, 36, 2, 4, 4, generator=g), timestep=torch.tensor([700.0, 300.0]),
                encoder_hidden_states=torch.randn(2, 512, 32, generator=g),
                encoder_hidden_states_image=torch.randn(2, 65, 4, generator=g))


def _forward(transformer, inputs: dict) -> torch.Tensor:
    cast = {k: v if k == "timestep" else v.to(transformer.dtype) for k, v in inputs.items()}
    return transformer(**cast, return_dict=False)[0]


def _perturb(transformer, seed: int = 1) -> None:
    """Non-zero LoRA weights (B starts at zero), as training would leave them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.lora_parameters(transformer):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def test_attach_trains_only_float32_lora_on_a_bf16_base_and_starts_as_the_identity():
    c = _smoke("bf16")
    before = _forward(c.transformer, _inputs()).detach()
    lora.attach_lora(c.transformer, R8_A16)
    trainable = {n: p for n, p in c.transformer.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert {p.dtype for n, p in c.transformer.named_parameters() if n.endswith("attn2.to_q.base_layer.weight")} == {
        torch.bfloat16}
    # 2 blocks x 6 cross-attention linears (24 -> 24) x (A: 8x24 + B: 24x8)
    assert sum(p.numel() for p in lora.lora_parameters(c.transformer)) == 2 * 6 * (8 * 24 + 24 * 8)
    assert torch.equal(_forward(c.transformer, _inputs()).detach(), before)  # B = 0 at init
    _forward(c.transformer, _inputs()).float().square().mean().backward()
    assert all(p.grad is not None for p in trainable.values())
    assert all(p.grad is None for p in c.transformer.parameters() if not p.requires_grad)


def test_unmatched_targets_are_named_with_the_valid_choices():
    c = _smoke()
    with pytest.raises(ValueError) as err:
        lora.attach_lora(c.transformer, LoraConfig(targets=["attn2.to_q", "attn3.to_q", "to_nothing"]))
    message = str(err.value)
    assert "'attn3.to_q'" in message and "'to_nothing'" in message
    assert "'attn2.add_k_proj'" in message and "'attn1.to_q'" in message  # valid names listed
    assert not getattr(c.transformer, "peft_config", None)  # nothing was attached


def test_saved_lora_loads_into_a_fresh_stock_pipeline_with_identical_outputs(tmp_path):
    trained = _smoke()
    lora.attach_lora(trained.transformer, R8_A16)
    _perturb(trained.transformer)
    folder = lora.save_lora(trained.transformer, tmp_path / "lora", R8_A16)

    sidecar = json.loads((folder / lora.SIDECAR).read_text())
    assert (sidecar["rank"], sidecar["alpha"], sidecar["targets"]) == (8, 16.0, list(CROSS_ATTENTION_TARGETS))
    assert sidecar["num_parameters"] == sum(p.numel() for p in lora.lora_parameters(trained.transformer))
    assert all(k.startswith("transformer.blocks.") for k in load_file(folder / lora.LORA_WEIGHTS))

    fresh = _smoke()
    base_out = _forward(fresh.transformer, _inputs()).detach()
    pipe = models.make_pipeline(fresh)
    pipe.load_lora_weights(str(folder), weight_name=lora.LORA_WEIGHTS)  # the stock loader, nothing of ours
    with torch.no_grad():
        expected, got = _forward(trained.transformer, _inputs()), _forward(pipe.transformer, _inputs())
    torch.testing.assert_close(got, expected)  # alpha 16 survived: alpha = rank would halve the LoRA
    assert not torch.allclose(got, base_out, atol=1e-3)


def test_load_lora_into_pipeline_refuses_a_file_without_alpha_metadata(tmp_path):
    c = _smoke()
    lora.attach_lora(c.transformer, R8_A16)
    folder = lora.save_lora(c.transformer, tmp_path / "lora", R8_A16)
    save_file(load_file(folder / lora.LORA_WEIGHTS), folder / lora.LORA_WEIGHTS)  # drops the metadata
    with pytest.raises(ValueError, match="alpha = rank"):
        lora.load_lora_into_pipeline(models.make_pipeline(_smoke()), folder)


def test_save_lora_replaces_the_folder_atomically(tmp_path):
    c = _smoke()
    lora.attach_lora(c.transformer, R8_A16)
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "stale.txt").write_text("old run")
    lora.save_lora(c.transformer, folder, R8_A16)
    assert sorted(p.name for p in folder.iterdir()) == sorted([lora.LORA_WEIGHTS, WAN_LAYOUT_WEIGHTS, lora.SIDECAR])
    assert [p.name for p in tmp_path.iterdir()] == ["lora"]  # no temporary folders left behind
    with pytest.raises(ValueError, match="r=8, alpha=16.0"):
        lora.save_lora(c.transformer, folder, LoraConfig(rank=8, alpha=8.0))


def test_lora_state_dict_resumes_a_run_and_rejects_another_rank():
    trained = _smoke()
    lora.attach_lora(trained.transformer, R8_A16)
    _perturb(trained.transformer)
    state = lora.lora_state_dict(trained.transformer)
    assert len(state) == 2 * 6 * 2 and all(not v.requires_grad for v in state.values())

    resumed = _smoke()
    lora.attach_lora(resumed.transformer, R8_A16)
    lora.load_lora_state_dict(resumed.transformer, state)
    with torch.no_grad():
        torch.testing.assert_close(_forward(resumed.transformer, _inputs()), _forward(trained.transformer, _inputs()))

    rank4 = _smoke()
    lora.attach_lora(rank4.transformer, LoraConfig(rank=4, alpha=8.0))
    with pytest.raises(ValueError, match="another rank"):
        lora.load_lora_state_dict(rank4.transformer, state)
    with pytest.raises(ValueError, match="missing"):
        lora.load_lora_state_dict(resumed.transformer, dict(list(state.items())[1:]))
