"""The LoRA in the original Wan layout (ComfyUI): diffusers' own loader reads it back to the same outputs, every key
names a Wan layer, the strength survives with or without `.alpha`, and `cinelora lora convert` writes the same file."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanImageToVideoPipeline
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cinelora import cli, lora, models
from cinelora.config import CROSS_ATTENTION_TARGETS, LoraConfig, ModelConfig
from cinelora.lora_wan_layout import METADATA_KEY, WAN_LAYOUT_WEIGHTS, LoraLayoutError, export_wan_layout, to_wan_layout

# cross-attention (the default) plus a self-attention, an FFN and a layer outside the blocks
TARGETS = [*CROSS_ATTENTION_TARGETS, "attn1.to_q", "attn1.to_out.0", "ffn.net.0.proj", "ffn.net.2", "proj_out"]
R8_A16 = LoraConfig(rank=8, alpha=16.0, dropout=0.0, targets=TARGETS)


def _smoke() -> models.WanComponents:
    return models.build_components(ModelConfig(source="random", architecture="smoke", weight_dtype="fp32"), seed=0)


def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(2, 36, 2, 4, 4, generator=g), timestep=torch.tensor([700.0, 300.0]),
                encoder_hidden_states=torch.randn(2, 512, 32, generator=g),
                encoder_hidden_states_image=torch.randn(2, 65, 4, generator=g))


def _out(transformer) -> torch.Tensor:
    with torch.no_grad():
        return transformer(**_inputs(), return_dict=False)[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    trained = _smoke()
    lora.attach_lora(trained.transformer, R8_A16)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora.lora_parameters(trained.transformer):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    folder = lora.save_lora(trained.transformer, tmp_path_factory.mktemp("run") / "lora", R8_A16)
    return folder, _out(trained.transformer)


def _loaded(path) -> torch.Tensor:
    pipe = models.make_pipeline(_smoke())
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)  # the stock loader converts the layout
    return _out(pipe.transformer)


def test_keys_are_the_original_wan_names_with_alpha_in_the_blocks(saved):
    folder, _ = saved
    keys = set(load_file(folder / WAN_LAYOUT_WEIGHTS))
    assert "diffusion_model.blocks.0.cross_attn.q.lora_A.weight" in keys
    assert "diffusion_model.blocks.1.cross_attn.k_img.lora_B.weight" in keys
    assert "diffusion_model.blocks.0.self_attn.o.alpha" in keys and "diffusion_model.blocks.0.ffn.2.alpha" in keys
    assert "diffusion_model.head.head.lora_A.weight" in keys and "diffusion_model.head.head.alpha" not in keys
    assert not any("attn2" in k or k.startswith("transformer.") for k in keys)


def test_diffusers_reads_it_back_onto_existing_modules_with_the_same_outputs(saved):
    folder, trained_out = saved
    converted = WanImageToVideoPipeline.lora_state_dict(str(folder / WAN_LAYOUT_WEIGHTS))
    converted = converted[0] if isinstance(converted, tuple) else converted
    ours = load_file(folder / lora.LORA_WEIGHTS)
    assert sorted(converted) == sorted(ours)  # every tensor back under its diffusers name, none dropped
    modules = dict(_smoke().transformer.named_modules())
    for key in converted:
        assert isinstance(modules[key.removeprefix("transformer.").rsplit(".", 2)[0]], torch.nn.Linear)
    from_diffusers_file, from_wan_file = _loaded(folder / lora.LORA_WEIGHTS), _loaded(folder / WAN_LAYOUT_WEIGHTS)
    torch.testing.assert_close(from_wan_file, from_diffusers_file)
    torch.testing.assert_close(from_wan_file, trained_out)
    assert not torch.allclose(from_wan_file, _out(_smoke().transformer), atol=1e-3)  # the LoRA does act


def test_strength_survives_a_reader_that_ignores_alpha(saved, tmp_path):
    folder, trained_out = saved
    tensors = {k: v for k, v in load_file(folder / WAN_LAYOUT_WEIGHTS).items() if not k.endswith(".alpha")}
    save_file(tensors, tmp_path / "no_alpha.safetensors")
    torch.testing.assert_close(_loaded(tmp_path / "no_alpha.safetensors"), trained_out)
    state = load_file(folder / lora.LORA_WEIGHTS)
    unfolded = {k: v for k, v in to_wan_layout(state, rank=16, alpha=16.0).items() if not k.endswith(".alpha")}
    save_file(unfolded, tmp_path / "alpha_rank.safetensors")  # a plain rename: α=16 at r=8 read as α = r
    assert not torch.allclose(_loaded(tmp_path / "alpha_rank.safetensors"), trained_out, atol=1e-4)


def test_convert_writes_the_same_file_refuses_to_overwrite_and_needs_the_strength(saved, tmp_path, capsys):
    folder, _ = saved
    out = tmp_path / "comfy.safetensors"
    cli.main(["lora", "convert", str(folder), "--out", str(out)])
    assert out.read_bytes() == (folder / WAN_LAYOUT_WEIGHTS).read_bytes() and str(out) in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists; pass --force"):
        cli.main(["lora", "convert", str(folder), "--out", str(out)])
    cli.main(["lora", "convert", str(folder), "--out", str(out), "--force"])
    save_file(load_file(folder / lora.LORA_WEIGHTS), tmp_path / "bare.safetensors")  # no adapter metadata
    with pytest.raises(SystemExit, match="bare.safetensors: no adapter config"):
        cli.main(["lora", "convert", str(tmp_path / "bare.safetensors")])
    with safe_open(folder / WAN_LAYOUT_WEIGHTS, framework="pt") as f:
        record = json.loads(f.metadata()[METADATA_KEY])
    assert (record["rank"], record["trained_alpha"]) == (8, 16.0)


def test_a_key_that_is_no_wan_layer_is_named():
    with pytest.raises(LoraLayoutError, match="'blocks.0.norm2'"):
        to_wan_layout({"transformer.blocks.0.norm2.lora_A.weight": torch.zeros(8, 4)}, 8, 16.0)
    with pytest.raises(FileNotFoundError, match="no such LoRA file"):
        export_wan_layout("/nonexistent/lora")
