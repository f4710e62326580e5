"""The one exception type that reaches users as a single line instead of a traceback."""

import re


class TrainerError(Exception):
    """A problem with the user's input or environment.

    The message must be one line that names the flag, file or field at fault and what was
    expected; `trainer.cli.run_cli` prints it as `error: <message>` and exits with `exit_code`.
    """

    exit_code = 1


_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[Op:\w+\]|\s+name:\s*$|\[\[\{\{node [^}]*\}\}\]\]")
_FRAMING = re.compile(r"^(Graph execution error:|Detected at node|Stack trace|"
                      r"<stack traces unavailable>|\s*File |\s*\[\[)")


def short_reason(err: BaseException) -> str:
    """The first informative line of an exception's message, without TensorFlow's framing."""
    message = getattr(err, "message", None) or str(err)
    for line in message.splitlines():
        line = " ".join(_NOISE.sub(" ", line).split())
        if line and not _FRAMING.match(line):
            return line
    return type(err).__name__
