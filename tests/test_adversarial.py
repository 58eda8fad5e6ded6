"""PGD/FGSM: stay in the ε-ball and the value range, raise the attacked loss, never touch parameter grads."""
import pytest
import torch

from cinelora.adversarial import fgsm_attack, pgd_attack, pixel_eps_to_unit_range


def _model_and_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 3, 1))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    target = model(x).detach() + 0.1 * torch.randn(2, 3, 8, 8)  # off the minimum: a non-zero gradient at x

    def loss_fn(x_adv):
        return ((model(x_adv) - target) ** 2).sum()

    return model, x, loss_fn


def test_pixel_eps_converts_to_the_minus_one_one_range():
    assert pixel_eps_to_unit_range(4.0) == pytest.approx(8 / 255)
    assert pixel_eps_to_unit_range(4.0, 0.0, 1.0) == pytest.approx(4 / 255)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_stays_in_ball_and_range_and_raises_loss(norm, random_start):
    model, x, loss_fn = _model_and_loss()
    x[0, 0, 0, 0] = 0.999  # a pixel at the range edge: the range clamp must hold there too
    eps = 0.05 if norm == "linf" else 0.5
    adv = pgd_attack(loss_fn, x, eps=eps, step_size=eps / 4, steps=10, norm=norm, random_start=random_start,
                     generator=torch.Generator().manual_seed(1))
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert torch.all(size <= eps + 1e-6) and torch.all(size > eps / 4)
    assert adv.min() >= -1 and adv.max() <= 1
    assert loss_fn(adv).item() > loss_fn(x).item() + 1e-4
    assert not adv.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_pgd_increases_loss_with_more_steps_and_is_reproducible():
    _, x, loss_fn = _model_and_loss()
    one = pgd_attack(loss_fn, x, eps=0.05, step_size=0.01, steps=1)
    ten = pgd_attack(loss_fn, x, eps=0.05, step_size=0.01, steps=10)
    assert loss_fn(ten).item() > loss_fn(one).item()
    a = pgd_attack(loss_fn, x, eps=0.05, step_size=0.01, steps=3, random_start=True,
                   generator=torch.Generator().manual_seed(5))
    b = pgd_attack(loss_fn, x, eps=0.05, step_size=0.01, steps=3, random_start=True,
                   generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_fgsm_takes_one_full_eps_sign_step():
    model, x, loss_fn = _model_and_loss()
    x = x * 0.5  # away from the range edges, so no coordinate is clamped
    adv = fgsm_attack(loss_fn, x, 0.03)
    assert torch.allclose((adv - x).abs(), torch.full_like(x, 0.03), atol=1e-6)
    assert loss_fn(adv).item() > loss_fn(x).item()
    assert all(p.grad is None for p in model.parameters())


def test_rejects_unknown_norm():
    _, x, loss_fn = _model_and_loss()
    with pytest.raises(ValueError, match="l3"):
        pgd_attack(loss_fn, x, eps=0.1, step_size=0.1, steps=1, norm="l3")
