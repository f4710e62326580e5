"""What runs a role's steps: the trainer that fits the strategy, and every evaluation of the run.

The chief's periodic evaluation, its --test-files evaluation and the evaluator task's come from
one `Evaluations` factory over the same input pipelines, so --skip-corrupt-images, the error
explanations and --ema-decay (evaluate the averaged weights) mean the same for all three.
"""

from __future__ import annotations

from trainer import data, loop
from trainer.config import DataConfig


class Inputs:
    """The dataset functions of a run's sources, as a strategy's input pipelines call them.

    With `skipped` (--skip-corrupt-images) every pipeline drops unreadable images and counts
    them there; `seed` (--seed) fixes the shuffle and the augmentation; `cache` (--cache, a
    trainer.data.cache.Cache) keeps the decoded images of the sources it covers.
    """

    def __init__(self, config: DataConfig, seed: int | None, skipped=None, cache=None):
        self._config = config
        self._seed = seed
        self.skipped = skipped
        self._cache = cache

    def dataset_fn(self, source, batch_size: int, training: bool, num_batches=None):
        config = self._config
        return lambda context=None: data.make_dataset(
            source, batch_size=batch_size, training=training, shuffle_buffer=config.shuffle_buffer,
            num_batches=num_batches, seed=self._seed, input_context=context,
            augment=config.augment, augment_min_area=config.augment_min_area,
            skipped=self.skipped, cache=self._cache)

    @staticmethod
    def explain(source) -> loop.ErrorExplainer:
        return lambda err: data.explain_pipeline_error(err, source)


def build_trainer(inputs: Inputs, steps: loop.StepFunctions, source, batch_size: int, *,
                  coordinated: bool, num_workers: int):
    """Steps scheduled on a parameter-server cluster's workers (`coordinated`), else in-graph."""
    train_fn = inputs.dataset_fn(source, batch_size, True)
    if coordinated:
        return loop.CoordinatedTrainer(steps, train_fn, num_workers, inputs.explain(source))
    return loop.InGraphTrainer(steps, steps.strategy.distribute_datasets_from_function(train_fn),
                               inputs.explain(source))


class Evaluations:
    """Builds the evaluation of a source for `steps` (model and optimizer under a strategy).

    With `local_model` (parameter servers: the variables live elsewhere) the weights are copied
    into it for each evaluation; otherwise every replica of the strategy evaluates its shard.
    With `averaged` (--ema-decay) the model holds the optimizer's moving average meanwhile.
    """

    def __init__(self, inputs: Inputs, steps: loop.StepFunctions, batch_size: int, *,
                 averaged: bool, local_model=None):
        self._inputs = inputs
        self._steps = steps
        self._batch_size = batch_size
        self._averaged = averaged
        self._local_model = local_model

    def __call__(self, source, num_batches: int | None = None):
        dataset_fn = self._inputs.dataset_fn(source, self._batch_size, False, num_batches)
        explain = self._inputs.explain(source)
        steps = self._steps
        if self._local_model is not None:
            evaluation = loop.LocalCopyEvaluation(steps.model, self._local_model, dataset_fn(),
                                                  source.flag, explain)
        else:
            evaluation = loop.DistributedEvaluation(
                steps, steps.strategy.distribute_datasets_from_function(dataset_fn), source.flag,
                explain)
        if not self._averaged:
            return evaluation
        from trainer import ema

        return ema.AveragedEvaluation(evaluation, steps.model, steps.optimizer)
