"""The compute benchmark on the CPU: the FLOP count against a hand count and against torch's own FLOP
counter, the speed levers leave the gradients unchanged, and the smoke plan runs end to end."""
import csv
import json
import os

import pytest
import torch
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from cinelora import lora, models
from bench import flops
from cinelora.shapes import video_tokens
from bench.plans import PLANS, run_plan
from bench.step_bench import image_tokens, peak_bf16_tflops
from cinelora.config import CROSS_ATTENTION_TARGETS, LoraConfig
from cinelora.speed.checkpointing import RECOMPILE_LIMIT, apply_speed_levers
from cinelora.speed.levers import ALLOCATOR_VARIABLE, BlockPlan, SpeedLevers, block_plans, configure_cuda_allocator

LEVERS = [SpeedLevers(checkpointing="none"), SpeedLevers(), SpeedLevers(keep_attention_blocks=1),
          SpeedLevers(offload_blocks=2), SpeedLevers(keep_attention_blocks=1, offload_blocks=1),
          SpeedLevers(keep_attention_blocks=2, offload_blocks=1),
          SpeedLevers(uncheckpointed_blocks=1, keep_attention_blocks=2, offload_blocks=1),
          SpeedLevers(keep_ffn_blocks=1), SpeedLevers(keep_ffn_blocks=2, keep_attention_blocks=2, offload_blocks=1)]

# one block, d = 4, FFN 8, 2 video tokens (5 frames of 16x16 -> latents 2x2x2 -> patches 2x1x1), 3 image tokens
TINY = dict(num_attention_heads=1, attention_head_dim=4, ffn_dim=8, num_layers=1, patch_size=(1, 2, 2),
            in_channels=36, out_channels=16, text_dim=4, freq_dim=8, image_dim=2, added_kv_proj_dim=4)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the smoke model's ops are tiny: extra intra-op threads only add contention (100x slower on a busy 2-core box)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_step_flops_equal_a_hand_count_for_a_tiny_config():
    # mm(M, i, o) = 2·M·i·o; N = 2, d = 4, f = 8, L_t = 512, L_i = 3, rank 1 on the six cross-attention linears
    forward = (4 * 64            # self-attention q, k, v, out: mm(2, 4, 4) each
               + 2 * 32          # self-attention QKᵀ and PV: mm(2, 4, 2) each
               + (64 + 32)       # cross q: base + LoRA mm(2, 4, 1) + mm(2, 1, 4)
               + 2 * (16384 + 8192)  # text k, v over 512 tokens: base mm(512, 4, 4) + LoRA
               + 2 * (96 + 48)   # image k, v over 3 tokens
               + 2 * 8192        # text scores and values: mm(2, 4, 512) each
               + 2 * 48          # image scores and values: mm(2, 4, 3) each
               + (64 + 32)       # cross out
               + 128 + 128       # FFN up, down
               + 2304            # patch embedding: mm(2, 36·1·2·2, 4)
               + 16384 + 16384   # text embedder: two linears over 512 tokens
               + 64 + 32 + 192   # time embedder and its 6·d projection
               + 24 + 48         # image embedder (mult 1): mm(3, 2, 2) + mm(3, 2, 4)
               + 1024)           # output projection: mm(2, 4, 16·4)
    # block 0 has no gradient before its cross-attention: no self-attention backward, LoRA weight grads only
    backward = (32 + 16              # cross q LoRA: dA, dB, d(middle); its input needs no gradient
                + 2 * (8192 + 4096)  # text k, v LoRA
                + 2 * (48 + 24)      # image k, v LoRA
                + 2 * 16384          # text attention backward = 2x its forward
                + 2 * 96             # image attention backward
                + 64 + 32 + 16 + 16  # cross out: base input grad, LoRA weight, middle and input grads
                + 128 + 128          # FFN input grads
                + 1024)              # output projection input grad
    got = flops.step_flops(TINY, frames=5, height=16, width=16, image_tokens=3, rank=1,
                           targets=CROSS_ATTENTION_TARGETS)
    assert (got.forward, got.backward) == (forward, backward) == (103144, 59136)
    assert got.recompute == 66688  # the whole block again (forward minus everything outside the blocks)
    assert got.kernel_recompute == 8192 + 48  # QKᵀ of the two cross-attentions, redone in their backward
    keep = flops.step_flops(TINY, frames=5, height=16, width=16, image_tokens=3, rank=1,
                            targets=CROSS_ATTENTION_TARGETS, keep_attention_blocks=1)
    assert keep.recompute == 66688 - 64  # the self-attention core is kept, not redone
    stored = flops.step_flops(TINY, frames=5, height=16, width=16, image_tokens=3, rank=1,
                              targets=CROSS_ATTENTION_TARGETS, uncheckpointed_blocks=1)
    assert (stored.model, stored.recompute, stored.kernel_recompute) == (got.model, 0, got.kernel_recompute)
    ffn = flops.step_flops(TINY, frames=5, height=16, width=16, image_tokens=3, rank=1,
                           targets=CROSS_ATTENTION_TARGETS, keep_ffn_blocks=1, keep_attention_blocks=1)
    assert (ffn.model, ffn.recompute) == (got.model, 66688 - 64 - 128 - 128)  # nor the FFN's up and down products
    two = flops.step_flops(TINY, frames=5, height=16, width=16, image_tokens=3, rank=1,
                           targets=CROSS_ATTENTION_TARGETS, batch=2, checkpointing="none")
    assert (two.model, two.recompute) == (2 * got.model, 0)


def test_true_size_token_counts_and_flops():
    config = models.transformer_config("wan2.1-i2v-14b")
    assert video_tokens(config, 81, 720, 1280) == 21 * 45 * 80 == 75_600
    assert video_tokens(config, 81, 480, 832) == 32_760
    step = flops.step_flops(config, frames=81, height=720, width=1280, image_tokens=image_tokens("wan2.1-i2v-14b"),
                            rank=8, targets=CROSS_ATTENTION_TARGETS)
    assert image_tokens("wan2.1-i2v-14b") == 257
    self_attention = 40 * 4 * 75_600**2 * 5120  # the dominant term: 40 blocks of QKᵀ and PV
    assert 0.7 < self_attention / step.forward < 0.75
    with pytest.raises(ValueError, match="4k\\+1"):
        video_tokens(config, 80, 720, 1280)


def _smoke_transformer():
    transformer = models.build_transformer("smoke", torch.float32, "cpu", seed=0)
    lora.attach_lora(transformer, LoraConfig())
    with torch.no_grad():  # B = 0 at init would make every LoRA-A gradient zero
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    transformer.train()
    return transformer


@pytest.fixture(scope="module")
def smoke_transformer():
    return _smoke_transformer()


def _grads(transformer, levers: SpeedLevers) -> dict[str, torch.Tensor]:
    apply_speed_levers(transformer, levers)
    _backward(transformer)
    out = {n: p.grad.clone() for n, p in transformer.named_parameters() if p.grad is not None}
    transformer.zero_grad(set_to_none=True)
    return out


def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(1, 36, 2, 4, 4, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
                encoder_hidden_states_image=torch.randn(1, image_tokens("smoke"), 4, generator=g))


def _backward(transformer) -> None:
    out = transformer(**_inputs(), return_dict=False)[0]
    out.square().mean().backward()


@pytest.mark.parametrize("levers", LEVERS, ids=lambda lev: f"{lev.checkpointing}-k{lev.keep_attention_blocks}"
                                                            f"-o{lev.offload_blocks}-j{lev.uncheckpointed_blocks}"
                                                            f"-f{lev.keep_ffn_blocks}")
def test_step_flops_equal_torch_flop_counter_on_the_smoke_transformer(smoke_transformer, levers):
    # the CPU's fused SDPA op is not in torch's table: count it with torch's own SDPA formulas (the backward
    # formula includes the QKᵀ recompute of fused kernels, so the counter sees hardware FLOPs)
    aten = torch.ops.aten
    custom = {aten._scaled_dot_product_flash_attention_for_cpu:
              lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
              aten._scaled_dot_product_flash_attention_for_cpu_backward:
              lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)}
    apply_speed_levers(smoke_transformer, levers)
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        _backward(smoke_transformer)
    smoke_transformer.zero_grad(set_to_none=True)
    expected = flops.step_flops(models.transformer_config("smoke"), frames=5, height=32, width=32,
                                image_tokens=image_tokens("smoke"), rank=8, targets=CROSS_ATTENTION_TARGETS,
                                checkpointing=levers.checkpointing, keep_attention_blocks=levers.keep_attention_blocks,
                                uncheckpointed_blocks=levers.uncheckpointed_blocks,
                                keep_ffn_blocks=levers.keep_ffn_blocks)
    assert counter.get_total_flops() == expected.hardware


def test_speed_levers_leave_the_gradients_unchanged(smoke_transformer):
    reference = _grads(smoke_transformer, SpeedLevers(checkpointing="none"))
    assert len(reference) == 2 * 2 * len(CROSS_ATTENTION_TARGETS)  # A and B of six linears in two blocks
    assert all(g.abs().sum() > 0 for g in reference.values())
    for levers in [*LEVERS[1:], SpeedLevers(attention_backend="_native_math", offload_blocks=1)]:
        got = _grads(smoke_transformer, levers)
        assert got.keys() == reference.keys()
        for name in reference:
            torch.testing.assert_close(got[name], reference[name], rtol=1e-5, atol=1e-6, msg=f"{levers} {name}")
    apply_speed_levers(smoke_transformer, SpeedLevers())


@pytest.mark.slow  # about 80 s of inductor compilation on one CPU core: `make test-slow`
def test_compiled_blocks_with_kept_attention_leave_the_gradients_unchanged():
    # compiled code reuses an attention output's buffer once it is dead: a kept output must be a copy; a kept
    # FFN breaks the compiled block's graph in two (block 0 keeps its FFN, block 1 runs it compiled)
    transformer = _smoke_transformer()
    reference = _grads(transformer, SpeedLevers(checkpointing="none"))
    got = _grads(transformer, SpeedLevers(keep_attention_blocks=2, offload_blocks=1, keep_ffn_blocks=1,
                                          compile_blocks=True))
    assert got.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(got[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_attention_backend_is_set_for_every_case(smoke_transformer):
    processors = [m.processor for m in smoke_transformer.modules() if hasattr(m, "processor")]
    apply_speed_levers(smoke_transformer, SpeedLevers(attention_backend="_native_math"))
    apply_speed_levers(smoke_transformer, SpeedLevers())
    assert processors and all(p._attention_backend == AttentionBackendName.NATIVE for p in processors)
    assert _AttentionBackendRegistry.get_active_backend()[0] == AttentionBackendName.NATIVE


def test_lever_validation_and_block_assignment():
    attention, offload = BlockPlan(keep_attention=True), BlockPlan(offload=True)
    both = BlockPlan(keep_attention=True, offload=True)
    assert block_plans(5, SpeedLevers(keep_attention_blocks=2, offload_blocks=1)) == [
        attention, attention, BlockPlan(), BlockPlan(), offload]
    assert block_plans(3, SpeedLevers(keep_attention_blocks=2, offload_blocks=2)) == [attention, both, offload]
    assert block_plans(4, SpeedLevers(uncheckpointed_blocks=1, keep_attention_blocks=4, offload_blocks=2)) == [
        BlockPlan(checkpointed=False), attention, both, both]
    assert block_plans(3, SpeedLevers(uncheckpointed_blocks=1, keep_ffn_blocks=2, offload_blocks=1)) == [
        BlockPlan(checkpointed=False), BlockPlan(keep_ffn=True), offload]
    with pytest.raises(ValueError, match="has 3 blocks"):
        block_plans(3, SpeedLevers(offload_blocks=4))
    with pytest.raises(ValueError, match="has 3 blocks"):
        block_plans(3, SpeedLevers(keep_ffn_blocks=4))
    with pytest.raises(ValueError, match="both offloaded and uncheckpointed"):
        block_plans(3, SpeedLevers(uncheckpointed_blocks=2, offload_blocks=2))
    with pytest.raises(ValueError, match="checkpointing='full'"):
        SpeedLevers(checkpointing="none", keep_ffn_blocks=1)
    with pytest.raises(ValueError, match="fp8_base"):
        SpeedLevers(keep_ffn_blocks=1, fp8_base=True)
    with pytest.raises(ValueError, match=">= 0"):
        SpeedLevers(keep_ffn_blocks=-1)
    with pytest.raises(ValueError, match="checkpointing='full'"):
        SpeedLevers(checkpointing="none", offload_blocks=1)
    with pytest.raises(ValueError, match="checkpointing='full'"):
        SpeedLevers(checkpointing="none", uncheckpointed_blocks=1)
    with pytest.raises(ValueError, match="attention_backend"):
        SpeedLevers(attention_backend="flash_hub")


def test_kept_ffn_is_refused_where_its_recompute_would_not_be_exact():
    transformer = models.build_transformer("smoke", torch.float32, torch.device("cpu"), seed=0)
    lora.attach_lora(transformer, LoraConfig(targets=["attn1.to_q", "ffn.net.2"]))
    with pytest.raises(ValueError, match=r"inside the blocks' attention.*ffn\.net\.2"):
        apply_speed_levers(transformer, SpeedLevers(keep_ffn_blocks=1))
    for p in transformer.parameters():
        p.requires_grad_(False)
    transformer.condition_embedder.time_proj.weight.requires_grad_(True)  # the FFN's gate depends on it
    with pytest.raises(ValueError, match="condition_embedder.time_proj.weight"):
        apply_speed_levers(transformer, SpeedLevers(keep_ffn_blocks=1))


def test_cuda_allocator_uses_expandable_segments_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(ALLOCATOR_VARIABLE, raising=False)
    configure_cuda_allocator()
    assert os.environ[ALLOCATOR_VARIABLE] == "expandable_segments:True"
    monkeypatch.setenv(ALLOCATOR_VARIABLE, "max_split_size_mb:512")
    configure_cuda_allocator()
    assert os.environ[ALLOCATOR_VARIABLE] == "max_split_size_mb:512"


def test_peak_bf16_lookup():
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == peak_bf16_tflops("NVIDIA H200") == 989.4
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("Some Other GPU") is None


def test_smoke_plan_runs_end_to_end(tmp_path):
    record = run_plan("smoke", tmp_path, "t")
    with open(tmp_path / "steps_t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cases = {c.name for c in PLANS["smoke"].cases}
    assert {r["case"] for r in rows} == cases == set(record["cases"])
    figures = {(r["case"], r["metric"]): float(r["value"]) for r in rows}
    for case in cases:
        assert figures[case, "s_per_step_median"] > 0 and figures[case, "steps_timed"] == 2
        # same LoRA, same noise: every lever computes the same first step (fp8 products: within their rounding)
        fp8 = next(c for c in PLANS["smoke"].cases if c.name == case).levers.fp8_base
        assert figures[case, "loss_first_step"] == pytest.approx(figures["baseline", "loss_first_step"],
                                                                 rel=1e-2 if fp8 else 1e-5)
        assert figures[case, "grad_norm_first_step"] == pytest.approx(figures["baseline", "grad_norm_first_step"],
                                                                      rel=2e-2 if fp8 else 1e-4)
    assert figures["baseline", "grad_norm_first_step"] > 0
    with open(tmp_path / "configuration_t.csv", newline="") as f:
        stages = {r["stage"] for r in csv.DictReader(f)}
    assert stages == {"build_models", "vae_latents", "condition_latents", "text_embeddings", "image_embeddings",
                      "total"}
    provenance = json.loads((tmp_path / "provenance_t.json").read_text())
    assert provenance["plan"] == "smoke" and not provenance["skipped"]
    with pytest.raises(ValueError, match="no cases"):
        run_plan("smoke", tmp_path, "t", only=["nonexistent"])


def test_compiled_blocks_raise_torchs_recompile_limit(monkeypatch):
    # a bench compiles a variant per clip size, grad mode and backend; past the limit blocks run eager (and OOM)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    apply_speed_levers(_smoke_transformer(), SpeedLevers(compile_blocks=True))
    assert torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT > 8


def test_the_proxy_loop_figures_are_measured_and_written(tiny_world, tmp_path):
    from bench import proxy_loop

    cfg = tiny_world("robust_lpips_r8", ["cinematic"], {"train": 2, "val": 1, "test": 2})
    figures = proxy_loop.cache_rate(cfg, tmp_path / "cache") | proxy_loop.generation_rate(cfg, repeats=1)
    assert figures["cache_clips"] == 2 and figures["cache_s_per_clip"] > 0
    assert figures["generation_clips_per_s"] == pytest.approx(cfg.eval.batch_size / figures["generation_s_per_batch"])
    path = proxy_loop.write_figures(figures, cfg, tmp_path, "test", 1.0)
    rows = list(csv.DictReader(path.open()))
    assert [r["figure"] for r in rows] == list(figures) and {r["profile"] for r in rows} == {"smoke"}
    assert {(r["frames"], r["height"], r["width"]) for r in rows} == {
        (str(cfg.data.num_frames), str(cfg.data.height), str(cfg.data.width))}  # Table 4's clip column
    assert {r["figure"]: r["unit"] for r in rows}["generation_clips_per_s"] == "clips/s"
    assert json.loads((tmp_path / "proxy_loop_test.json").read_text())["profile"] == "smoke"
