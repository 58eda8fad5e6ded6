"""The study's one home: its experiments in dependency order, Table 2's methods, and how the paper words each
profile's numbers.

Standard library only: the Makefile reads the lists with the system `python3`, before the venv exists
(`METHODS := $(shell python3 -m cinelora.study methods)`), so neither this module nor `cinelora/__init__.py`
may import anything else.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

METHODS = ("base", "lora_r8", "lpips_r8", "robust_lpips_r8")  # DESIGN §1, Table 2's row order
BASELINE = "lora_r8"  # significance marks compare each method with the plain flow-matching LoRA
MAIN = "robust_lpips_r8"  # the study's method
# The generator fine-tunes on this domain only (data.train of every generator config; a test checks it).
TRAIN_DOMAIN = "cinematic"
METRIC_EXPERIMENT = "rlpips_metric"  # trains the R-LPIPS heads the perceptual runs score with; Table 1
ABLATIONS = ("robust_lpips_r4", "robust_lpips_r16", "robust_lpips_r8_eps1", "robust_lpips_r8_eps2",
             "robust_lpips_r8_eps4", "robust_lpips_r8_eps8", "robust_lpips_r8_noadv", "adv_only_r8",
             "robust_lpips_r8_noearlystop", "two_stage_r8")
# Dependency order: the metric's heads feed the perceptual runs, and an ablation follows its parent.
EXPERIMENTS = (METRIC_EXPERIMENT, *METHODS, *ABLATIONS)
CURVE_EXPERIMENTS = (*METHODS, "robust_lpips_r8_noearlystop")  # the main run without early stopping, for contrast
# The study's seeds (`cinelora run --seed K`: LoRA init, data order, noise, generation); the metric experiment and the
# instrument are trained once (seed 0), as the evaluators of every seed's runs.
STUDY_SEEDS = (0, 1, 2)
# The proxy instrument (proxy and smoke only), in dependency order: the evaluators, then the base model, whose
# evidence they score (with the LPIPS heads the metric experiment trains on the evaluators' trunk).
EVALUATORS = "proxy_evaluators"  # its fvd_sanity.csv holds each domain's real-vs-real FVD noise floor (Table 2)
INSTRUMENT = (EVALUATORS, "proxy_base")
# The search that chooses the proxy profile's lr, steps, λ and ε on validation clips (issue 16; proxy and smoke only):
# after the instrument, before the study, whose proxy runs take its outcome (experiments/lora_r8 `profiles: proxy:`).
SEARCH = "proxy_search"


@dataclass(frozen=True)
class ProfileText:
    """How the paper words the numbers of one profile (`cinelora.config.PROFILES`), per context."""

    generator: str  # caption note on generator runs: Tables 2-4 and the figure-caption macros of numbers.tex
    metric: str  # caption note on 2AFC scores: Table 1 (and the metric-vs-ε caption unless `metric_brief`)
    title: str  # title phrase of the generator figures
    metric_title: str  # title phrase of the metric-vs-ε figure
    scale: str  # Table 4's name for the model size, which keys its block
    scale_title: str  # Table 4's block heading
    architecture: str  # the `model.architecture` preset that bench rows of this size name
    metric_brief: str | None = None  # the metric-vs-ε caption's note, where it is worded apart from `metric`


PROFILE_TEXT = {
    "full": ProfileText(
        generator="Full: Wan2.1-I2V-14B scored with the published evaluator weights.",
        metric="Full: BAPPS 2AFC sets (human judgments) with the ImageNet AlexNet trunk.",
        title="full: Wan2.1-I2V-14B",
        metric_title="BAPPS, ImageNet AlexNet trunk",
        scale="true size",
        scale_title="true size: the Wan2.1-I2V-14B transformer (16.4B parameters)",
        architecture="wan2.1-i2v-14b"),
    "proxy": ProfileText(
        generator="Proxy: a small Wan pre-trained by this project on its procedural world and scored by evaluators "
                  "trained there; proxy-scale numbers, not Wan2.1-14B ones.",
        metric="Proxy: procedural 2AFC patches cut from this project's world, judgments derived from distortion "
               "severity, and an AlexNet trunk this project trained on world frames; proxy numbers, not BAPPS ones.",
        title="proxy: small Wan on the procedural world, not Wan2.1-14B",
        metric_title="proxy: procedural 2AFC, project-trained trunk",
        scale="proxy",
        scale_title="proxy: the small Wan of the proxy profile",
        architecture="proxy",
        metric_brief="Proxy: procedural 2AFC patches with judgments derived from distortion severity and an AlexNet "
                     "trunk trained on world frames; not BAPPS numbers."),
    "smoke": ProfileText(
        generator="Smoke: random-weight tiny models; a pipeline check only, not evidence.",
        metric="Smoke: a tiny procedural 2AFC set, a few training steps and a random trunk; a pipeline check only, "
               "not evidence.",
        title="smoke: random-weight tiny models, a pipeline check, not evidence",
        metric_title="smoke: pipeline check, not evidence",
        scale="smoke",
        scale_title="smoke: the tiny Wan of the smoke profile",
        architecture="smoke"),
}
LISTS = {"methods": METHODS, "ablations": ABLATIONS, "experiments": EXPERIMENTS, "curve_experiments": CURVE_EXPERIMENTS,
         "instrument": INSTRUMENT, "search": (SEARCH,), "seeds": tuple(str(k) for k in STUDY_SEEDS),
         "metric": (METRIC_EXPERIMENT,)}


def main(argv: list[str] | None = None) -> None:
    """Print one of `LISTS`, space-separated, for the Makefile.

    Example: python3 -m cinelora.study experiments
    """
    parser = argparse.ArgumentParser(prog="python3 -m cinelora.study", description="Print a list of the study's "
                                     "experiments, space-separated (the Makefile reads them).")
    parser.add_argument("name", choices=list(LISTS))
    print(" ".join(LISTS[parser.parse_args(argv).name]))


__all__ = ["METHODS", "BASELINE", "MAIN", "TRAIN_DOMAIN", "METRIC_EXPERIMENT", "ABLATIONS", "EXPERIMENTS",
           "CURVE_EXPERIMENTS", "STUDY_SEEDS", "EVALUATORS", "INSTRUMENT", "SEARCH", "ProfileText", "PROFILE_TEXT",
           "LISTS", "main"]

if __name__ == "__main__":
    main()
