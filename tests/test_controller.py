"""The Controller's sequencing, with fakes for the trainer, evaluation and checkpoints (no model)."""

import numpy as np
import pytest
import tensorflow as tf

from trainer import loop
from trainer.config import LoopConfig
from trainer.errors import TrainerError
from trainer.preemption import Preempted, StopRequest


class FakeStep:
    def __init__(self):
        self.value = 0

    def numpy(self):
        return self.value


class FakeTrainer:
    """Each step sees 10 examples with loss 0.5 and 8 correct; `fail_at` raises inside a call."""

    def __init__(self, fail_at=None, error=None):
        self.steps = type("Steps", (), {"step": FakeStep()})()
        self.calls = []
        self._fail_at, self._error = fail_at, error

    def train(self, num_steps):
        if self._fail_at is not None and self.steps.step.value + num_steps >= self._fail_at:
            raise self._error
        self.calls.append(num_steps)
        self.steps.step.value += num_steps
        return np.array([5.0, 8.0, 10.0]) * num_steps


class FakeEvaluation:
    flag = "--eval-files"

    def __init__(self, accuracies=(0.5,), examples=100):
        self._accuracies = list(accuracies)
        self._examples = examples

    def __call__(self):
        accuracy = self._accuracies.pop(0) if len(self._accuracies) > 1 else self._accuracies[0]
        return np.array([0.3 * self._examples, accuracy * self._examples, self._examples])


class FakeCheckpoints:
    directory = "ckpts"

    def __init__(self, trainer, saved_step=None):
        self._trainer = trainer
        self._saved_step = saved_step
        self.saves = []

    def restore(self):
        if self._saved_step is not None:
            self._trainer.steps.step.value = self._saved_step
            return f"ckpt-{self._saved_step}"
        return None

    def save(self, step):
        self.saves.append(step)


def schedule(max_steps=25, log=10, eval_=20, ckpt=10, secs=1e9):
    return LoopConfig(max_steps=max_steps, log_every_steps=log, eval_every_steps=eval_,
                      checkpoint_every_steps=ckpt, checkpoint_every_secs=secs)


def controller(trainer, checkpoints=None, evaluation=None, **kwargs):
    record = {"train": [], "eval": []}
    made = loop.Controller(
        trainer=trainer, evaluation=evaluation or FakeEvaluation(),
        checkpoints=checkpoints or FakeCheckpoints(trainer),
        schedule=kwargs.pop("schedule", schedule()),
        train_actions=[record["train"].append], eval_actions=[record["eval"].append], **kwargs)
    return made, record


def test_trains_to_each_boundary_and_acts_there():
    trainer = FakeTrainer()
    checkpoints = FakeCheckpoints(trainer)
    made, record = controller(trainer, checkpoints)
    last = made.run()
    # Calls of 1, 2, 4, ... steps until the first progress line, then whole intervals.
    assert trainer.calls == [1, 2, 4, 3, 10, 5]
    assert [i.step for i in record["train"]] == [10, 20, 25]
    assert record["train"][0].metrics == {"loss": 0.5, "accuracy": 0.8}
    assert record["train"][0].examples == 100
    assert [e.step for e in record["eval"]] == [20, 25] and last.step == 25
    assert checkpoints.saves == [10, 20, 25]
    assert [e.step for e in made.evaluations] == [20, 25]
    assert made.evaluations[-1].train_seconds == pytest.approx(made.train_seconds)


def test_epochs_of_a_fractional_step_count_evaluate_where_each_epoch_ends():
    # 1,000 examples at batch 32 (31.25 steps an epoch) for 4 epochs: 125 steps.
    plan = LoopConfig(max_steps=None, eval_every_steps=None, epochs=4,
                      checkpoint_every_secs=1e9).in_steps(1000, 32)
    trainer = FakeTrainer()
    checkpoints = FakeCheckpoints(trainer)
    made, _ = controller(trainer, checkpoints, schedule=plan)
    assert made.run().step == 125
    assert [e.step for e in made.evaluations] == [32, 63, 94, 125]
    assert checkpoints.saves == [32, 63, 94, 125]


def test_a_resumed_run_trains_only_the_remaining_steps():
    trainer = FakeTrainer()
    made, record = controller(trainer, FakeCheckpoints(trainer, saved_step=20))
    made.run()
    assert trainer.calls == [1, 2, 2] and made.step == 25
    assert [i.steps for i in record["train"]] == [5]


def test_a_checkpoint_at_max_steps_only_evaluates():
    trainer = FakeTrainer()
    checkpoints = FakeCheckpoints(trainer, saved_step=30)
    made, record = controller(trainer, checkpoints)
    assert made.run().step == 30
    assert trainer.calls == [] and checkpoints.saves == [] and len(record["eval"]) == 1


def test_sigterm_saves_at_the_end_of_the_current_call_and_stops():
    stop = StopRequest()
    stop.requested = True  # arrived during the first call of a resumed run: 1 step
    trainer = FakeTrainer()
    checkpoints = FakeCheckpoints(trainer, saved_step=20)
    made, _ = controller(trainer, checkpoints, stop=stop,
                         schedule=schedule(max_steps=100, ckpt=1000, eval_=1000))
    with pytest.raises(Preempted, match="at step 21"):
        made.run()
    assert checkpoints.saves == [21]


def test_sigterm_during_a_whole_interval_saves_at_its_end():
    stop = StopRequest()
    trainer = FakeTrainer()
    train = trainer.train

    def signalled(num_steps):  # SIGTERM arrives during the call that starts at step 10
        stop.requested = trainer.steps.step.value >= 10
        return train(num_steps)

    trainer.train = signalled
    checkpoints = FakeCheckpoints(trainer)
    made, _ = controller(trainer, checkpoints, stop=stop,
                         schedule=schedule(ckpt=1000, eval_=1000))
    with pytest.raises(Preempted, match="at step 20"):
        made.run()
    assert checkpoints.saves == [20]


def test_the_workers_vote_decides_a_stop_requested_elsewhere():
    trainer = FakeTrainer()
    votes = []

    def vote(flags):
        votes.append(flags)
        return (True, *flags[1:])  # another worker got SIGTERM

    made, _ = controller(trainer, schedule=schedule(ckpt=1000, eval_=1000), vote=vote)
    with pytest.raises(Preempted):
        made.run()
    assert votes == [(False, False, False)]


def test_replicas_agree_once_before_what_evaluates_or_saves_their_state():
    trainer = FakeTrainer()
    events = []
    checkpoints = FakeCheckpoints(trainer)
    checkpoints.save = lambda step: events.append(("save", step))
    def evaluate():
        events.append(("eval", trainer.steps.step.value))
        return np.array([30.0, 50.0, 100.0])  # loss sum, correct, examples

    made, _ = controller(trainer, checkpoints, evaluation=evaluate,
                         schedule=schedule(max_steps=35, log=5, eval_=20, ckpt=10),
                         agree=lambda: events.append(("agree", trainer.steps.step.value)))
    made.run()
    assert events == [("agree", 10), ("save", 10), ("agree", 20), ("eval", 20), ("save", 20),
                      ("agree", 30), ("save", 30), ("agree", 35), ("eval", 35), ("save", 35)]


def test_time_based_checkpoints_are_saved_between_step_boundaries():
    trainer = FakeTrainer()
    checkpoints = FakeCheckpoints(trainer)
    made, _ = controller(trainer, checkpoints, schedule=schedule(ckpt=1000, secs=0))
    made.run()
    assert checkpoints.saves == [1, 3, 7, 10, 20, 25]


def test_the_first_progress_line_comes_after_first_line_secs_whatever_the_log_interval():
    trainer = FakeTrainer()
    plan = schedule(max_steps=3000, log=1000, eval_=3000, ckpt=3000)
    made, record = controller(trainer, schedule=plan, first_line_secs=0.0)
    made.run()
    assert [i.step for i in record["train"]] == [1, 1000, 2000, 3000]
    assert trainer.calls == [1, 999, 1000, 1000]
    assert record["train"][0].steps == 1 and record["train"][1].steps == 999


def test_a_first_line_due_on_another_worker_is_printed_on_every_worker():
    trainer = FakeTrainer()
    plan = schedule(max_steps=100, log=100, eval_=100, ckpt=100)
    made, record = controller(trainer, schedule=plan,
                              vote=lambda flags: (flags[0], flags[1], len(trainer.calls) == 3))
    made.run()
    assert [i.step for i in record["train"]] == [7, 100]
    assert trainer.calls == [1, 2, 4, 93]


def test_an_empty_evaluation_names_its_flag():
    made, _ = controller(FakeTrainer(), evaluation=FakeEvaluation(examples=0))
    with pytest.raises(TrainerError, match="^--eval-files: evaluation read no examples$"):
        made.run()


def test_a_lost_peer_becomes_one_line():
    error = tf.errors.UnavailableError(None, None, "Socket closed from remote target "
                                       "/job:worker/replica:0/task:1 while ...")
    made, _ = controller(FakeTrainer(fail_at=20, error=error))
    with pytest.raises(TrainerError, match="lost contact with task /job:worker/replica:0/task:1"):
        made.run()


def test_input_errors_are_explained_by_the_trainer_that_reads_the_input():
    class Steps:
        step = FakeStep()

        def train(self, iterator, num_steps):
            raise tf.errors.DataLossError(None, None, "corrupted record at 12")

    trainer = loop.InGraphTrainer(Steps(), [], lambda err: TrainerError(f"explained: {err}"))
    with pytest.raises(TrainerError, match="explained: corrupted record at 12"):
        trainer.train(5)


def test_best_metric_calls_its_actions_on_improvement_only():
    improved = []
    best = loop.BestMetric("loss", higher_is_better=False, on_improvement=[improved.append])
    for step, value in ((10, 0.5), (20, 0.7), (30, 0.4), (40, 0.4)):
        best(loop.Evaluation(step, {"loss": value, "accuracy": 0.0}, 10, 0.1, None))
    assert [e.step for e in improved] == [10, 30]
    assert float(best.variable.numpy()) == -0.4


def test_evaluator_and_loop_share_one_reporting_path():
    seen = []
    result = loop.evaluate(FakeEvaluation(accuracies=(0.75,)), 40, [seen.append])
    assert seen == [result] and result.metrics["accuracy"] == 0.75 and result.examples == 100
    with pytest.raises(TrainerError, match="evaluation read no examples"):
        loop.evaluate(FakeEvaluation(examples=0), 40, [seen.append])
    assert len(seen) == 1


def test_schedule_boundaries():
    plan = schedule(max_steps=95, log=10, eval_=40, ckpt=25)
    steps, step = [], 0
    while step < 95:
        step = plan.next_boundary(step)
        steps.append(step)
    assert steps == [10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95]
