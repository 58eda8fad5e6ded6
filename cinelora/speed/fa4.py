"""FlashAttention-4 as the kernel behind torch's flash SDPA backend: the `fa4` attention backend.

torch (>= 2.10) can swap the kernel of SDPA's flash backend for FlashAttention-4's CuTe kernels
(`torch.nn.attention.register_flash_attention_impl` / `activate_flash_attention_impl`). diffusers'
`_native_flash` backend then runs FA4, in compiled blocks and under the kept-attention tape alike, since
both see the same aten op. The kernels come from the flash-attn-4 package (`pip install
"flash-attn-4[cu13]"`, or without `[cu13]` for CUDA 12 builds) and run on Hopper and Blackwell GPUs.

This module is the kernel module torch's glue is pointed at: torch 2.11 unpacks two values from
`_flash_attn_fwd`, which returns five since flash-attn-4 4.0.0b34, so the forward here keeps the first two
(out and log-sum-exp) for any torch that has the glue.
"""
from __future__ import annotations

import functools
import importlib.util

import torch
from torch.nn import attention

IMPL = "FA4 (flash-attn-4 through cinelora.speed.fa4)"
PACKAGE_HINT = "pip install 'flash-attn-4[cu13]' (without [cu13] for a CUDA 12 torch)"


def _flash_attn_fwd(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """FA4's forward; returns (out, lse) only."""
    from flash_attn.cute import interface
    out, lse = interface._flash_attn_fwd(*args, **kwargs)[:2]
    return out, lse


def _flash_attn_bwd(*args, **kwargs) -> tuple[torch.Tensor, ...]:
    """FA4's backward, unchanged: (dq, dk, dv)."""
    from flash_attn.cute import interface
    return interface._flash_attn_bwd(*args, **kwargs)


def installed() -> bool:
    """Whether the flash-attn-4 kernels can be imported (the FlashAttention-2 package has no `flash_attn.cute`)."""
    return importlib.util.find_spec("flash_attn") is not None and importlib.util.find_spec("flash_attn.cute") is not None


def active() -> bool:
    """Whether torch's flash SDPA kernel is FA4 in this process."""
    return attention.current_flash_attention_impl() == IMPL


def activate(device: torch.device) -> None:
    """Make torch's flash SDPA kernel FA4 for the whole process, until `restore` (a no-op where it is already)."""
    if active():
        return
    if not installed():
        raise ModuleNotFoundError(f"attention_backend 'fa4' needs the flash-attn-4 package: {PACKAGE_HINT}")
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] not in (9, 10):
        raise RuntimeError(f"attention_backend 'fa4': FlashAttention-4 runs on Hopper or Blackwell GPUs (compute "
                           f"capability 9.x or 10.x); the transformer is on {device}")
    from torch.nn.attention import _fa4  # torch's glue: registers the kernels of `module_path` for the aten ops
    attention.register_flash_attention_impl(
        IMPL, register_fn=functools.partial(_fa4.register_flash_attention_fa4, module_path=__name__))
    attention.activate_flash_attention_impl(IMPL)


def restore() -> None:
    """Give torch's flash SDPA backend its own kernel back (a no-op where FA4 is not active)."""
    if active():
        attention.restore_flash_attention_impl()


__all__ = ["IMPL", "PACKAGE_HINT", "activate", "active", "installed", "restore"]
