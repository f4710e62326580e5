"""The train-and-evaluate loop that replaces tf.estimator.train_and_evaluate.

`StepFunctions` holds the compiled work (several training steps per tf.function call, a full
evaluation pass), written against the tf.distribute strategy API only. `Controller` sequences it
in the spirit of tensorflow/models' orbit: train to the next boundary (progress line, evaluation,
checkpoint, max_steps), then act there. A restarted run restores the latest checkpoint and stops
at exactly max_steps.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Protocol

import tensorflow as tf

from trainer.errors import TrainerError
from trainer.report import Progress, Summaries

log = logging.getLogger(__name__)

_SUM = tf.distribute.ReduceOp.SUM


class StepFunctions:
    """Training and evaluation steps for one model under one strategy.

    Each step returns per-replica sums (loss, correct predictions, examples) that are reduced
    across replicas, so metrics are exact whatever the batch split or a partial last batch.
    """

    def __init__(self, strategy: tf.distribute.Strategy, model, optimizer, global_batch_size: int):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self._global_batch_size = global_batch_size
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.train = tf.function(self._train)
        self.evaluate = tf.function(self._evaluate)

    def _sums(self, logits, labels):
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                          tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return per_example, tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(correct), count])

    def _train_step(self, images, labels):
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example, sums = self._sums(logits, labels)
            # Divide by the global batch: gradients are summed across replicas.
            loss = tf.reduce_sum(per_example) / self._global_batch_size
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return sums

    def _train(self, iterator, num_steps):
        totals = tf.zeros([3])
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            sums = self.strategy.run(self._train_step, args=(images, labels))
            totals += self.strategy.reduce(_SUM, sums, axis=None)
            self.step.assign_add(1)
        return totals

    def _eval_step(self, images, labels):
        return self._sums(self.model(images, training=False), labels)[1]

    def _evaluate(self, dataset):
        totals = tf.zeros([3])
        for images, labels in dataset:
            totals += self.strategy.reduce(
                _SUM, self.strategy.run(self._eval_step, args=(images, labels)), axis=None)
        return totals


def _metrics(totals) -> tuple[dict, int]:
    loss_sum, correct, count = (float(v) for v in totals)
    if count == 0:
        return {"loss": math.nan, "accuracy": math.nan}, 0
    return {"loss": loss_sum / count, "accuracy": correct / count}, int(count)


class EvalAction(Protocol):
    def __call__(self, step: int, metrics: dict, improved: bool) -> None: ...


ErrorExplainer = Callable[[Exception], TrainerError | None]


class Controller:
    """Sequences training, evaluation, checkpoints and the actions taken after evaluations."""

    def __init__(self, *, steps: StepFunctions, train_dataset, eval_dataset, max_steps: int,
                 eval_every_steps: int, log_every_steps: int, checkpoint_every_steps: int,
                 checkpoint_every_secs: float, checkpoint_dir: str, keep_checkpoints: int,
                 batch_size: int, metric: str, higher_is_better: bool,
                 summaries: Summaries, eval_actions: list[EvalAction],
                 explain_train_error: ErrorExplainer, explain_eval_error: ErrorExplainer):
        self._steps = steps
        self._train_dataset = train_dataset
        self._eval_dataset = eval_dataset
        self._max_steps = max_steps
        self._eval_every = eval_every_steps
        self._log_every = log_every_steps
        self._ckpt_every = checkpoint_every_steps
        self._ckpt_secs = checkpoint_every_secs
        self._metric = metric
        self._sign = 1.0 if higher_is_better else -1.0
        self._summaries = summaries
        self._actions = eval_actions
        self._explain_train_error = explain_train_error
        self._explain_eval_error = explain_eval_error
        self._progress = Progress(max_steps, batch_size)
        self.examples_per_sec: list[float] = []  # per progress interval of this process
        with steps.strategy.scope():
            # The best (sign-adjusted) metric so far, checkpointed so a resumed run with
            # --export-best-only never replaces a better model with a worse one.
            self._best = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best")
        checkpoint = tf.train.Checkpoint(model=steps.model, optimizer=steps.optimizer,
                                         step=steps.step, best_metric=self._best)
        self._manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                                   max_to_keep=keep_checkpoints)
        self._checkpoint = checkpoint

    @property
    def step(self) -> int:
        return int(self._steps.step.numpy())

    def restore(self) -> int:
        """Restores the latest checkpoint, if any; returns the step it resumes from."""
        path = self._manager.latest_checkpoint
        if path is None:
            return 0
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            reason = " ".join(str(err).split())[:200]
            raise TrainerError(f"checkpoint {path} does not fit this model (written with other "
                               f"--model/--image-*/--num-classes flags?); use another --job-dir "
                               f"or AIP_CHECKPOINT_DIR ({reason})") from None
        log.info("resumed from checkpoint %s at step %d", path, self.step)
        return self.step

    def run(self) -> dict:
        """Trains to max_steps, evaluating and checkpointing on the way; returns the last eval."""
        step = self.restore()
        if step >= self._max_steps:
            log.info("checkpoint step %d already reaches --max-steps %d; evaluating only",
                     step, self._max_steps)
            return self._evaluate(step)
        iterator = iter(self._train_dataset)
        last_save = time.monotonic()
        interval = tf.zeros([3])
        interval_steps = 0
        metrics = None
        self._progress.restart_clock()
        while step < self._max_steps:
            num_steps = min(self._next(step, self._log_every), self._next(step, self._eval_every),
                            self._next(step, self._ckpt_every), self._max_steps) - step
            try:
                interval += self._steps.train(iterator, tf.constant(num_steps, tf.int64))
            except (tf.errors.OpError, UnicodeDecodeError) as err:
                raise self._explain_train_error(err) or err
            step += num_steps
            interval_steps += num_steps
            final = step == self._max_steps
            if step % self._log_every == 0 or final:
                self._log_train(step, interval_steps, interval)
                interval, interval_steps = tf.zeros([3]), 0
            if step % self._eval_every == 0 or final:
                metrics = self._evaluate(step)
            if (step % self._ckpt_every == 0 or final
                    or time.monotonic() - last_save >= self._ckpt_secs):
                self._manager.save(checkpoint_number=step)
                last_save = time.monotonic()
            self._progress.restart_clock()
        return metrics

    @staticmethod
    def _next(step: int, every: int) -> int:
        return (step // every + 1) * every

    def _log_train(self, step: int, steps: int, totals) -> None:
        metrics, _ = _metrics(totals)
        examples_per_sec = self._progress.train_interval(step, steps, metrics["loss"],
                                                         metrics["accuracy"])
        self.examples_per_sec.append(examples_per_sec)
        learning_rate = float(tf.convert_to_tensor(self._steps.optimizer.learning_rate))
        self._summaries.write_train(step, {**metrics, "learning_rate": learning_rate,
                                           "examples_per_sec": examples_per_sec})

    def _evaluate(self, step: int) -> dict:
        start = time.perf_counter()
        try:
            metrics, count = _metrics(self._steps.evaluate(self._eval_dataset))
        except (tf.errors.OpError, UnicodeDecodeError) as err:
            raise self._explain_eval_error(err) or err
        if count == 0:
            raise TrainerError("--eval-files: evaluation read no examples")
        Progress.evaluation(step, metrics, count, time.perf_counter() - start)
        self._summaries.write_eval(step, metrics)
        value = self._sign * metrics[self._metric]
        improved = value > float(self._best.numpy())
        if improved:
            self._best.assign(value)
        for action in self._actions:
            action(step, metrics, improved)
        return metrics
