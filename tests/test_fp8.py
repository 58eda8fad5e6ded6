"""fp8 frozen linears: row-wise quantisation, the replaced layer against nn.Linear (forward and input gradient),
and the conversion of a LoRA transformer's frozen linears (LoRA layers untouched)."""
import pytest
import torch

from cinelora import lora, models
from cinelora.speed import fp8
from cinelora.config import LoraConfig


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_quantize_rows_scales_each_row_to_the_e4m3_range():
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 6)[:, None]
    q, scale = fp8.quantize_rows(x)
    assert q.dtype == fp8.E4M3 and q.is_contiguous() and scale.shape == (6, 1)
    assert torch.allclose(q.float().abs().amax(dim=1), torch.full((6,), fp8.E4M3_MAX))  # each row uses the range
    assert _relative_error(q.float() * scale, x) < 0.05  # 3 mantissa bits: ~2-3% per element


def test_frozen_fp8_linear_matches_the_linear_within_fp8_rounding():
    g = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(64, 48).requires_grad_(False)
    with torch.no_grad():
        linear.bias.normal_(generator=g)
    x = torch.randn(3, 10, 64, generator=g, requires_grad=True)
    want = linear(x)
    (want_grad,) = torch.autograd.grad(want.square().sum(), x)
    x.grad = None
    layer = fp8.FrozenFp8Linear(linear)
    got = layer(x)
    (got_grad,) = torch.autograd.grad(got.square().sum(), x)
    assert got.shape == want.shape and _relative_error(got, want) < 0.05
    assert _relative_error(got_grad, want_grad) < 0.08
    assert not [p for p in layer.parameters() if p.requires_grad]  # no weight gradient: nothing to train
    with pytest.raises(ValueError, match="frozen linears only"):
        fp8.FrozenFp8Linear(torch.nn.Linear(4, 4))


def test_conversion_replaces_the_frozen_linears_and_keeps_the_lora():
    transformer = models.build_transformer("smoke", torch.float32, "cpu", seed=0)
    lora.attach_lora(transformer, LoraConfig())
    before = lora.lora_state_dict(transformer)
    linears = sum(type(m) is torch.nn.Linear and not m.weight.requires_grad for m in transformer.blocks.modules())
    assert fp8.convert_frozen_linears(transformer.blocks) == linears > 0
    assert not any(type(m) is torch.nn.Linear and not m.weight.requires_grad for m in transformer.blocks.modules())
    after = lora.lora_state_dict(transformer)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
