"""Benchmarks of the LoRA training step at true size: FLOP count (`flops`), step timing with the speed
levers of `cinelora.speed` (`step_bench`), attention-kernel rates (`attention`), configuration time
(`configuration`), named plans and their tidy output files (`plans`), and the cost of each loss term
(`terms`). Entry points: `python -m bench` (`make bench`, `make bench-smoke`) and `python -m bench.terms`
(`make bench-terms`); `make performance` turns what they write into docs/performance.md.
"""
