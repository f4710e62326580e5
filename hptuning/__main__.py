"""`python -m hptuning CONFIG [options] [-- TRAINER_FLAGS...]`: run a tuning study locally.

The study runs as Vertex would run the same config (see hptuning.tuner); flags after `--` are
appended to the config's trainer args, e.g. to point trials at local data or train fewer steps.
Exit codes: 0 done, 1 the study failed, 2 a bad config or flag, 130 stopped (rerun to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from hptuning import cli, spec, tuner
from trainer.cli import OneLineParser, run_cli, usage_errors


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = OneLineParser(
        prog="vertex-trainer tune", allow_abbrev=False,
        usage="%(prog)s CONFIG [--output-dir DIR] [--set NAME=VALUE ...] [--seed N] "
              "[-- TRAINER_FLAGS ...]",
        description="Run a tuning study on this machine, trial by trial as Vertex AI runs it.")
    cli.add_common(parser)
    parser.add_argument("--output-dir", metavar="DIR",
                        help="study.db, trials/<id>/, results.csv/json, plot.png; the same "
                             "directory resumes the study (default: hptuning-output/<config "
                             "name>)")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed of the search algorithm's sampling")

    def body() -> int:
        with usage_errors():
            args = parser.parse_args(argv[:split])
            tuning = spec.load(args.config, cli.placeholder_values(args.set),
                               extra_args=argv[split + 1:], placeholders_everywhere=False)
        output_dir = args.output_dir or Path("hptuning-output") / Path(args.config).stem
        return tuner.run_study(tuning, output_dir, seed=args.seed)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
