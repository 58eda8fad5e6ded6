"""`python -m cinelora ...` under accelerate's FSDP2 with CPU processes (gloo): the launcher script of the FSDP2
test in test_multiprocess.py (`accelerate launch --config_file configs/accelerate/2gpu_fsdp.yaml tests/fsdp2_on_cpu.py
train ...`).

accelerate 1.15 turns FSDP on only for GPU-like devices: with CPU processes `AcceleratorState` stays
`DistributedType.MULTI_CPU` and wraps the model in DDP, silently ignoring ACCELERATE_USE_FSDP (accelerate/state.py
sets `DistributedType.FSDP` only in its `MULTI_GPU, MULTI_NPU, ...` branch). torch's FSDP2 (`fully_shard`) itself
runs on CPU over gloo, so this lifts that one gate and nothing else: accelerate's `fsdp2_prepare_model` then shards
the model with the plugin that `accelerate launch` built from the config file, as on GPUs. It prints, from the main
process, what `prepare` returned, so the test can check that the LoRA really was sharded.
"""
import accelerate.state
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.distributed.tensor import DTensor

from cinelora.cli import main

_state_init, _prepare = accelerate.state.AcceleratorState.__init__, Accelerator.prepare


def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs) -> None:
    _state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


def _prepare_and_report(self, *args) -> tuple:
    prepared = _prepare(self, *args)
    for obj in prepared:
        if isinstance(obj, torch.nn.Module) and self.is_main_process:
            lora = [p for n, p in obj.named_parameters() if ".lora_" in n]
            sharded = sum(isinstance(p, DTensor) and p.device_mesh.size() == self.num_processes for p in lora)
            print(f"prepared {type(obj).__name__}: {sharded} of {len(lora)} LoRA tensors sharded over "
                  f"{self.num_processes} processes", flush=True)
    return prepared


accelerate.state.AcceleratorState.__init__ = _fsdp_on_cpu
Accelerator.prepare = _prepare_and_report
main()
