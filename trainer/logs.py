"""Job logs: the package's own loggers write to stdout; no TensorFlow import.

Vertex files stdout as INFO and stderr as ERROR. Only the `trainer` loggers speak at INFO, so
TensorFlow's own INFO chatter stays out of the job log; errors go to stderr as one line.
"""

import logging
import sys


def log_to_stdout() -> None:
    log = logging.getLogger("trainer")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
