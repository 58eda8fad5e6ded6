"""Batched conditioning equals the stock pipeline's per-sample code, for two different inputs."""
import pytest
import torch
import torch.nn.functional as F
from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean, retrieve_latents
from PIL import Image

from cinelora import conditioning as cond
from cinelora import models

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smoke(smoke_components) -> models.WanComponents:
    return smoke_components


@pytest.fixture(scope="module")
def pipe(smoke):
    return models.make_pipeline(smoke)


def _uint8_frames(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels 0..255 as float, the same frames in [-1, 1])."""
    pixels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float()
    return pixels, pixels / 127.5 - 1.0


def test_encode_prompts_equals_the_pipeline_and_pads_to_512(smoke, pipe):
    captions = ["a red circle moves left,  slow dolly in", "Cinematic &amp; letterbox: a figure waves both arms"]
    ours = cond.encode_prompts(smoke.tokenizer, smoke.text_encoder, captions)
    reference = torch.cat([pipe._get_t5_prompt_embeds(c, max_sequence_length=512, device=CPU) for c in captions])
    assert ours.shape == (2, 512, smoke.text_encoder.config.d_model)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    lengths = [len(smoke.tokenizer(prompt_clean(c)).input_ids) for c in captions]
    assert lengths[0] != lengths[1]
    for row, n in zip(ours, lengths):
        assert row[n:].abs().sum() == 0 and row[n - 1].abs().sum() > 0
    with pytest.raises(ValueError, match="exactly 512"):
        cond.encode_prompts(smoke.tokenizer, smoke.text_encoder, captions, max_length=226)


def test_encode_condition_images_equals_the_pipelines_centre_crop(smoke, pipe):
    pixels, frames = _uint8_frames(0, (2, 3, 48, 64))  # 4:3 frames, larger than the 32 px CLIP input
    ours = cond.encode_condition_images(smoke.image_processor, smoke.image_encoder, frames)
    assert ours.shape == (2, 65, 4) and not torch.allclose(ours[0], ours[1])
    # the processor on the same float pixels: only float rounding apart
    on_floats = torch.cat([pipe.encode_image(p, CPU) for p in pixels])
    torch.testing.assert_close(ours, on_floats, rtol=1e-5, atol=1e-5)
    # PIL images (what sampling passes): the processor rounds its resized uint8 pixels, we do not
    pil = [Image.fromarray(p.permute(1, 2, 0).byte().numpy()) for p in pixels]
    on_pil = torch.cat([pipe.encode_image(im, CPU) for im in pil])
    assert (ours - on_pil).abs().max() < 0.2
    # Wan's original whole-frame resize is a different input, far outside that tolerance
    p = smoke.image_processor
    whole = F.interpolate(pixels, size=(32, 32), mode="bicubic", antialias=True) / 255.0
    whole = (whole - torch.tensor(p.image_mean).view(1, 3, 1, 1)) / torch.tensor(p.image_std).view(1, 3, 1, 1)
    whole_tokens = smoke.image_encoder(pixel_values=whole, output_hidden_states=True).hidden_states[-2]
    assert (whole_tokens - on_pil).abs().max() > 1.0


def test_condition_latents_equal_prepare_latents(smoke, pipe):
    _, first = _uint8_frames(1, (2, 3, 32, 32))
    ours = cond.condition_latents(smoke.vae, first, num_frames=5)
    reference = torch.cat([
        pipe.prepare_latents(f[None], 1, 16, 32, 32, 5, torch.float32, CPU, torch.Generator().manual_seed(0))[1]
        for f in first])
    assert ours.shape == (2, 20, 2, 4, 4) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference)
    assert (ours[:, :4, 0] == 1).all() and (ours[:, :4, 1:] == 0).all()
    assert not torch.allclose(ours[0, 4:], ours[1, 4:])
    with pytest.raises(ValueError, match="4k\\+1"):
        cond.condition_latents(smoke.vae, first, num_frames=6)


def test_encode_video_latents_is_the_normalised_posterior_mode(smoke):
    _, video = _uint8_frames(2, (2, 3, 5, 32, 32))
    ours = cond.encode_video_latents(smoke.vae, video)
    assert ours.shape == (2, 16, 2, 4, 4)
    torch.testing.assert_close(cond.encode_video_latents(smoke.vae, video), ours, rtol=0, atol=0)  # no sampling
    vae = smoke.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    for clip, latents in zip(video, ours):  # per sample, as prepare_latents normalises the condition
        mode = retrieve_latents(vae.encode(clip[None]), sample_mode="argmax")
        torch.testing.assert_close(latents[None], (mode - mean) * inv_std)


def test_gradients_reach_the_conditioning_frame(smoke):
    """PGD on the conditioning frame differentiates through both of its encoders."""
    _, first = _uint8_frames(3, (2, 3, 32, 32))
    first.requires_grad_(True)
    loss = cond.condition_latents(smoke.vae, first, 5)[:, 4:].square().mean()
    loss = loss + cond.encode_condition_images(smoke.image_processor, smoke.image_encoder, first).square().mean()
    loss.backward()
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert (first.grad[0].abs().sum() > 0) and (first.grad[1].abs().sum() > 0)
