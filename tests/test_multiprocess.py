"""Multi-process training through accelerate on the CPU (gloo): the LoRA trained by 2 processes equals the one
trained by 1 process with the same global batch (2 processes x accumulation 2 = 1 x 4) within rtol 1e-4, atol 1e-6
(measured: 1.5e-8 at most), with DDP, with FSDP2 launched from the committed configs/accelerate/2gpu_fsdp.yaml, and
with both processes in one context-parallel group (accumulation 4, each carrying half of every clip's tokens;
robust_lpips_r8, so the PGD attack and the R-LPIPS term are included)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
RUN = ["-m", "cinelora", "train", "--profile", "smoke", "--config"]
FSDP2 = ROOT / "configs" / "accelerate" / "2gpu_fsdp.yaml"


def _config(tmp: Path, name: str, grad_accum: int, parent: str = "lora_r8") -> Path:
    """`tmp`/experiments/<name>/config.yaml, beside a copy of the repository's experiments: `parent`'s smoke run with
    `grad_accum` micro-batches a step, 2 steps, a checkpoint after each (step 1 to resume from)."""
    experiments = tmp / "experiments"
    if not experiments.exists():
        shutil.copytree(ROOT / "experiments", experiments)
    (experiments / name).mkdir()
    path = experiments / name / "config.yaml"
    path.write_text(yaml.safe_dump({"name": name, "parent": parent, "train": {"grad_accum": grad_accum}, "profiles": {
        "smoke": {"train.steps": 2, "train.val_every": 2, "train.checkpoint_every": 1}}}))
    return path


def _run(command: list[str], cwd: Path) -> str:
    """Run `command`; its stdout, or a failure that shows the end of its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(command)} failed:\n{out.stderr[-4000:]}"
    return out.stdout


def _lora(tmp: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(tmp / "results" / name / "smoke" / "lora" / "pytorch_lora_weights.safetensors")


def _assert_same_lora(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # the LoRA did train


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The reference: 1 process x accumulation 4 (folder, LoRA)."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    _run([sys.executable, *RUN, str(_config(tmp, "one_process", 4))], tmp)
    return tmp, _lora(tmp, "one_process")


def test_two_ddp_processes_train_the_same_lora_as_one(one_process):
    tmp, reference = one_process
    # torchrun starts the processes; accelerate's Accelerator sees WORLD_SIZE=2 and trains with gloo DDP.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    out = _run([*torchrun, *RUN, str(_config(tmp, "two_processes", 2))], tmp)
    assert out.count('"steps": 2') == 1  # one summary: the main process of two
    _assert_same_lora(reference, _lora(tmp, "two_processes"))


def test_fsdp2_configs_differ_only_in_the_number_of_processes():
    two, eight = (yaml.safe_load(p.read_text()) for p in (FSDP2, FSDP2.with_name("8gpu_fsdp.yaml")))
    assert two["fsdp_config"]["fsdp_version"] == 2 and two["distributed_type"] == "FSDP"
    assert (two.pop("num_processes"), eight.pop("num_processes")) == (2, 8) and two == eight


def test_two_fsdp2_processes_train_and_resume_the_same_lora_as_one(one_process):
    tmp, reference = one_process
    config = _config(tmp, "fsdp2", 2)
    # accelerate launch reads the committed config (FSDP2, wrap per WanTransformerBlock); tests/fsdp2_on_cpu.py
    # runs the CLI with the one gate lifted that keeps accelerate from FSDP on CPU processes (see its docstring).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP2),
              "--main_process_port", "29534", str(ROOT / "tests" / "fsdp2_on_cpu.py"), "train", "--profile", "smoke",
              "--config", str(config)]
    out = _run(launch, tmp)
    assert "prepared FSDPWanTransformer3DModel: 24 of 24 LoRA tensors sharded over 2 processes" in out
    assert out.count('"steps": 2') == 1
    _assert_same_lora(reference, _lora(tmp, "fsdp2"))

    # Resume from the FSDP2 run's own step-1 checkpoint (LoRA and AdamW state gathered whole, then re-sharded).
    checkpoints = tmp / "runs" / "fsdp2" / "smoke" / "checkpoints"
    shutil.rmtree(checkpoints / "step_0000002")
    shutil.rmtree(tmp / "results" / "fsdp2" / "smoke" / "lora")
    assert "resuming from step_0000001 (step 1/2)" in _run(launch, tmp)
    _assert_same_lora(reference, _lora(tmp, "fsdp2"))


@pytest.mark.slow  # 24 s of two spawned processes (37 s on a slow CI machine): `make test-slow`
def test_two_context_parallel_processes_train_the_same_lora_as_one(tmp_path):
    # robust_lpips_r8: the PGD attack's frame gradient and the R-LPIPS term go through the split sequence too
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "rlpips_metric").symlink_to(ROOT / "results" / "rlpips_metric")  # the R-LPIPS heads
    _run([sys.executable, *RUN, str(_config(tmp_path, "one_process", 4, "robust_lpips_r8"))], tmp_path)
    # both ranks see the same 4 clips per step (one context-parallel group), each carrying half of every clip's
    # tokens; tests/context_parallel_on_cpu.py lifts diffusers' accelerator-only gate (see its docstring)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29535"]
    out = _run([*torchrun, str(ROOT / "tests" / "context_parallel_on_cpu.py"), "train", "--profile", "smoke",
                "--config", str(_config(tmp_path, "context_parallel", 4, "robust_lpips_r8")), "--context-parallel",
                "2"], tmp_path)
    assert out.count('"context_parallel": 2') == 1
    _assert_same_lora(_lora(tmp_path, "one_process"), _lora(tmp_path, "context_parallel"))
    # the gradient itself, before clipping (AdamW alone would hide a gradient scaled by a constant)
    norms = [[json.loads(line)["grad_norm"] for line in (tmp_path / "results" / name / "smoke" / "train_log.jsonl")
              .read_text().splitlines()] for name in ("one_process", "context_parallel")]
    assert len(norms[0]) == 2 and norms[0] == pytest.approx(norms[1], rel=1e-5)
