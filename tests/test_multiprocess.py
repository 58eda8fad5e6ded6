"""Multi-process training through accelerate (DDP, gloo on the CPU): the LoRA trained by 2 processes equals
the one trained by 1 process with the same global batch (2 processes x accumulation 2 = 1 x 4)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp: Path, name: str, grad_accum: int) -> Path:
    text = (ROOT / "experiments" / "lora_r8" / "config.yaml").read_text()
    text = text.replace("name: lora_r8", f"name: {name}").replace("  grad_accum: 4 ", f"  grad_accum: {grad_accum} ")
    text = text.replace("    train.steps: 6\n", "    train.steps: 2\n").replace("    train.val_every: 3\n", "    train.val_every: 2\n")
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


def test_two_processes_train_the_same_lora_as_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = _config(tmp_path, "one_process", 4)
    two = _config(tmp_path, "two_processes", 2)
    assert "grad_accum: 2 " in two.read_text()
    run = ["-m", "cinelora", "train", "--profile", "smoke", "--config"]
    subprocess.run([sys.executable, *run, str(one)], cwd=tmp_path, env=env, check=True, capture_output=True)
    # torchrun starts the processes; accelerate's Accelerator sees WORLD_SIZE=2 and trains with gloo DDP.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    out = subprocess.run([*torchrun, *run, str(two)], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    assert out.stdout.count('"steps": 2') == 1  # one summary: the main process of two
    a = load_file(tmp_path / "results" / "one_process" / "smoke" / "lora" / "pytorch_lora_weights.safetensors")
    b = load_file(tmp_path / "results" / "two_processes" / "smoke" / "lora" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # the LoRA did train
