"""The batched sampler against the stock `WanImageToVideoPipeline`: each clip of a batch is the pipeline's output
for its own first frame, caption and seed, whatever batch it is sampled in."""
from __future__ import annotations

import torch
from PIL import Image

from cinelora import models, sampling, seeding

CAPTIONS = ["a red circle moves left", "a striped blue square spins over a plain grey backdrop", "snow falls"]


def _frames() -> torch.Tensor:
    """Three 8-bit first frames uint8 [3, 32, 32, 3], as image files give them."""
    return (torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).round().byte()


def _stock(pipe, frame: torch.Tensor, caption: str, seed: int, guidance: float) -> torch.Tensor:
    video = pipe(image=Image.fromarray(frame.numpy()), prompt=caption, height=32, width=32, num_frames=5, num_inference_steps=3,
                 guidance_scale=guidance, generator=seeding.generator(seed, "generation", 0), output_type="pt").frames
    return video[0] * 2 - 1


def test_each_clip_of_a_batch_is_the_stock_pipeline_output(smoke_components):
    """Within batched-matmul rounding in a batch; bit-identical alone."""
    pipe = models.make_pipeline(smoke_components)
    pipe.set_progress_bar_config(disable=True)
    frames = _frames()
    for guidance in (1.0, 5.0):  # without and with classifier-free guidance
        gens = [seeding.generator(seed, "generation", 0) for seed in (3, 4, 5)]
        batch = sampling.sample_clips(smoke_components, frames, CAPTIONS, 5, gens, steps=3, guidance_scale=guidance)
        assert batch.shape == (3, 5, 3, 32, 32)
        for i, seed in enumerate((3, 4, 5)):
            stock = _stock(pipe, frames[i], CAPTIONS[i], seed, guidance)
            assert torch.allclose(batch[i], stock, atol=1e-5), (guidance, i, (batch[i] - stock).abs().max())
            alone = sampling.sample_clips(smoke_components, frames[i:i + 1], CAPTIONS[i:i + 1], 5,
                                          [seeding.generator(seed, "generation", 0)], 3, guidance)
            assert torch.equal(alone[0], stock)  # a batch of one is the pipeline's output bit for bit


def test_a_clip_does_not_depend_on_its_batch(smoke_components):
    frames = _frames()
    gens = [seeding.generator(9, "generation", i) for i in range(3)]
    together = sampling.sample_clips(smoke_components, frames, CAPTIONS, 5, gens, 2, 5.0)
    alone = sampling.sample_clips(smoke_components, frames[2:], CAPTIONS[2:],
                                  5, [seeding.generator(9, "generation", 2)], 2, 5.0)
    assert torch.allclose(together[2], alone[0], atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # different clips, different outputs
