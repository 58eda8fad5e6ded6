"""Achieved rate of torch's fused attention kernels at the Wan self-attention shape, forward and forward+backward.

The step's dearest op is the self-attention over all N video tokens (40 heads x 128 at true size), so the
kernel choice bounds the step time. Each SDPA kernel (and FlashAttention-4 in the flash backend's place,
where installed) runs on two layouts: `bshd_view`, the [B, S, H, D] projection output seen through a
permute (what diffusers' "native" backend passes), and `bhsd_contiguous`, a copy into [B, H, S, D] (what
its "_native_cudnn" backend passes). Rates are model FLOPs: forward 4 N^2 H D, forward+backward 3x that
(the score recompute inside the backward not counted).
"""
from __future__ import annotations

import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

from cinelora.speed import fa4

# "fa4": the flash backend with FlashAttention-4 swapped in (cinelora/speed/fa4.py), where flash-attn-4 is installed
KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
           "efficient": SDPBackend.EFFICIENT_ATTENTION, "fa4": SDPBackend.FLASH_ATTENTION}
LAYOUTS = ("bshd_view", "bhsd_contiguous")
COLUMNS = ("device", "kernel", "layout", "tokens", "heads", "head_dim", "pass", "seconds", "tflops")


def _time(fn, repeats: int) -> float:
    """Median seconds of `fn` over `repeats` runs after one warm-up, timed with CUDA events."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def attention_rates(device: torch.device, tokens: int, heads: int, head_dim: int,
                    repeats: int = 2) -> tuple[list[dict], dict[str, str]]:
    """Rows (kernel, layout, pass, seconds, tflops) for self-attention over `tokens`, and the kernels that refused."""
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v, grad = (torch.randn(1, tokens, heads, head_dim, device=device, dtype=torch.bfloat16, generator=g)
                     for _ in range(4))
    grad = grad.transpose(1, 2)  # the gradient reaches attention through the same permute as its output
    forward_flops = 4 * tokens * tokens * heads * head_dim
    name = torch.cuda.get_device_name(device)
    rows, refused = [], {}
    for kernel, backend in KERNELS.items():
        if kernel == "fa4" and not fa4.installed():
            refused["fa4"] = f"flash-attn-4 is not installed: {fa4.PACKAGE_HINT}"
            continue
        for layout in LAYOUTS:
            inputs = [x.transpose(1, 2) if layout == "bshd_view" else x.transpose(1, 2).contiguous()
                      for x in (q, k, v)]
            inputs = [x.detach().requires_grad_(True) for x in inputs]

            def forward():
                with sdpa_kernel(backend):
                    return scaled_dot_product_attention(*inputs)

            def forward_backward():
                torch.autograd.grad(forward(), inputs, grad)

            try:
                if kernel == "fa4":
                    fa4.activate(device)
                timed = {"forward": (_time(forward, repeats), forward_flops),
                         "forward_backward": (_time(forward_backward, repeats), 3 * forward_flops)}
            except (RuntimeError, AssertionError) as err:  # shapes or strides a kernel does not take (FA4 asserts)
                refused[f"{kernel}/{layout}"] = str(err).splitlines()[0]
                continue
            finally:
                fa4.restore()
            rows += [{"device": name, "kernel": kernel, "layout": layout, "tokens": tokens, "heads": heads,
                      "head_dim": head_dim, "pass": p, "seconds": s, "tflops": f / s / 1e12}
                     for p, (s, f) in timed.items()]
    return rows, refused


__all__ = ["attention_rates", "KERNELS", "LAYOUTS", "COLUMNS"]
