"""Provenance of a run: the facts needed to say what produced a result, and nothing identifying.

`collect_provenance` returns a JSON-ready dict for `provenance.json`: git state, config hash, seed,
profile, package versions, device, determinism flags, wall time per phase and peak memory. It records
no hostname, user name or absolute path, and refuses `extra` values that would leak one.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import resource
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from cinelora.config import ExperimentConfig, config_hash

REPO_ROOT = Path(__file__).resolve().parent.parent
GIT_SHA_VARIABLE = "CINELORA_GIT_SHA"
PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "lpips", "torchmetrics", "numpy", "decord")
# Outputs, not inputs: a run writing its own results must not mark the code it ran as dirty.
_OUTPUT_PATHSPECS = (":(exclude)results", ":(exclude)paper")


def _git(*args: str) -> str | None:
    # Only the cinelora checkout itself counts: an installed copy must not report an enclosing repository.
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_sha() -> str:
    """The checked-out commit of the cinelora repository, or "unknown" outside a checkout (or before the first commit).

    `CINELORA_GIT_SHA`, when set, names it instead: for a copy of the tree sent to a remote GPU machine, whose
    `.git` (if any came along) need not be the one the tree was committed in.
    """
    sha = os.environ.get(GIT_SHA_VARIABLE) or _git("rev-parse", "HEAD") or "unknown"
    if sha != "unknown" and not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise ValueError(f"{GIT_SHA_VARIABLE}={sha!r}: expected a 40-character hexadecimal commit id")
    return sha


def git_dirty() -> bool | None:
    """True when code or configs differ from the commit (untracked files count; results/ and paper/ do not).

    None when there is no checkout to compare with, or when `CINELORA_GIT_SHA` names the commit.
    """
    if os.environ.get(GIT_SHA_VARIABLE):
        return None
    status = _git("status", "--porcelain", "--", ".", *_OUTPUT_PATHSPECS)
    return None if status is None else bool(status)


def package_versions() -> dict[str, str | None]:
    """Installed distribution versions (read from metadata, so nothing heavy is imported); None if absent."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo has the marketing name there.
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.system(),
        "cuda_device": torch.cuda.get_device_name() if cuda else None,
        "cuda_device_count": torch.cuda.device_count() if cuda else 0,
        "cuda_runtime": torch.version.cuda,
        "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }


def determinism_flags() -> dict[str, Any]:
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def peak_memory() -> dict[str, int | None]:
    """Peak resident CPU memory of this process and peak CUDA memory allocated by torch, in bytes."""
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    cpu_bytes = max_rss if sys.platform == "darwin" else max_rss * 1024
    cuda_bytes = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {"cpu_max_rss_bytes": cpu_bytes, "cuda_max_allocated_bytes": cuda_bytes}


def _identifying_strings() -> list[str]:
    # Very short hostnames would match version strings by accident; absolute paths are caught anyway.
    names = [socket.gethostname(), str(Path.home())]
    return [n for n in names if len(n) >= 4]


def _check_anonymous(value: Any, key: str, identifying: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_anonymous(v, f"{key}.{k}", identifying)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_anonymous(v, f"{key}[{i}]", identifying)
    elif isinstance(value, str) and (os.path.isabs(value) or any(n in value for n in identifying)):
        raise ValueError(f"provenance key '{key}': {value!r} is an absolute path or names this machine/user; "
                         "record a path relative to the repository instead")


def collect_provenance(cfg: ExperimentConfig, *, phase_seconds: dict[str, float],
                       extra: dict | None = None) -> dict:
    """The provenance record of a run of `cfg`; `phase_seconds` maps phase name to wall seconds.

    `extra` carries run facts this module cannot see (parameter counts, precision actually used, ...).
    """
    record = {
        "experiment": cfg.name,
        "profile": cfg.profile,
        "seed": cfg.seed,
        "config_sha256": config_hash(cfg),
        "git": {"sha": git_sha(), "dirty": git_dirty()},
        "versions": package_versions(),
        "device": device_info(),
        "determinism": determinism_flags(),
        "wall_seconds": {"phases": {k: round(float(v), 3) for k, v in phase_seconds.items()},
                         "total": round(float(sum(phase_seconds.values())), 3)},
        "peak_memory": peak_memory(),
        "extra": dict(extra or {}),
    }
    _check_anonymous(record, "provenance", _identifying_strings())
    return record


def bench_provenance(wall_seconds: float, **facts) -> dict:
    """The provenance record of a benchmark run (no experiment config of its own): git sha and dirty flag, package
    versions, device, wall seconds, and the bench's own `facts` (the config it timed, its profile, ...)."""
    record = {"git": {"sha": git_sha(), "dirty": git_dirty()}, "versions": package_versions(), "device": device_info(),
              "wall_seconds": round(wall_seconds, 3), **facts}
    _check_anonymous(record, "bench provenance", _identifying_strings())
    return record


__all__ = ["collect_provenance", "bench_provenance", "git_sha", "git_dirty", "package_versions", "device_info",
           "determinism_flags", "peak_memory"]
