"""`python -m trainer.benchmarks.child MODULE:FUNCTION JSON`: one measurement in its own process.

Calls the function with the JSON object's items as keyword arguments (`budget` as a Budget)
and prints its result as the last line of stdout, in JSON. Started by runner.child only.
"""

from __future__ import annotations

import importlib
import json
import sys

from trainer.benchmarks.runner import Budget
from trainer.cli import exit_with, run_cli


def main(argv: list[str]) -> int:
    target, options = argv
    module, _, name = target.partition(":")
    kwargs = json.loads(options)
    kwargs["budget"] = Budget(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in kwargs["budget"].items()})

    def body() -> int:
        result = getattr(importlib.import_module(module), name)(**kwargs)
        print(json.dumps(result))
        return 0

    return run_cli(body)  # a bad input is one line, which the parent quotes


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
