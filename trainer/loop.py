"""The train-and-evaluate loop that replaces tf.estimator.train_and_evaluate.

`StepFunctions` holds the compiled work (several training steps per tf.function call, a full
evaluation pass), written against the tf.distribute strategy API only. A trainer runs those
steps in-graph (default, mirrored, multi-worker, TPU) or schedules them on the workers of a
parameter-server cluster; an evaluation computes metrics over the whole eval set. Both explain
their own input errors. `Controller` sequences the run in the spirit of tensorflow/models'
orbit: it gets a trainer, an evaluation, a `Checkpoints` and plain callables as actions, trains
to the next boundary (progress line, evaluation, checkpoint, max_steps) and acts there. A
restarted run resumes from its checkpoint and stops at exactly max_steps; SIGTERM (preemption)
saves a checkpoint at the next boundary and stops. `evaluate_checkpoints` is the side-car
evaluator task; it reports through the same `evaluate` as the Controller (its evaluations come
from the same factory, trainer.runner.Evaluations).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from trainer.checkpoints import Checkpoints
from trainer.config import LoopConfig
from trainer.errors import TrainerError, short_reason
from trainer.preemption import Preempted, StopRequest

log = logging.getLogger(__name__)

_SUM = tf.distribute.ReduceOp.SUM
_INPUT_ERRORS = (tf.errors.OpError, UnicodeDecodeError)

ErrorExplainer = Callable[[Exception], "TrainerError | None"]

# Until the first progress line, training calls run 1, 2, 4, ... steps (the same on every
# worker) and a line comes as soon as this much time has passed, whatever --log-every-steps:
# at most about twice this after training starts, plus one step.
FIRST_LINE_SECS = 15.0


class StepFunctions:
    """Training and evaluation steps for one model under one strategy.

    Each step returns per-replica sums (loss, correct predictions, examples) that are reduced
    across replicas, so metrics are exact whatever the batch split or a partial last batch.
    """

    def __init__(self, strategy: tf.distribute.Strategy, model, optimizer=None,
                 global_batch_size: int = 0, jit_compile: bool = False,
                 label_smoothing: float = 0.0, head_only_steps: int = 0,
                 head_variables: Sequence[tf.Variable] = (), loss_scale=None):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.loss_scale = loss_scale  # a loss_scale.DynamicLossScale for fp16, else None
        self._global_batch_size = global_batch_size
        self._label_smoothing = label_smoothing
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # XLA compiles the forward and backward pass only: the iterator, the tf.range loop and
        # the cross-replica decision to apply or skip a step cannot be compiled.
        self._gradients = (tf.function(self._scaled_gradients, jit_compile=True) if jit_compile
                           else self._scaled_gradients)
        self.train = tf.function(self._train_every_variable)
        # A frozen backbone: the first steps train only the head's variables. Not for
        # parameter_server, whose coordinator schedules `train` itself.
        self._head_only_steps = head_only_steps
        self._head_variables = list(head_variables)
        if head_only_steps:
            self._train_all, self.train = self.train, self._train_freezing
            self._train_head = tf.function(lambda iterator, num_steps: self._train(
                iterator, num_steps, head_only=True))
        self.evaluate = tf.function(self._evaluate)

    def _train_every_variable(self, iterator, num_steps):
        # Its own signature, without `head_only`: ClusterCoordinator.schedule binds every
        # parameter of the function it schedules, defaults included.
        return self._train(iterator, num_steps)

    def _train_freezing(self, iterator, num_steps):
        """`train`, its steps before `head_only_steps` training the head only."""
        num_steps = int(num_steps)
        head = min(num_steps, max(0, self._head_only_steps - int(self.step.numpy())))
        totals = tf.zeros([4])
        if head:
            totals += self._train_head(iterator, tf.constant(head, tf.int64))
        if num_steps > head:
            totals += self._train_all(iterator, tf.constant(num_steps - head, tf.int64))
        return totals

    def learning_rate(self) -> float:
        return float(tf.convert_to_tensor(self.optimizer.learning_rate))

    def _sums(self, logits, labels, label_smoothing: float = 0.0):
        # A mixed-precision model's logits are bfloat16/float16; the loss needs float32's range.
        logits = tf.cast(logits, tf.float32)
        if label_smoothing:
            classes = tf.shape(logits)[-1]
            targets = (tf.one_hot(labels, classes) * (1.0 - label_smoothing)
                       + label_smoothing / tf.cast(classes, tf.float32))
            per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
        else:
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                          tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return per_example, tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(correct), count])

    def _variables(self, head_only: bool):
        return self._head_variables if head_only else self.model.trainable_variables

    def _scaled_gradients(self, images, labels, head_only=False):
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example, sums = self._sums(logits, labels, self._label_smoothing)
            # Divide by the global batch: gradients are summed across replicas.
            loss = tf.reduce_sum(per_example) / self._global_batch_size
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            if self.loss_scale is not None:
                loss *= self.loss_scale.scale
        gradients = tape.gradient(loss, self._variables(head_only))
        if self.loss_scale is not None:
            gradients = [g / self.loss_scale.scale for g in gradients]
        return gradients, sums

    def _train_step(self, images, labels, head_only=False):
        """One replica's step: its sums, and its share of a skipped step (fp16 overflow)."""
        gradients, sums = self._gradients(images, labels, head_only)
        if self.loss_scale is None:
            self._apply(gradients, head_only)
            return tf.concat([sums, [0.0]], axis=0)
        overflow = tf.cast(tf.logical_not(tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(g)) for g in gradients])), tf.float32)
        # Every replica must skip the same steps (the optimizer's update is a collective), so
        # they act on how many replicas overflowed, never on their own flag alone.
        context = tf.distribute.get_replica_context()
        overflows = context.all_reduce(_SUM, overflow)
        context.merge_call(self._apply_unless_overflow, args=(gradients, overflows, head_only))
        skipped = tf.cast(overflows > 0, tf.float32) / self.strategy.num_replicas_in_sync
        return tf.concat([sums, [skipped]], axis=0)

    def _apply(self, gradients, head_only=False):
        self.optimizer.apply_gradients(zip(gradients, self._variables(head_only)))

    def _apply_unless_overflow(self, strategy, gradients, overflows, head_only):
        # Cross-replica context: a cond whose branch runs the optimizer's own merge_call is
        # allowed here, not inside a replica.
        finite = tf.equal(strategy.experimental_local_results(overflows)[0], 0.0)

        def apply():
            strategy.extended.call_for_each_replica(self._apply, args=(gradients, head_only))

        tf.cond(finite, apply, lambda: None)
        self.loss_scale.update(finite)

    def _train(self, iterator, num_steps, head_only=False):
        """(loss sum, correct, examples, skipped steps) over `num_steps` steps."""
        totals = tf.zeros([4])
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            sums = self.strategy.run(self._train_step, args=(images, labels),
                                     kwargs={"head_only": head_only} if head_only else None)
            totals += self.strategy.reduce(_SUM, sums, axis=None)
            self.step.assign_add(1)
        return totals

    def _eval_step(self, images, labels):
        logits = self.model(images, training=False)
        # The confusion matrix rides with the sums, so per-class results cost no second pass
        # over the data and one all-reduce of a few more numbers per batch. One-hot products
        # (rows: true class, columns: predicted) run on every device, TPUs included; float32
        # counts are exact up to 2**24 examples in one cell.
        classes = tf.shape(logits)[-1]
        predicted = tf.one_hot(tf.argmax(logits, axis=-1, output_type=tf.int32), classes)
        confusion = tf.matmul(tf.one_hot(labels, classes), predicted, transpose_a=True)
        return tf.concat([self._sums(logits, labels)[1], tf.reshape(confusion, [-1])], axis=0)

    def _evaluate(self, dataset):
        """(loss sum, correct, examples, then the confusion matrix row by row) over `dataset`."""
        totals = tf.zeros([3 + int(self.model.outputs[0].shape[-1]) ** 2])
        for images, labels in dataset:
            totals += self.strategy.reduce(
                _SUM, self.strategy.run(self._eval_step, args=(images, labels)), axis=None)
        return totals


def _explained(run: Callable[[], np.ndarray], explain: ErrorExplainer) -> np.ndarray:
    try:
        return run()
    except _INPUT_ERRORS as err:
        raise explain(err) or err


class InGraphTrainer:
    """Runs training steps inside one tf.function call per interval (all synchronous strategies)."""

    def __init__(self, steps: StepFunctions, distributed_dataset, explain_error: ErrorExplainer):
        self.steps = steps
        self._dataset = distributed_dataset
        self._explain = explain_error
        self._iterator = None

    def train(self, num_steps: int) -> np.ndarray:
        if self._iterator is None:
            self._iterator = iter(self._dataset)
        return _explained(
            lambda: self.steps.train(self._iterator, tf.constant(num_steps, tf.int64)).numpy(),
            self._explain)


class CoordinatedTrainer:
    """Schedules training steps on a parameter-server cluster's workers (asynchronous).

    An interval's steps are split into chunks that the ClusterCoordinator hands to whichever
    worker is free; joining at every boundary makes the global step exact.
    """

    _CHUNKS_PER_WORKER = 4

    def __init__(self, steps: StepFunctions, dataset_fn, num_workers: int,
                 explain_error: ErrorExplainer):
        self.steps = steps
        self._coordinator = tf.distribute.coordinator.ClusterCoordinator(steps.strategy)
        strategy = steps.strategy

        @tf.function
        def per_worker_dataset():
            return strategy.distribute_datasets_from_function(dataset_fn)

        self._iterator = iter(self._coordinator.create_per_worker_dataset(per_worker_dataset))
        self._num_workers = num_workers
        self._explain = explain_error

    def train(self, num_steps: int) -> np.ndarray:
        return _explained(lambda: self._train(num_steps), self._explain)

    def _train(self, num_steps: int) -> np.ndarray:
        chunk = max(1, num_steps // (self._CHUNKS_PER_WORKER * self._num_workers))
        sizes = [chunk] * (num_steps // chunk) + ([num_steps % chunk] if num_steps % chunk else [])
        results = [self._coordinator.schedule(self.steps.train,
                                              args=(self._iterator, tf.constant(n, tf.int64)))
                   for n in sizes]
        self._coordinator.join()
        return np.sum([r.fetch() for r in results], axis=0)


class DistributedEvaluation:
    """Evaluates the whole eval set across the strategy's replicas (every worker takes part)."""

    def __init__(self, steps: StepFunctions, distributed_dataset, flag: str,
                 explain_error: ErrorExplainer):
        self._steps = steps
        self._dataset = distributed_dataset
        self.flag = flag
        self._explain = explain_error

    def __call__(self) -> np.ndarray:
        return _explained(lambda: self._steps.evaluate(self._dataset).numpy(), self._explain)


class LocalCopyEvaluation:
    """Evaluates a local, non-distributed copy of the model's current weights.

    Used where the variables live elsewhere (on parameter servers): one weight transfer per
    evaluation instead of one per batch.
    """

    def __init__(self, source_model, local_model, dataset, flag: str,
                 explain_error: ErrorExplainer):
        self._source = source_model
        self._steps = StepFunctions(tf.distribute.get_strategy(), local_model)
        self._dataset = dataset
        self.flag = flag
        self._explain = explain_error

    def __call__(self) -> np.ndarray:
        self._steps.model.set_weights(self._source.get_weights())
        return _explained(lambda: self._steps.evaluate(self._dataset).numpy(), self._explain)


def metrics_of(totals) -> tuple[dict, int]:
    loss_sum, correct, count = (float(v) for v in totals[:3])
    if count == 0:
        return {"loss": math.nan, "accuracy": math.nan}, 0
    return {"loss": loss_sum / count, "accuracy": correct / count}, int(count)


def confusion_of(totals) -> np.ndarray | None:
    """The confusion matrix (rows: true class, columns: predicted; int64) that an evaluation's
    totals carry after their sums, else None."""
    cells = np.asarray(totals[3:])
    size = math.isqrt(len(cells))
    if not size or size * size != len(cells):
        return None
    return np.rint(cells).astype(np.int64).reshape(size, size)


@dataclass(frozen=True)
class TrainInterval:
    """The training steps between two boundaries, as train actions see them."""

    step: int  # the global step at the end of the interval
    steps: int
    seconds: float  # training only: evaluations and checkpoints are not counted
    metrics: dict  # loss and accuracy over the interval's examples
    examples: int
    skipped_steps: int = 0  # fp16 steps skipped on gradient overflow (not applied)
    # Of the interval's last training call: the first call of a run also traces the step
    # function (seconds of it), so an early interval's mean would overstate the ETA.
    recent_seconds_per_step: float | None = None

    @property
    def examples_per_sec(self) -> float:
        return self.examples / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation, as eval actions see it and the run's result records it."""

    step: int
    metrics: dict
    examples: int
    seconds: float
    train_seconds: float | None  # training time of this process until then (the loop only)
    confusion: np.ndarray | None = None  # [true class, predicted class] counts


TrainAction = Callable[[TrainInterval], None]
EvalAction = Callable[[Evaluation], None]


class Diverged(TrainerError):
    """The loss became non-finite or passed --loss-upper-bound: nothing more is saved,
    exported or reported, so a tuning service sees a failed trial, not a best one."""


def evaluate(evaluation, step: int, actions: Sequence[EvalAction],
             train_seconds: float | None = None) -> Evaluation:
    """Runs one evaluation and hands it to the actions (progress line, summaries, ...)."""
    start = time.perf_counter()
    totals = evaluation()
    metrics, count = metrics_of(totals)
    if count == 0:
        raise TrainerError(f"{evaluation.flag}: evaluation read no examples")
    if not math.isfinite(metrics["loss"]):
        raise Diverged(f"the model diverged: evaluation loss at step {step} is "
                       f"{metrics['loss']}; nothing was exported or reported for it; checkpoints "
                       "from before it are kept (try a lower --learning-rate)")
    result = Evaluation(step, metrics, count, time.perf_counter() - start, train_seconds,
                        confusion_of(totals))
    for action in actions:
        action(result)
    return result


class BestMetric:
    """Eval action: tracks the best value of one metric and calls `on_improvement` on a new best.

    The best value is a variable for the checkpoint, so a resumed run never treats a worse
    evaluation as an improvement (and never replaces a better exported model with it).
    """

    def __init__(self, metric: str, higher_is_better: bool,
                 on_improvement: Sequence[EvalAction] = ()):
        self._metric = metric
        self._sign = 1.0 if higher_is_better else -1.0
        self.on_improvement = list(on_improvement)
        self.variable = tf.Variable(-math.inf, dtype=tf.float64, trainable=False,
                                    name="best_metric")

    def __call__(self, evaluation: Evaluation) -> None:
        value = self._sign * evaluation.metrics[self._metric]
        if value > float(self.variable.numpy()):
            self.variable.assign(value)
            for action in self.on_improvement:
                action(evaluation)


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


def vote_across_workers(strategy: tf.distribute.Strategy) -> Callable[[tuple[bool, ...]],
                                                                      tuple[bool, ...]]:
    """Each flag becomes true on every worker when it is true on any.

    Multi-worker replicas must decide alike to save or stop: a lone save or exit would leave
    the others waiting forever in the next collective.
    """
    @tf.function
    def any_worker(flags):
        per_replica = strategy.run(lambda: tf.identity(flags))
        return strategy.reduce(_SUM, per_replica, axis=None)

    def vote(flags: tuple[bool, ...]) -> tuple[bool, ...]:
        agreed = any_worker(tf.constant([float(f) for f in flags]))
        return tuple(bool(v > 0) for v in agreed.numpy())

    return vote


def average_across_replicas(strategy: tf.distribute.Strategy,
                            variables: Sequence) -> Callable[[], None]:
    """Sets each variable, on every replica, to its mean over the replicas.

    For variables each replica updates from its own batches (BatchNorm's moving statistics:
    Keras creates them without an aggregation, so a synchronous strategy keeps one copy per
    replica): averaged before each evaluation and checkpoint, every replica holds, evaluates,
    saves and exports the same weights. One all-reduce of all of them (~6 ms for resnet20 on
    two local workers); synchronized BatchNorm cost ~60% more per training step instead.
    """
    @tf.function
    def average():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            # Read inside the replica: each replica's own copy, not the primary one.
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                       [tf.identity(v.value) for v in variables])
            for variable, mean in zip(variables, means):
                variable.assign(mean)

        strategy.run(replica_fn)

    return average


class Controller:
    """Sequences training, evaluation, checkpoints and the actions taken at the boundaries.

    `trainer.train(n)` runs n steps and returns their (loss sum, correct, examples) totals;
    `trainer.steps.step` is the global step. `evaluation()` returns the same totals over the
    eval set. `vote` (multi-worker runs) makes every worker agree on saving and stopping.
    `agree` (several replicas in sync) makes the replicas' own state equal before anything
    evaluates or saves it (`average_across_replicas`); every replica calls it at the same steps.
    Until the first progress line the calls are short (FIRST_LINE_SECS), so a slow model shows
    its speed and ETA within seconds; a SIGTERM or a due time-based checkpoint is acted on at
    the end of any call.
    """

    def __init__(self, *, trainer, evaluation, checkpoints: Checkpoints, schedule: LoopConfig,
                 train_actions: Sequence[TrainAction] = (),
                 eval_actions: Sequence[EvalAction] = (), stop: StopRequest | None = None,
                 vote: Callable[[tuple[bool, ...]], tuple[bool, ...]] | None = None,
                 agree: Callable[[], None] | None = None,
                 loss_upper_bound: float = math.inf, loss_scale=None,
                 first_line_secs: float = FIRST_LINE_SECS):
        self._trainer = trainer
        self._evaluation = evaluation
        self._checkpoints = checkpoints
        self._schedule = schedule
        self._train_actions = list(train_actions)
        self._eval_actions = list(eval_actions)
        self._stop = stop or StopRequest()
        self._vote = vote or (lambda flags: flags)
        self._agree = agree or (lambda: None)
        self._agreed_at: int | None = None  # the step at which the replicas last agreed
        self._loss_upper_bound = loss_upper_bound
        self._loss_scale = loss_scale  # checked at every boundary when training in fp16
        self._first_line_secs = first_line_secs
        self.evaluations: list[Evaluation] = []
        self.train_seconds = 0.0

    @property
    def step(self) -> int:
        return int(self._trainer.steps.step.numpy())

    def run(self) -> Evaluation:
        """Trains to max_steps, evaluating and checkpointing on the way; returns the last eval."""
        try:
            return self._run()
        except tf.errors.OpError as err:  # any collective (step, save, stop vote) may lose a peer
            raise explain_cluster_error(err) or err

    def _run(self) -> Evaluation:
        self._checkpoints.restore()
        step, schedule = self.step, self._schedule
        self._agreed_at = step  # restored (or initialized) alike on every replica
        if step >= schedule.max_steps:
            log.info("checkpoint step %d already reaches --max-steps %d; evaluating only",
                     step, schedule.max_steps)
            return self._evaluate(step)
        started = last_save = time.monotonic()
        interval, interval_steps, interval_seconds = 0.0, 0, 0.0
        evaluation = None
        chunk = 1  # steps per call until the first progress line (then 0: whole intervals)
        while step < schedule.max_steps:
            num_steps = schedule.next_boundary(step) - step
            if chunk:
                num_steps, chunk = min(num_steps, chunk), 2 * chunk
            start = time.perf_counter()
            totals = self._trainer.train(num_steps)
            seconds = time.perf_counter() - start
            self._check_loss(step + num_steps, totals)
            if self._loss_scale is not None:
                self._loss_scale.check(step + num_steps)
            interval = interval + totals
            self.train_seconds += seconds
            step += num_steps
            interval_steps += num_steps
            interval_seconds += seconds
            final = step == schedule.max_steps
            now = time.monotonic()
            stop, save_due, line_due = self._vote((
                self._stop.requested, now - last_save >= schedule.checkpoint_every_secs,
                bool(chunk) and now - started >= self._first_line_secs))
            if step % schedule.log_every_steps == 0 or final or line_due:
                metrics, examples = metrics_of(interval)
                skipped = round(float(interval[3])) if len(interval) > 3 else 0
                record = TrainInterval(step, interval_steps, interval_seconds, metrics, examples,
                                       skipped, seconds / num_steps)
                for action in self._train_actions:
                    action(record)
                interval, interval_steps, interval_seconds = 0.0, 0, 0.0
                chunk = 0
            if schedule.evaluates_at(step) or final:
                self._agree_at(step)
                evaluation = self._evaluate(step)
            if schedule.checkpoints_at(step) or final or save_due or stop:
                self._agree_at(step)
                self._checkpoints.save(step)
                last_save = time.monotonic()
            if stop and not final:
                raise Preempted(step)
        return evaluation

    def _agree_at(self, step: int) -> None:
        if self._agreed_at != step:
            self._agree()
            self._agreed_at = step

    def _check_loss(self, step: int, totals: np.ndarray) -> None:
        # Checked before anything is saved: the newest checkpoint stays the last good one.
        loss = metrics_of(totals)[0]["loss"]
        if math.isfinite(loss) and loss <= self._loss_upper_bound:
            return
        bound = (f" (above --loss-upper-bound {self._loss_upper_bound:g})"
                 if math.isfinite(loss) else "")
        raise Diverged(f"the model diverged: training loss {loss:g}{bound} by step {step}; "
                       "stopped without saving, exporting or reporting it; checkpoints from "
                       "before it are kept (try a lower --learning-rate)")

    def _evaluate(self, step: int) -> Evaluation:
        result = evaluate(self._evaluation, step, self._eval_actions, self.train_seconds)
        self.evaluations.append(result)
        return result


def evaluate_checkpoints(*, checkpoints: Checkpoints, evaluation, max_steps: int,
                         eval_actions: Sequence[EvalAction], timeout_secs: float) -> Evaluation:
    """The evaluator task: evaluate each new checkpoint until the one at max_steps.

    Checkpoints written faster than they are evaluated are skipped (the newest wins), as
    tf.estimator's evaluator did. Raises TrainerError if no new checkpoint comes for
    `timeout_secs` (the training tasks died or stalled).
    """
    log.info("evaluator: waiting for checkpoints in %s", checkpoints.directory)
    for path in checkpoints.new_checkpoints(timeout_secs):
        step = checkpoints.restore_for_evaluation(path)
        if step is None:
            continue
        result = evaluate(evaluation, step, eval_actions)
        if step >= max_steps:
            return result
    raise TrainerError(f"evaluator: no new checkpoint in {checkpoints.directory} for "
                       f"{timeout_secs:g} s (--evaluator-timeout-secs); did training stop "
                       "before --max-steps?")
