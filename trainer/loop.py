"""The train-and-evaluate loop that replaces tf.estimator.train_and_evaluate.

`StepFunctions` holds the compiled work (several training steps per tf.function call, a full
evaluation pass), written against the tf.distribute strategy API only. A trainer runs those
steps in-graph (default, mirrored, multi-worker, TPU) or schedules them on the workers of a
parameter-server cluster. `Controller` sequences the run in the spirit of tensorflow/models'
orbit: train to the next boundary (progress line, evaluation, checkpoint, max_steps), then act
there. A restarted run restores the latest checkpoint and stops at exactly max_steps; SIGTERM
(preemption) saves a checkpoint at the next boundary and stops. `evaluate_checkpoints` is the
side-car evaluator task.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Callable, Protocol

import numpy as np
import tensorflow as tf

from trainer.errors import TrainerError, short_reason
from trainer.preemption import Preempted, StopRequest
from trainer.report import Progress, Summaries

log = logging.getLogger(__name__)

_SUM = tf.distribute.ReduceOp.SUM


class StepFunctions:
    """Training and evaluation steps for one model under one strategy.

    Each step returns per-replica sums (loss, correct predictions, examples) that are reduced
    across replicas, so metrics are exact whatever the batch split or a partial last batch.
    """

    def __init__(self, strategy: tf.distribute.Strategy, model, optimizer=None,
                 global_batch_size: int = 0, jit_compile: bool = False):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self._global_batch_size = global_batch_size
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # XLA compiles one step only: the iterator and the tf.range loop cannot be compiled.
        self._step_fn = (tf.function(self._train_step, jit_compile=True) if jit_compile
                         else self._train_step)
        self.train = tf.function(self._train)
        self.evaluate = tf.function(self._evaluate)

    def _sums(self, logits, labels):
        # A mixed-precision model's logits are bfloat16; the loss needs float32's range.
        logits = tf.cast(logits, tf.float32)
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
            sums = self.strategy.run(self._step_fn, args=(images, labels))
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


class InGraphTrainer:
    """Runs training steps inside one tf.function call per interval (all synchronous strategies)."""

    def __init__(self, steps: StepFunctions, distributed_dataset):
        self._steps = steps
        self._dataset = distributed_dataset
        self._iterator = None

    def train(self, num_steps: int) -> np.ndarray:
        if self._iterator is None:
            self._iterator = iter(self._dataset)
        return self._steps.train(self._iterator, tf.constant(num_steps, tf.int64)).numpy()


class CoordinatedTrainer:
    """Schedules training steps on a parameter-server cluster's workers (asynchronous).

    An interval's steps are split into chunks that the ClusterCoordinator hands to whichever
    worker is free; joining at every boundary makes the global step exact.
    """

    def __init__(self, steps: StepFunctions, dataset_fn, num_workers: int):
        self._steps = steps
        self._coordinator = tf.distribute.coordinator.ClusterCoordinator(steps.strategy)
        strategy = steps.strategy

        @tf.function
        def per_worker_dataset():
            return strategy.distribute_datasets_from_function(dataset_fn)

        self._iterator = iter(self._coordinator.create_per_worker_dataset(per_worker_dataset))
        self._chunks_per_worker = 4
        self._num_workers = num_workers

    def train(self, num_steps: int) -> np.ndarray:
        chunk = max(1, num_steps // (self._chunks_per_worker * self._num_workers))
        sizes = [chunk] * (num_steps // chunk) + ([num_steps % chunk] if num_steps % chunk else [])
        results = [self._coordinator.schedule(self._steps.train,
                                              args=(self._iterator, tf.constant(n, tf.int64)))
                   for n in sizes]
        self._coordinator.join()
        return np.sum([r.fetch() for r in results], axis=0)


class DistributedEvaluation:
    """Evaluates the whole eval set across the strategy's replicas (every worker takes part)."""

    def __init__(self, steps: StepFunctions, distributed_dataset):
        self._steps = steps
        self._dataset = distributed_dataset

    def __call__(self) -> np.ndarray:
        return self._steps.evaluate(self._dataset).numpy()


class LocalCopyEvaluation:
    """Evaluates a local, non-distributed copy of the model's current weights.

    Used where the variables live elsewhere (on parameter servers) or only in checkpoints (the
    evaluator task): one weight transfer per evaluation instead of one per batch.
    """

    def __init__(self, source_model, local_model, dataset):
        self._source = source_model
        self._steps = StepFunctions(tf.distribute.get_strategy(), local_model)
        self._dataset = dataset

    def __call__(self) -> np.ndarray:
        if self._source is not None:
            self._steps.model.set_weights(self._source.get_weights())
        return self._steps.evaluate(self._dataset).numpy()


def metrics_of(totals) -> tuple[dict, int]:
    loss_sum, correct, count = (float(v) for v in totals)
    if count == 0:
        return {"loss": math.nan, "accuracy": math.nan}, 0
    return {"loss": loss_sum / count, "accuracy": correct / count}, int(count)


class EvalAction(Protocol):
    def __call__(self, step: int, metrics: dict, improved: bool) -> None: ...


ErrorExplainer = Callable[[Exception], TrainerError | None]

_CLUSTER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
                   tf.errors.DeadlineExceededError, tf.errors.CancelledError)


def explain_cluster_error(err: Exception) -> TrainerError | None:
    """A one-line error for a lost peer task (killed, preempted, unreachable), else None."""
    if not isinstance(err, _CLUSTER_ERRORS):
        return None
    message = err.message or ""
    peer = re.search(r"remote target (/job:\w+/replica:\d+/task:\d+)", message) or \
        re.search(r"(/job:\w+/replica:\d+/task:\d+)", message)
    who = f"task {peer.group(1)}" if peer else "a cluster task"
    return TrainerError(f"lost contact with {who} ({short_reason(err)}); see that task's log. "
                        "Checkpoints are kept: rerun the job to resume")


class Controller:
    """Sequences training, evaluation, checkpoints and the actions taken after evaluations.

    `save_dir` is where this process writes checkpoints: the real `checkpoint_dir` on the chief,
    a throwaway directory on other multi-worker replicas (they must take part in saving, but
    must not overwrite the chief's files). Everyone restores from `checkpoint_dir`.
    """

    def __init__(self, *, steps: StepFunctions, trainer, evaluate: Callable[[], np.ndarray],
                 max_steps: int, eval_every_steps: int, log_every_steps: int,
                 checkpoint_every_steps: int, checkpoint_every_secs: float, checkpoint_dir: str,
                 save_dir: str, keep_checkpoints: int, batch_size: int, metric: str,
                 higher_is_better: bool, summaries: Summaries, eval_actions: list[EvalAction],
                 explain_train_error: ErrorExplainer, explain_eval_error: ErrorExplainer,
                 stop: StopRequest | None = None, sync_across_workers: bool = False,
                 checkpoint_options: tf.train.CheckpointOptions | None = None):
        self._steps = steps
        self._trainer = trainer
        self._evaluate_totals = evaluate
        self._max_steps = max_steps
        self._eval_every = eval_every_steps
        self._log_every = log_every_steps
        self._ckpt_every = checkpoint_every_steps
        self._ckpt_secs = checkpoint_every_secs
        self._checkpoint_dir = checkpoint_dir
        self._metric = metric
        self._sign = 1.0 if higher_is_better else -1.0
        self._summaries = summaries
        self._actions = eval_actions
        self._explain_train_error = explain_train_error
        self._explain_eval_error = explain_eval_error
        self._stop = stop or StopRequest()
        self._options = checkpoint_options
        self._progress = Progress(max_steps, batch_size)
        self.examples_per_sec: list[float] = []  # per progress interval of this process
        strategy = steps.strategy
        with strategy.scope():
            # The best (sign-adjusted) metric so far, checkpointed so a resumed run with
            # --export-best-only never replaces a better model with a worse one.
            self._best = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best")
        self._checkpoint = tf.train.Checkpoint(model=steps.model, optimizer=steps.optimizer,
                                               step=steps.step, best_metric=self._best)
        self._manager = tf.train.CheckpointManager(self._checkpoint, save_dir,
                                                   max_to_keep=keep_checkpoints)
        self._any_worker = None
        if sync_across_workers:
            # Every worker must decide alike to save or stop: a lone save or exit would leave
            # the others waiting forever in the next collective.
            @tf.function
            def any_worker(flags):
                per_replica = strategy.run(lambda: tf.identity(flags))
                return strategy.reduce(_SUM, per_replica, axis=None)

            self._any_worker = any_worker

    @property
    def step(self) -> int:
        return int(self._steps.step.numpy())

    def restore(self) -> int:
        """Restores the latest checkpoint, if any; returns the step it resumes from."""
        path = tf.train.latest_checkpoint(self._checkpoint_dir)
        if path is None:
            return 0
        try:
            self._checkpoint.restore(path, options=self._options).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            reason = " ".join(str(err).split())[:200]
            raise TrainerError(f"checkpoint {path} does not fit this model (written with other "
                               f"--model/--image-*/--num-classes flags?); use another --job-dir "
                               f"or AIP_CHECKPOINT_DIR ({reason})") from None
        log.info("resumed from checkpoint %s at step %d", path, self.step)
        return self.step

    def run(self) -> dict:
        """Trains to max_steps, evaluating and checkpointing on the way; returns the last eval."""
        try:
            return self._run()
        except tf.errors.OpError as err:  # any collective (step, save, stop vote) may lose a peer
            raise explain_cluster_error(err) or err

    def _run(self) -> dict:
        step = self.restore()
        if step >= self._max_steps:
            log.info("checkpoint step %d already reaches --max-steps %d; evaluating only",
                     step, self._max_steps)
            return self._evaluate(step)
        last_save = time.monotonic()
        interval = np.zeros(3)
        interval_steps = 0
        metrics = None
        self._progress.restart_clock()
        while step < self._max_steps:
            num_steps = min(self._next(step, self._log_every), self._next(step, self._eval_every),
                            self._next(step, self._ckpt_every), self._max_steps) - step
            try:
                interval += self._trainer.train(num_steps)
            except (tf.errors.OpError, UnicodeDecodeError) as err:
                raise self._explain_train_error(err) or err
            step += num_steps
            interval_steps += num_steps
            final = step == self._max_steps
            if step % self._log_every == 0 or final:
                self._log_train(step, interval_steps, interval)
                interval, interval_steps = np.zeros(3), 0
            if step % self._eval_every == 0 or final:
                metrics = self._evaluate(step)
            stop, save_due = self._flags(self._stop.requested,
                                         time.monotonic() - last_save >= self._ckpt_secs)
            if step % self._ckpt_every == 0 or final or save_due or stop:
                self._manager.save(checkpoint_number=step, options=self._options)
                last_save = time.monotonic()
            if stop and not final:
                raise Preempted(step)
            self._progress.restart_clock()
        return metrics

    def _flags(self, *flags: bool) -> tuple[bool, ...]:
        if self._any_worker is None:
            return flags
        agreed = self._any_worker(tf.constant([float(f) for f in flags]))
        return tuple(bool(v > 0) for v in agreed.numpy())

    @staticmethod
    def _next(step: int, every: int) -> int:
        return (step // every + 1) * every

    def _log_train(self, step: int, steps: int, totals) -> None:
        metrics, _ = metrics_of(totals)
        examples_per_sec = self._progress.train_interval(step, steps, metrics["loss"],
                                                         metrics["accuracy"])
        self.examples_per_sec.append(examples_per_sec)
        learning_rate = float(tf.convert_to_tensor(self._steps.optimizer.learning_rate))
        self._summaries.write_train(step, {**metrics, "learning_rate": learning_rate,
                                           "examples_per_sec": examples_per_sec})

    def _evaluate(self, step: int) -> dict:
        start = time.perf_counter()
        try:
            metrics, count = metrics_of(self._evaluate_totals())
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


def evaluate_checkpoints(*, model, evaluate: Callable[[], np.ndarray], checkpoint_dir: str,
                         max_steps: int, summaries: Summaries, timeout_secs: float,
                         explain_error: ErrorExplainer) -> tuple[int, dict]:
    """The evaluator task: evaluate each new checkpoint until the one at max_steps.

    Checkpoints written faster than they are evaluated are skipped (the newest wins), as
    tf.estimator's evaluator did. Raises TrainerError if no new checkpoint comes for
    `timeout_secs` (the training tasks died or stalled).
    """
    step_variable = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, step=step_variable)
    log.info("evaluator: waiting for checkpoints in %s", checkpoint_dir)
    for path in tf.train.checkpoints_iterator(checkpoint_dir, min_interval_secs=1,
                                              timeout=timeout_secs):
        try:
            checkpoint.restore(path).expect_partial()
        except (tf.errors.NotFoundError, ValueError):
            log.info("evaluator: %s was deleted before it could be read; waiting for the next",
                     path)
            continue
        step = int(step_variable.numpy())
        start = time.perf_counter()
        try:
            metrics, count = metrics_of(evaluate())
        except (tf.errors.OpError, UnicodeDecodeError) as err:
            raise explain_error(err) or err
        Progress.evaluation(step, metrics, count, time.perf_counter() - start)
        summaries.write_eval(step, metrics)
        if step >= max_steps:
            return step, metrics
    raise TrainerError(f"evaluator: no new checkpoint in {checkpoint_dir} for {timeout_secs:g} s "
                       "(--evaluator-timeout-secs); did training stop before --max-steps?")
