"""How the LoRA step runs fast, without changing what it computes: the levers as plain, torch-free data
(`levers`), the block checkpointing, offload and compilation behind them (`checkpointing`), FlashAttention-4
as torch's flash kernel (`fa4`), fp8 frozen linears (`fp8`) and context parallelism (`context_parallel`).

This file imports nothing, so `cinelora.speed.levers` loads without torch.
"""
