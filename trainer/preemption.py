"""SIGTERM -> a flag the training loop polls (pure Python).

Vertex sends SIGTERM when a Spot VM is preempted, a host goes into maintenance or a job is
cancelled. The loop saves a checkpoint at its next step boundary and raises `Preempted`; the
same command run again resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import signal

from trainer.errors import TrainerError

log = logging.getLogger(__name__)

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Preempted(TrainerError):
    """SIGTERM arrived; a checkpoint of `step` was saved and the run stopped early."""

    exit_code = EXIT_CODE

    def __init__(self, step: int):
        super().__init__(f"stopped by SIGTERM at step {step}; its checkpoint is saved, run the "
                         "same command again to resume")
        self.step = step


class StopRequest:
    """Set by SIGTERM once `install`ed; the loop reads `requested` between training calls."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        def handler(signum, frame):
            self.requested = True
            log.info("SIGTERM received: saving a checkpoint at the next step boundary")

        signal.signal(signal.SIGTERM, handler)
