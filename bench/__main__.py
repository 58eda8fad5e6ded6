"""`python -m bench`: time the true-size LoRA step, attention kernels and configuration time -> results/bench/.

Nothing heavy is imported until a plan runs, so `--help` answers at once.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = {"full": Path("results/bench"), "smoke": Path("runs/bench/smoke")}
EXAMPLES = """examples:
  python -m bench --plan smoke                      # CPU, seconds: the code paths at the smoke preset
  python -m bench --plan full --label h100          # one GPU: writes results/bench/*_h100.*
  python -m bench --plan full --cases configuration,attention,baseline_480p --label h100-part1"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(DEFAULT_OUT), default="full",
                        help="full: true-size Wan2.1 I2V-14B on one CUDA GPU; smoke: the smoke preset on the CPU")
    parser.add_argument("--cases", default=None,
                        help="comma-separated case names of the plan, 'configuration' and 'attention' for those "
                             "stages; default: all")
    parser.add_argument("--label", default=None, help="file suffix of this run's outputs (default: the plan name)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/bench for full, runs/bench/smoke for smoke)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="start no case after this many seconds of wall time (skipped cases are listed)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from bench.plans import DeviceUnavailableError, run_plan
    from cinelora.speed.levers import configure_cuda_allocator

    configure_cuda_allocator()
    only = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    try:
        run_plan(args.plan, args.out or DEFAULT_OUT[args.plan], args.label or args.plan, only, args.max_seconds)
    except DeviceUnavailableError as err:
        raise SystemExit(f"python -m bench: {err}") from None


if __name__ == "__main__":
    main()
