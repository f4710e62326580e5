"""What a run tells the world: progress lines, TensorBoard summaries, hypertune metrics."""

from __future__ import annotations

import datetime
import errno
import logging
import math
import os
from typing import TYPE_CHECKING, Callable

import tensorflow as tf

from trainer.errors import TrainerError

if TYPE_CHECKING:
    from trainer.loop import Evaluation, TrainInterval

log = logging.getLogger(__name__)


class Progress:
    """One line per training interval (step, epoch, loss, accuracy, examples/s, ETA) and
    evaluation. `steps_per_epoch` (the training data's size / the batch) shows the epoch,
    unless the whole run is under a tenth of one (a smoke run on full data), which would read
    `epoch 0/0`.

    Keeps each interval's examples/s for the run's result.
    """

    def __init__(self, max_steps: int, steps_per_epoch: float | None = None):
        self._max_steps = max_steps
        spans_epochs = steps_per_epoch and _tenths(max_steps / steps_per_epoch) != "0"
        self._steps_per_epoch = steps_per_epoch if spans_epochs else None
        self.examples_per_sec: list[float] = []

    def on_train(self, interval: TrainInterval) -> None:
        seconds_per_step = interval.seconds / interval.steps
        eta = _duration((self._max_steps - interval.step)
                        * (interval.recent_seconds_per_step or seconds_per_step))
        self.examples_per_sec.append(interval.examples_per_sec)
        skipped = (f"  {interval.skipped_steps} step(s) skipped on fp16 overflow"
                   if interval.skipped_steps else "")
        epoch = ""
        if self._steps_per_epoch:
            epoch = (f"  epoch {_tenths(interval.step / self._steps_per_epoch)}/"
                     f"{_tenths(self._max_steps / self._steps_per_epoch)}")
        log.info("step %d/%d%s  loss %.4f  accuracy %.2f%%  %s examples/s  %.1f ms/step  "
                 "ETA %s%s", interval.step, self._max_steps, epoch, interval.metrics["loss"],
                 100 * interval.metrics["accuracy"], f"{interval.examples_per_sec:,.0f}",
                 1000 * seconds_per_step, eta, skipped)

    @staticmethod
    def on_evaluation(evaluation: Evaluation) -> None:
        log.info("eval at step %d: accuracy %.2f%%  loss %.4f  (%s examples, %.1f s)",
                 evaluation.step, 100 * evaluation.metrics["accuracy"],
                 evaluation.metrics["loss"], f"{evaluation.examples:,}", evaluation.seconds)


def _tenths(value: float) -> str:
    """2.4, 5 (not 5.0), rounded down so that an epoch shows as done only when it is."""
    text = f"{math.floor(value * 10 + 1e-9) / 10:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _duration(seconds: float) -> str:
    if seconds >= _LONG:  # beyond what timedelta holds, e.g. --max-steps 1e17
        return f"over {_LONG // (365 * 86400):,} years"
    return str(datetime.timedelta(seconds=round(seconds)))


_LONG = 1000 * 365 * 86400


class Summaries:
    """TensorBoard scalars under <logdir>/train and <logdir>/<eval_name>; None writes nothing.

    The evaluator task writes its own `evaluator/` run beside the chief's `eval/`.
    `learning_rate` (a callable) adds the current learning rate to the training scalars;
    `loss_scale` (a callable, fp16 runs) adds the loss scale and the skipped steps.
    """

    def __init__(self, logdir: str | None, eval_name: str = "eval",
                 learning_rate: Callable[[], float] | None = None,
                 loss_scale: Callable[[], float] | None = None):
        self._learning_rate = learning_rate
        self._loss_scale = loss_scale
        if logdir is None:
            self._train = self._eval = tf.summary.create_noop_writer()
        else:
            self._train = tf.summary.create_file_writer(f"{logdir.rstrip('/')}/train")
            self._eval = tf.summary.create_file_writer(f"{logdir.rstrip('/')}/{eval_name}")

    def on_train(self, interval: TrainInterval) -> None:
        scalars = {**interval.metrics, "examples_per_sec": interval.examples_per_sec}
        if self._learning_rate is not None:
            scalars["learning_rate"] = self._learning_rate()
        if self._loss_scale is not None:
            scalars.update(loss_scale=self._loss_scale(), skipped_steps=interval.skipped_steps)
        self._write(self._train, interval.step, scalars)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        self._write(self._eval, evaluation.step, evaluation.metrics)

    @staticmethod
    def _write(writer, step: int, scalars: dict) -> None:
        with writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        writer.flush()

    def close(self) -> None:
        self._train.close()
        self._eval.close()


class HypertuneReporter:
    """Reports the tuning metric after every evaluation through cloudml-hypertune.

    The library writes $CLOUD_ML_HP_METRIC_FILE (JSON lines, the trial from CLOUD_ML_TRIAL_ID),
    which Vertex's tuning service reads. The file is checked when the reporter is made, before
    training, so a bad path fails at once instead of after the first evaluation.
    """

    def __init__(self, metric: str):
        import hypertune

        self._metric = metric
        try:
            self._hypertune = hypertune.HyperTune()  # creates the file's directory
            path = self._hypertune.metric_path
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, "is a directory")
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as err:
            raise _metric_file_error(err) from None

    def on_evaluation(self, evaluation: Evaluation) -> None:
        try:
            self._hypertune.report_hyperparameter_tuning_metric(
                hyperparameter_metric_tag=self._metric,
                metric_value=float(evaluation.metrics[self._metric]),
                global_step=evaluation.step)
        except OSError as err:
            raise _metric_file_error(err) from None


def _metric_file_error(err: OSError) -> TrainerError:
    path = os.environ.get("CLOUD_ML_HP_METRIC_FILE", "/tmp/hypertune/output.metrics")
    return TrainerError(f"CLOUD_ML_HP_METRIC_FILE: cannot write the tuning metric to {path} "
                        f"({err.strerror or err}); expected a writable file path")
