"""The one exception type that reaches users as a single line instead of a traceback."""

import re


class TrainerError(Exception):
    """A problem with the user's input or environment.

    The message must be one line that names the flag, file or field at fault and what was
    expected; `trainer.task` prints it as `error: <message>` and exits non-zero.
    """


_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[Op:\w+\]|\s+name:\s*$|\[\[\{\{node [^}]*\}\}\]\]")


def short_reason(err: BaseException) -> str:
    """The first line of an exception's message, without TensorFlow's op and node decorations."""
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    line = message.strip().splitlines()[0] if message.strip() else type(err).__name__
    return " ".join(_NOISE.sub(" ", line).split()) or type(err).__name__
