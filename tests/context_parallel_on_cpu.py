"""`python -m cinelora ...` with diffusers' context parallelism on CPU processes (gloo): the launcher of the
context-parallel test in test_multiprocess.py (`torchrun --nproc_per_node 2 tests/context_parallel_on_cpu.py train
... --context-parallel 2`).

diffusers 0.42 places each context-parallel rank on `rank % torch.accelerator.device_count()`, which divides by
zero on a machine without an accelerator, and `cinelora.speed.context_parallel.enable` refuses such a machine for that
reason. The collectives themselves (all-to-all, all-gather) run on gloo, so this reports one device and changes
nothing else: the ranks' tensors stay on the CPU, where the model is.
"""
import torch

from cinelora.cli import main

torch.accelerator.device_count = lambda: 1
main()
