"""Where a run's checkpoints come from and go to.

Every replica restores from `directory` (the chief's). The chief also saves there; other
multi-worker replicas must take part in saving (it is a collective) but write to a throwaway
`save_dir` so they never overwrite the chief's files.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from trainer.errors import TrainerError

log = logging.getLogger(__name__)


class Checkpoints:
    """Restores and saves one `tf.train.Checkpoint` whose `step` variable is the global step."""

    def __init__(self, checkpoint: tf.train.Checkpoint, step: tf.Variable, *, directory: str,
                 save_dir: str | None = None, keep: int = 5,
                 options: tf.train.CheckpointOptions | None = None):
        self._checkpoint = checkpoint
        self._step = step
        self.directory = directory
        self._options = options
        self._manager = (tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=keep)
                         if save_dir else None)

    def restore(self) -> str | None:
        """Restores the latest checkpoint, if any, and returns its path."""
        path = tf.train.latest_checkpoint(self.directory)
        if path is None:
            return None
        try:
            self._checkpoint.restore(path, options=self._options).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            reason = " ".join(str(err).split())[:200]
            raise TrainerError(f"checkpoint {path} does not fit this model (written with other "
                               f"--model/--image-*/--num-classes flags?); use another --job-dir "
                               f"or AIP_CHECKPOINT_DIR ({reason})") from None
        log.info("resumed from checkpoint %s at step %d", path, int(self._step.numpy()))
        return path

    def restore_for_evaluation(self, path: str) -> int | None:
        """Restores the model part of `path` and returns its step; None if it vanished."""
        try:
            self._checkpoint.restore(path).expect_partial()
        except (tf.errors.NotFoundError, ValueError):
            log.info("evaluator: %s was deleted before it could be read; waiting for the next",
                     path)
            return None
        return int(self._step.numpy())

    def save(self, step: int) -> None:
        self._manager.save(checkpoint_number=step, options=self._options)
