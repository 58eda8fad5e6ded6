"""The proxy instrument: what the project pre-trains itself so that `proxy` runs measure something (DESIGN.md):
a small Wan (VAE and transformer, `base_model`) and the evaluators. `loop.fit` is the one loop all of them
train with; every part is resumable and runs in chunks (`cinelora run ... --budget-minutes M`)."""
