"""`vertex-trainer tune CONFIG [options] [-- TRAINER_FLAGS...]`: run a tuning study locally.

The study runs as Vertex would run the same config (see hptuning.tuner); flags after `--` are
appended to the config's trainer args, e.g. to point trials at local data or train fewer steps.
Trials run min(parallelTrialCount, usable cores) at a time unless --parallel-trials says
otherwise: each trial trains on every core it gets, so more at once only share them.
Exit codes: 0 done, 1 the study failed, 2 a bad config or flag, 130 stopped (rerun to resume).
(`python -m hptuning` is the same command.)
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from hptuning import cli, spec, tuner
from trainer.cli import OneLineParser, run_cli, parse_command, usage_errors

_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def usable_cores(cpu_max: str = _CPU_MAX) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (what
    `docker run --cpus` and Kubernetes limits set)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:
        with open(cpu_max, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to honour
    return max(1, cores)


def local_parallelism(configured: int, given: int | None, cores: int) -> tuple[int, str]:
    """(trials at a time, the reason, for the log)."""
    if given is not None:
        return given, f"--parallel-trials {given}"
    if configured <= cores:
        return configured, f"parallelTrialCount {configured}"
    return cores, (f"parallelTrialCount {configured} capped at the {cores} usable cores; "
                   "--parallel-trials overrides")


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="vertex-trainer tune", allow_abbrev=False,
        usage="%(prog)s CONFIG [--output-dir DIR] [--max-trials N] [--parallel-trials N] "
              "[--set NAME=VALUE ...] [--seed N] [-- TRAINER_FLAGS ...]",
        description="Run a tuning study on this machine, trial by trial as Vertex AI runs it.",
        epilog="TRAINER_FLAGS (after --) are appended to the config's trainer args, e.g. "
               "-- --train-files 'data/train-*' --eval-files 'data/eval-*'; a study needs "
               "data (or -- --bundled-sample).")
    cli.add_common(parser, parallel_default="the config's parallelTrialCount, at most the "
                                            "usable cores")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="study.db, trials/<id>/, results.csv/json, plot.png; the same "
                             "directory resumes the study (default: hptuning-output/<config "
                             "name>)")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed of the search algorithm's sampling")

    def body() -> int:
        with usage_errors():
            args, trainer_args = parse_command(parser, argv)
            tuning = spec.load(args.config, cli.placeholder_values(args.set),
                               extra_args=trainer_args, placeholders_everywhere=False,
                               max_trials=args.max_trials)
        parallel, why = local_parallelism(tuning.parallel, args.parallel_trials, usable_cores())
        output_dir = args.output_dir or Path("hptuning-output") / Path(args.config).stem
        return tuner.run_study(dataclasses.replace(tuning, parallel=parallel), output_dir,
                               seed=args.seed, parallel_reason=why)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
