"""What a run tells the world: progress lines, TensorBoard summaries, hypertune metrics."""

from __future__ import annotations

import datetime
import logging
import time

import tensorflow as tf

log = logging.getLogger(__name__)


class Progress:
    """One line per interval: step, loss, accuracy, examples/s, ETA."""

    def __init__(self, max_steps: int, batch_size: int):
        self._max_steps = max_steps
        self._batch_size = batch_size
        self._last_time = time.perf_counter()

    def restart_clock(self) -> None:
        self._last_time = time.perf_counter()

    def train_interval(self, step: int, steps: int, loss: float, accuracy: float) -> float:
        """Logs the interval that just ended; returns its examples/s."""
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        self._last_time = now
        examples_per_sec = steps * self._batch_size / elapsed
        eta = datetime.timedelta(seconds=round((self._max_steps - step) * elapsed / steps))
        log.info("step %d/%d  loss %.4f  accuracy %.2f%%  %s examples/s  %.1f ms/step  ETA %s",
                 step, self._max_steps, loss, 100 * accuracy, f"{examples_per_sec:,.0f}",
                 1000 * elapsed / steps, eta)
        return examples_per_sec

    @staticmethod
    def evaluation(step: int, metrics: dict, examples: int, seconds: float) -> None:
        log.info("eval at step %d: accuracy %.2f%%  loss %.4f  (%s examples, %.1f s)", step,
                 100 * metrics["accuracy"], metrics["loss"], f"{examples:,}", seconds)


class Summaries:
    """TensorBoard scalars under <logdir>/train and <logdir>/<eval_name>; None writes nothing.

    The evaluator task writes its own `evaluator/` run beside the chief's `eval/`.
    """

    def __init__(self, logdir: str | None, eval_name: str = "eval"):
        if logdir is None:
            self._train = self._eval = tf.summary.create_noop_writer()
        else:
            self._train = tf.summary.create_file_writer(f"{logdir.rstrip('/')}/train")
            self._eval = tf.summary.create_file_writer(f"{logdir.rstrip('/')}/{eval_name}")

    def write_train(self, step: int, scalars: dict) -> None:
        self._write(self._train, step, scalars)

    def write_eval(self, step: int, scalars: dict) -> None:
        self._write(self._eval, step, scalars)

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
    which Vertex's tuning service reads.
    """

    def __init__(self, metric: str):
        import hypertune

        self._metric = metric
        self._hypertune = hypertune.HyperTune()

    def on_evaluation(self, step: int, metrics: dict, improved: bool) -> None:
        self._hypertune.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag=self._metric, metric_value=float(metrics[self._metric]),
            global_step=int(step))
