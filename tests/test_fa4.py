"""The `fa4` attention backend: FlashAttention-4 as torch's flash SDPA kernel (cinelora/speed/fa4.py).

On the CPU: the errors a user meets without the package or a Hopper/Blackwell GPU, the preflight line,
the kernel module torch's glue is pointed at, and that any other backend gives torch its own flash kernel
back. On a GPU with flash-attn-4 (`pytest -m gpu`): gradients with FA4 under compiled blocks, kept and
offloaded attention equal cuDNN's without checkpointing.
"""
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import attention

from cinelora import lora, models, objective
from cinelora.speed import fa4
from bench.step_bench import cached_inputs
from cinelora.config import ConfigError, LoraConfig, ModelConfig, load_config
from cinelora.preflight import missing_inputs
from cinelora.speed.checkpointing import apply_speed_levers
from cinelora.speed.levers import SpeedLevers

LORA_R8 = Path(__file__).resolve().parents[1] / "experiments" / "lora_r8" / "config.yaml"


@pytest.fixture(scope="module")
def smoke_transformer():
    transformer = models.build_transformer("smoke", torch.float32, "cpu", seed=0)
    lora.attach_lora(transformer, LoraConfig())
    return transformer


def test_fa4_without_the_package_names_it(smoke_transformer, monkeypatch):
    monkeypatch.setattr(fa4, "installed", lambda: False)
    with pytest.raises(ModuleNotFoundError, match=r"flash-attn-4\[cu13\]"):
        apply_speed_levers(smoke_transformer, SpeedLevers(attention_backend="fa4"))
    assert not fa4.active()


def test_fa4_on_a_cpu_model_says_which_gpus_it_needs(smoke_transformer, monkeypatch):
    monkeypatch.setattr(fa4, "installed", lambda: True)
    with pytest.raises(RuntimeError, match="Hopper or Blackwell.*cpu"):
        apply_speed_levers(smoke_transformer, SpeedLevers(attention_backend="fa4"))
    assert not fa4.active()


def _config_with(tmp_path: Path, backend: str) -> Path:
    raw = yaml.safe_load(LORA_R8.read_text())
    raw["speed"]["attention_backend"] = backend
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_preflight_reports_the_missing_package(tmp_path, monkeypatch):
    cfg = load_config(_config_with(tmp_path, "fa4"), "full")
    monkeypatch.setattr(fa4, "installed", lambda: False)
    lines = missing_inputs(cfg, train=True, evaluate=False)
    assert any(line.startswith("speed.attention_backend: fa4 needs the flash-attn-4 package") for line in lines)
    monkeypatch.setattr(fa4, "installed", lambda: True)
    assert not any("flash-attn-4" in line for line in missing_inputs(cfg, train=True, evaluate=False))


def test_config_accepts_fa4_and_rejects_other_names(tmp_path):
    assert load_config(_config_with(tmp_path, "fa4"), "smoke").speed.attention_backend == "fa4"
    with pytest.raises(ConfigError, match=r"speed\.attention_backend.*fa5"):
        load_config(_config_with(tmp_path, "fa5"), "smoke")


def test_kernel_module_hands_torch_two_forward_outputs(monkeypatch):
    # flash-attn-4 >= 4.0.0b34 returns (out, lse, p, row_max, o_lo); torch 2.11's glue unpacks two
    interface = types.SimpleNamespace(_flash_attn_fwd=lambda *a, **k: ("out", "lse", None, None, None),
                                      _flash_attn_bwd=lambda *a, **k: ("dq", "dk", "dv"))
    cute = types.ModuleType("flash_attn.cute")
    cute.interface = interface
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    assert fa4._flash_attn_fwd("q", "k", "v", return_lse=True) == ("out", "lse")
    assert fa4._flash_attn_bwd("q", "k", "v") == ("dq", "dk", "dv")


def test_another_backend_gives_torch_its_flash_kernel_back(smoke_transformer):
    removed = []

    class Handle:
        def remove(self):
            removed.append(True)

    # stands in for FA4's registration (which needs a GPU): torch's registry marks it active the same way
    attention.register_flash_attention_impl(fa4.IMPL, register_fn=Handle)
    attention.activate_flash_attention_impl(fa4.IMPL)
    assert fa4.active()
    apply_speed_levers(smoke_transformer, SpeedLevers(attention_backend="_native_math"))
    assert not fa4.active() and removed == [True]
    fa4.restore()  # nothing active: no second removal
    assert removed == [True]


def _proxy_grads(transformer, levers: SpeedLevers, inputs: dict) -> dict[str, torch.Tensor]:
    apply_speed_levers(transformer, levers)
    sigmas, noise = objective.draw_noise(0, "noise", 0, inputs["latents"], ModelConfig().flow_shift)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = objective.objective(transformer, None, inputs, sigmas, noise, None, 0.0)[0]
    loss.backward()
    grads = {n: p.grad.float().clone() for n, p in transformer.named_parameters() if p.grad is not None}
    transformer.zero_grad(set_to_none=True)
    return grads


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and fa4.installed()
                         and torch.cuda.get_device_capability()[0] in (9, 10)),
                    reason="needs a Hopper or Blackwell GPU and flash-attn-4")
def test_fa4_gradients_equal_cudnn_under_every_lever(monkeypatch):
    calls = []
    forward = fa4._flash_attn_fwd
    monkeypatch.setattr(fa4, "_flash_attn_fwd", lambda *a, **k: calls.append(1) or forward(*a, **k))
    device = torch.device("cuda")
    transformer = models.build_transformer("proxy", torch.bfloat16, device, seed=0)
    lora.attach_lora(transformer, LoraConfig())
    with torch.no_grad():  # B = 0 at init would make every LoRA-A gradient zero
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02, generator=torch.Generator(device).manual_seed(len(name)))
    transformer.train()
    inputs = cached_inputs("proxy", 21, 128, 128, device, torch.bfloat16)
    reference = _proxy_grads(transformer, SpeedLevers(attention_backend="_native_cudnn", checkpointing="none"),
                             inputs)
    blocks = len(transformer.blocks)
    got = _proxy_grads(transformer, SpeedLevers(attention_backend="fa4", keep_attention_blocks=blocks,
                                                offload_blocks=blocks // 2, keep_ffn_blocks=blocks // 2,
                                                compile_blocks=True), inputs)
    assert calls, "FA4's forward never ran"
    assert got.keys() == reference.keys()
    for name in reference:  # bf16 kernels differ in rounding: compare directions and sizes
        a, b = got[name].flatten(), reference[name].flatten()
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999, name
        assert (a - b).norm() < 0.05 * b.norm(), name
    fa4.restore()


def test_fp8_with_fa4_is_refused_before_any_work():
    with pytest.raises(ValueError, match="fp8_base.*with attention_backend 'fa4'"):
        SpeedLevers(attention_backend="fa4", fp8_base=True)
