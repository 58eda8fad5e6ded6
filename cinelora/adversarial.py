"""Input-space adversarial attacks: PGD (Madry et al. 2018, arXiv 1706.06083) and FGSM (Goodfellow et
al. 2015, arXiv 1412.6572), used by R-LPIPS training, its robustness evaluation and adversarial
conditioning of the generator.

Units: `eps` and `step_size` are in the units of the attacked tensor `x`. Project-wide ε values are in
pixel units of [0, 1] images (configs write them x255); a caller attacking an image in [-1, 1] converts
first with `pixel_eps_to_unit_range` (ε_[-1,1] = 2·ε_pixel, so the R-LPIPS recipe's 8/255 in [-1, 1] is
4/255 in pixel units).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

NORMS = ("linf", "l2")


def pixel_eps_to_unit_range(eps_255: float, lo: float = -1.0, hi: float = 1.0) -> float:
    """ε given in pixel units x255 (of [0, 1] images) → the same radius for images in [lo, hi]."""
    return eps_255 / 255.0 * (hi - lo)


def _per_sample_l2(t: Tensor) -> Tensor:
    """L2 norm of each sample of a batch [N, ...], shaped [N, 1, ..., 1] to broadcast against it."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: str, lower: float, upper: float) -> Tensor:
    """Nearest point of the `norm` ε-ball around x, then clamped to [lower, upper]. Clamping after the
    ball projection keeps the point inside the ball: x lies in the range, so clamping only moves each
    coordinate towards x."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _per_sample_l2(delta)).clamp(max=1.0)
    return (x + delta).clamp(lower, upper)


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform point of the L∞ ball, or a random direction at a uniform radius ≤ ε for L2."""
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=device) * 2 - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=generator, device=device)
        radius = torch.rand(x.shape[0], generator=generator, device=device) * eps
        delta = direction / _per_sample_l2(direction) * radius.view(-1, *([1] * (x.dim() - 1)))
    return x + delta.to(x.device, x.dtype)


def pgd_attack(loss_fn: Callable[[Tensor], Tensor], x: Tensor, *, eps: float, step_size: float, steps: int,
               norm: str = "linf", random_start: bool = False, lower: float = -1.0, upper: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient ascent on `loss_fn` (a scalar; sum per-sample losses so each sample's gradient is
    its own) within the `norm` ε-ball around `x` [N, ...] intersected with [lower, upper].

    L∞: x ← Π(x + step_size·sign(∇)); L2: x ← Π(x + step_size·∇/‖∇‖₂), norms per sample. `eps` and
    `step_size` are in the units of x (see the module docstring). Gradients are taken w.r.t. the input only
    (torch.autograd.grad), so no parameter's `.grad` is touched; the caller chooses the model's train/eval
    mode. Returns a detached tensor of x's shape and dtype.
    """
    if norm not in NORMS:
        raise ValueError(f"attack norm: found {norm!r}, expected one of {NORMS}")
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError(f"eps, step_size and steps must be ≥ 0; found {eps}, {step_size}, {steps}")
    x = x.detach()
    x_adv = _random_start(x, eps, norm, generator) if random_start else x.clone()
    x_adv = _project(x_adv, x, eps, norm, lower, upper)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x_adv)
            (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            step = grad.sign() if norm == "linf" else grad / _per_sample_l2(grad)
            x_adv = _project(x_adv + step_size * step, x, eps, norm, lower, upper)
    return x_adv.detach()


def fgsm_attack(loss_fn: Callable[[Tensor], Tensor], x: Tensor, eps: float, *, norm: str = "linf",
                lower: float = -1.0, upper: float = 1.0) -> Tensor:
    """FGSM: one full-ε gradient step (sign step for L∞, normalised step for L2), in the units of x."""
    return pgd_attack(loss_fn, x, eps=eps, step_size=eps, steps=1, norm=norm, lower=lower, upper=upper)
