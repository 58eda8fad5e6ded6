"""Wan components: presets, seeded random init, the diffusers-folder round trip, the folder check, the tokenizer."""
import hashlib
import json
import shutil

import pytest
import torch
from diffusers import WanTransformer3DModel

from cinelora import models
from cinelora.config import ModelConfig
from cinelora.tokenizer import SPECIAL_TOKENS, build_caption_tokenizer, caption_vocab

from conftest import SMOKE_MODEL as SMOKE


def _transformer_inputs(c: models.WanComponents, batch: int = 2, seed: int = 0) -> dict:
    """Transformer inputs of a 32x32x5 clip: latents 2x4x4, 512 text tokens, 65 CLIP tokens."""
    g = torch.Generator().manual_seed(seed)
    text_dim = c.transformer.config.text_dim
    image_tokens = (c.image_encoder.config.image_size // c.image_encoder.config.patch_size) ** 2 + 1
    return dict(hidden_states=torch.randn(batch, 36, 2, 4, 4, generator=g),
                timestep=torch.tensor([900.0, 100.0][:batch]),
                encoder_hidden_states=torch.randn(batch, 512, text_dim, generator=g),
                encoder_hidden_states_image=torch.randn(batch, image_tokens, c.image_encoder.config.hidden_size,
                                                        generator=g))


def _forward(c: models.WanComponents, inputs: dict) -> torch.Tensor:
    """The transformer on inputs cast to its dtype (timesteps stay float32), as the pipeline calls it."""
    cast = {k: v if k == "timestep" else v.to(c.transformer.dtype) for k, v in inputs.items()}
    with torch.no_grad():
        return c.transformer(**cast, return_dict=False)[0]


@pytest.fixture(scope="module")
def smoke(smoke_components) -> models.WanComponents:
    return smoke_components


def test_smoke_transformer_is_the_i2v_architecture_and_uses_the_image_tokens(smoke):
    inputs = _transformer_inputs(smoke)
    out = _forward(smoke, inputs)
    assert out.shape == (2, 16, 2, 4, 4) and torch.isfinite(out).all()
    assert smoke.transformer.blocks[0].attn2.add_k_proj is not None  # image tokens get their own K/V
    other_image = dict(inputs, encoder_hidden_states_image=inputs["encoder_hidden_states_image"] + 1.0)
    assert not torch.allclose(_forward(smoke, other_image), out)
    assert all(not p.requires_grad for m in (smoke.transformer, smoke.vae, smoke.text_encoder, smoke.image_encoder)
               for p in m.parameters())
    assert smoke.scheduler.config.flow_shift == 5.0 and smoke.scheduler.config.prediction_type == "flow_prediction"


def test_random_build_is_seeded_and_leaves_the_global_generator_alone(smoke):
    state = torch.get_rng_state()
    again, other = models.build_components(SMOKE, seed=0), models.build_components(SMOKE, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        a, b, c = (getattr(x, name).state_dict() for x in (smoke, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert not all(torch.equal(a[k], c[k]) for k in a), name


def test_meta_build_materializes_with_the_real_rope_tables():
    meta = models.build_transformer("smoke", device="meta")
    assert all(p.is_meta for p in meta.parameters())
    built = models.materialize_transformer(meta, "cpu", seed=3)
    direct = models.build_transformer("smoke", device="cpu", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values()))
    reference = WanTransformer3DModel(**models.transformer_config("smoke"))
    assert torch.equal(built.rope.freqs_cos, reference.rope.freqs_cos)
    assert torch.equal(built.rope.freqs_sin, reference.rope.freqs_sin)
    assert all(torch.isfinite(p).all() for p in built.parameters())


def test_true_size_parameter_count_on_meta():
    assert models.count_parameters("wan2.1-i2v-14b") == models.TRUE_SIZE_PARAMETERS == 16_394_878_784
    block = models.build_transformer("wan2.1-i2v-14b", device="meta").blocks[0]
    assert sum(p.numel() for p in block.parameters()) == 403_838_464


@pytest.mark.parametrize("weight_dtype", ["fp32", "bf16"])
def test_saved_folder_loads_back_identically_through_the_pretrained_path(tmp_path, weight_dtype):
    cfg = ModelConfig(source="random", architecture="smoke", weight_dtype=weight_dtype, flow_shift=3.0)
    c = models.build_components(cfg, seed=0)
    models.save_components(c, tmp_path / "wan")
    loaded = models.build_components(ModelConfig(source="pretrained", path=str(tmp_path / "wan"),
                                                 weight_dtype=weight_dtype, flow_shift=5.0))
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        a, b = getattr(c, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys(), name
        # same values and the same dtype layout diffusers' from_pretrained gives (fp32 keep-modules in bf16)
        assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a), name
    assert {p.dtype for p in c.transformer.parameters()} == (
        {torch.float32} if weight_dtype == "fp32" else {torch.bfloat16, torch.float32})
    inputs = _transformer_inputs(c)
    assert torch.equal(_forward(c, inputs), _forward(loaded, inputs))
    caption = "A cinematic red circle moves left, slow dolly in"
    assert c.tokenizer(caption).input_ids == loaded.tokenizer(caption).input_ids
    assert loaded.scheduler.config.flow_shift == 5.0  # the config's shift, not the folder's
    assert loaded.image_processor.crop_size == c.image_processor.crop_size


def test_incomplete_folder_raises_one_error_naming_every_missing_piece(tmp_path, smoke):
    folder = models.save_components(smoke, tmp_path / "wan")
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(models.ModelSourceError) as err:
        models.build_components(ModelConfig(source="pretrained", path=str(folder), weight_dtype="fp32"))
    message = str(err.value)
    assert "vae/diffusion_pytorch_model.safetensors" in message
    assert "tokenizer/tokenizer_config.json" in message and "tokenizer/tokenizer.json" in message
    assert "transformer/" not in message and "hf download" in message


def test_sharded_weights_need_every_shard_of_their_index(tmp_path, smoke):
    folder = models.save_components(smoke, tmp_path / "wan")
    sub = folder / "transformer"
    (sub / "diffusion_pytorch_model.safetensors").rename(sub / "diffusion_pytorch_model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                            "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (sub / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert models.missing_model_files(folder) == ["transformer/diffusion_pytorch_model-00002-of-00002.safetensors"]


def test_missing_path_is_a_model_source_error_with_download_instructions(tmp_path):
    with pytest.raises(models.ModelSourceError, match="not an existing local folder") as err:
        models.build_components(ModelConfig(source="pretrained", path=str(tmp_path / "nowhere")))
    assert f"hf download {models.HUB_ID}" in str(err.value)


def test_caption_tokenizer_is_offline_deterministic_and_fits_the_pipeline_call():
    vocab = caption_vocab(512)
    # pinned (tokenizers 0.23.3): a changed vocabulary would silently scramble a pretrained proxy text encoder
    assert hashlib.sha256(json.dumps(vocab).encode()).hexdigest() == (
        "d23765b73897d10f87d7edc3297861a7dbe520ea924a28162c97cbc23eecd5b9")
    tok = build_caption_tokenizer()
    assert tok.convert_ids_to_tokens([0, 1, 2]) == list(SPECIAL_TOKENS)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    caption = "Cinematic letterbox, teal and orange grade: a figure waves both arms; slow dolly in (35mm)!"
    out = tok([caption, "a"], padding="max_length", max_length=512, truncation=True, add_special_tokens=True,
              return_attention_mask=True, return_tensors="pt")
    assert out.input_ids.shape == (2, 512)
    length = int(out.attention_mask[0].sum())
    assert out.input_ids[0, length - 1] == 1 and (out.input_ids[0, length:] == 0).all()
    assert 2 not in out.input_ids[0].tolist()  # every ASCII character has a piece
    assert tok.decode(out.input_ids[0], skip_special_tokens=True) == caption
