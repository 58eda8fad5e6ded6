"""`python -m cinelora.bench`: the `bench` command on its own (same arguments as `python -m cinelora bench`)."""
from __future__ import annotations

import argparse

from cinelora.bench import EXAMPLES, add_arguments, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cinelora.bench", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
