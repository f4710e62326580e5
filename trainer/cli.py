"""What every command line of the package shares: one-line flag errors and one-line failures.

`run_cli(body)` runs a command's body and turns a `TrainerError` into `error: <message>` as the
last line on stderr with the error's exit code: 2 for bad flags (`UsageError`, raised by
`OneLineParser` and inside `usage_errors()`), 1 for a run that failed. It also makes the
command's first `import tensorflow`, if it has one, quiet (trainer.tf_start). No TensorFlow
import.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
from typing import Callable, Iterator, NoReturn, Sequence

from trainer import tf_start
from trainer.errors import TrainerError


class UsageError(TrainerError):
    """The command line itself is wrong: nothing was attempted."""

    exit_code = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and raise instead of exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def parse_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                  ) -> tuple[argparse.Namespace, list[str]]:
    """A command's own flags parsed, and the trainer flags after the first `--` as given
    (`sys.argv[1:]` when `argv` is None)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    return parser.parse_args(argv[:split]), argv[split + 1:]


def add_location(group, project: str, region: str = "Vertex AI region") -> None:
    """`--project` and `--region` as every command that calls Vertex AI has them; `project` and
    `region` are their help (when each is required, what else they fill)."""
    group.add_argument("--project", help=project)
    group.add_argument("--region", default="us-central1", help=region)


def add_dry_run(group, prints: str) -> None:
    """`--dry-run` as every command that creates cloud resources has it: what it prints, and
    the promise that nothing is created, sent or run."""
    group.add_argument("--dry-run", action="store_true",
                       help=f"print {prints} and stop: nothing is created, sent or run")


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Marks the validation of flags: a TrainerError inside is a usage error (exit code 2)."""
    try:
        yield
    except UsageError:
        raise
    except TrainerError as err:
        raise UsageError(str(err)) from None


def run_cli(body: Callable[[], int | None], interrupted: str = "interrupted") -> int:
    """Runs a command's body and returns its exit code; failures print one line to stderr."""
    tf_start.install()
    tensorflow_log = logging.getLogger("tensorflow")
    level = tensorflow_log.level
    try:
        return body() or 0
    except (TrainerError, KeyboardInterrupt) as err:
        failure = ((str(err), err.exit_code) if isinstance(err, TrainerError)
                   else (interrupted, 130))
        tensorflow_log.setLevel(logging.ERROR)
    # Leaving the handler dropped the traceback, and with it the failed body's objects; freeing
    # them makes TensorFlow warn about work they were still holding (a restore that did not fit
    # the model: "... deleted with unrestored values"), which would follow the error line and
    # only repeat it. They go now, quietly, before the line.
    try:
        gc.collect()
    finally:
        tensorflow_log.setLevel(level)
    return _fail(*failure)


def _fail(message: str, code: int) -> int:
    # Whatever our loggers still buffer goes out first, so the error is the last line.
    for handler in logging.getLogger("trainer").handlers:
        handler.flush()
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def exit_with(code: int) -> NoReturn:
    """Exits with a command's code. After a failure with TensorFlow loaded, its teardown is
    skipped: it may still log (e.g. about a checkpoint that did not fit), and the one-line error
    must stay the last line."""
    if code and "tensorflow" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
