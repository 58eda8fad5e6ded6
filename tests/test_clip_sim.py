"""CLIP-SIM and frame consistency on a tiny random CLIP, checked against the model's own similarity logits."""
from __future__ import annotations

import pytest
import torch

from cinelora.metrics.clip_sim import (build_clip_tokenizer, clip_sim, frame_consistency, image_embeddings,
                                       load_clip, random_clip, text_embedding)
from cinelora.metrics.lpips_distance import MissingWeightsError

CAPTION = "A red circle moves left on a blue background, slow dolly in"


@pytest.fixture(scope="module")
def clip():
    return random_clip(seed=0)


def frames(seed: int, t: int = 5, size: int = 32) -> torch.Tensor:
    return torch.rand(t, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_clip_sim_is_the_mean_raw_cosine_of_the_models_own_similarity(clip):
    model, processor = clip
    video = frames(0)
    # CLIPModel.forward scores every image against the text as exp(logit_scale) · cosine
    inputs = processor(text=[CAPTION], images=list((video + 1) / 2), do_rescale=False, padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_image[:, 0]
    expected = float((logits / model.logit_scale.exp()).mean())
    assert clip_sim(model, processor, video, CAPTION) == pytest.approx(expected, abs=1e-6)


def test_clip_sim_by_hand_from_embeddings(clip):
    model, processor = clip
    video = frames(1)
    pixels = processor.image_processor(images=list((video + 1) / 2), do_rescale=False, return_tensors="pt")
    tokens = processor.tokenizer([CAPTION], return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output
        text = model.get_text_features(**tokens).pooler_output[0]
    cosines = [float(torch.dot(i, text) / (i.norm() * text.norm())) for i in image]
    assert clip_sim(model, processor, video, CAPTION) == pytest.approx(sum(cosines) / len(cosines), abs=1e-6)
    neighbours = [float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in zip(image[1:], image[:-1])]
    assert frame_consistency(model, processor, video) == pytest.approx(sum(neighbours) / len(neighbours), abs=1e-6)


def test_static_clip_is_fully_consistent_and_scores_stay_in_range(clip):
    model, processor = clip
    static = frames(2)[:1].repeat(6, 1, 1, 1)
    assert frame_consistency(model, processor, static) == pytest.approx(1.0, abs=1e-6)
    for seed in range(3):
        video = frames(10 + seed, size=48)  # not the encoder's size: the processor resizes and crops
        assert -1.0 <= clip_sim(model, processor, video, CAPTION) <= 1.0
        assert -1.0 <= frame_consistency(model, processor, video) <= 1.0
    assert image_embeddings(model, processor, frames(3)).norm(dim=-1) == pytest.approx(torch.ones(5), abs=1e-6)
    assert text_embedding(model, processor, CAPTION).norm() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 frames"):
        frame_consistency(model, processor, frames(4, t=1))


def test_offline_tokenizer_is_deterministic_and_keeps_caption_words_whole():
    tokenizer = build_clip_tokenizer()
    assert tokenizer.get_vocab() == build_clip_tokenizer().get_vocab()
    pieces = tokenizer.tokenize(CAPTION)
    assert pieces[:4] == ["a</w>", "red</w>", "circle</w>", "moves</w>"] and ",</w>" in pieces
    ids = tokenizer("zebra!")["input_ids"]  # not in the corpus: byte-level pieces, never unknown
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id and len(ids) > 3
    assert len(tokenizer(" ".join(["red"] * 200), truncation=True)["input_ids"]) == 77


def test_load_clip_names_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError) as error:
        load_clip(tmp_path)
    message = str(error.value)
    assert "model.safetensors" in message and "preprocessor_config.json" in message
    assert "openai/clip-vit-base-patch32" in message


def test_load_clip_reads_a_folder_saved_by_transformers(clip, tmp_path):
    model, processor = clip
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)  # transformers 5 writes processor_config.json
    loaded, loaded_processor = load_clip(tmp_path)
    torch.testing.assert_close(text_embedding(loaded, loaded_processor, CAPTION),
                               text_embedding(model, processor, CAPTION))
