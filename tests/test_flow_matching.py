"""The flow-matching objective: schedule shift, interpolation, velocity target and x̂0 recovery."""
import torch

from cinelora import flow_matching as fm
from cinelora.seeding import derive_seed, generator


def test_shift_moves_mass_to_high_noise_and_keeps_endpoints():
    s = torch.linspace(0, 1, 11)
    shifted = fm.shift_sigmas(s, 5.0)
    assert torch.allclose(shifted[[0, -1]], torch.tensor([0.0, 1.0]))
    assert torch.all(shifted[1:-1] > s[1:-1])
    assert torch.allclose(fm.shift_sigmas(s, 1.0), s)


def test_exact_velocity_recovers_clean_latents():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    sig = fm.sample_sigmas(2, 5.0, generator(0, "timestep", 0))
    noisy = fm.add_noise(x0, eps, sig)
    assert torch.allclose(fm.predicted_x0(noisy, fm.velocity_target(x0, eps), sig), x0, atol=1e-5)
    assert fm.flow_matching_loss(fm.velocity_target(x0, eps), eps - x0).item() == 0.0


def test_sigmas_are_reproducible_per_step_and_differ_between_steps():
    a = fm.sample_sigmas(4, 5.0, generator(3, "timestep", 7))
    b = fm.sample_sigmas(4, 5.0, generator(3, "timestep", 7))
    c = fm.sample_sigmas(4, 5.0, generator(3, "timestep", 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.all((a > 0) & (a < 1))
    assert derive_seed(3, "noise", 1) != derive_seed(3, "timestep", 1)
