"""Benchmarks of the LoRA training step at true size: FLOP count (`flops`), step timing with the speed
levers of `cinelora.speed` (`step_bench`), attention-kernel rates (`attention`), configuration time
(`configuration`), named plans and their tidy output files (`plans`), the cost of each loss term (`terms`), the
proxy loop (`proxy_loop`) and the proxy base model's VAE step (`vae_step`); the last three share `output`. Entry
points: `python -m bench` (`make bench`, `make bench-smoke`), `python -m bench.terms` (`make bench-terms`),
`python -m bench.proxy_loop` and `python -m bench.vae_step`; `make performance` turns what they write into
docs/performance.md.
"""
