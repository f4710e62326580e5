"""Vertex's three search algorithms for the local tuner, on Optuna.

Why Optuna: it is installed with the `tuning` extra and actively maintained; its TPE sampler
(Bayesian optimisation with tree-structured Parzen estimators) handles categorical and
conditional spaces natively because the space is defined by running code (define-by-run: a
conditional parameter is only suggested once its parent took a matching value); and a study
persists to SQLite, which is what lets an interrupted local study resume. Vertex's own Bayesian
algorithm (a Gaussian-process bandit in Vizier) is not available offline; TPE plays its part
(ALGORITHM_UNSPECIFIED). RANDOM_SEARCH is Optuna's RandomSampler on the same space.

How Vertex's value specs map onto Optuna:
- DOUBLE / INTEGER: suggest_float / suggest_int over [minValue, maxValue], log=True for
  UNIT_LOG_SCALE. UNIT_REVERSE_LOG_SCALE (dense near maxValue) samples v on a log scale and uses
  minValue + maxValue - v, so both log scales need minValue > 0.
- DISCRETE: an integer index into the increasing values, so TPE sees their order (every value
  is equally likely under random search).
- CATEGORICAL: suggest_categorical.
- GRID_SEARCH: the grid is enumerated here, respecting conditions (a child's values only
  combine with the parent values that activate it), and Optuna's GridSampler walks its point
  indices, remembering which were run across resumes.
Optuna stores what it sampled (indices, the v of reverse-log parameters); the values the trainer
got are what `suggest` returns.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import optuna

from hptuning.spec import Param, TuningSpec

GRID_LIMIT = 100_000
_GRID_PARAM = "grid_point"


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler calls `study.stop()` when the grid is used up, which only works inside
    `study.optimize`; the tuner asks and tells, and stops at the grid's size itself."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(spec: TuningSpec, seed: int | None,
                 trials_so_far: int) -> optuna.samplers.BaseSampler:
    """The sampler for spec.algorithm. The random streams of TPE and random search start at
    seed + trials_so_far so that a resumed study does not replay the first trials' samples.
    The grid's order is fixed (GridSampler's own shuffle, seed 0): its points are identified by
    index, so a resumed study must see the same order whatever --seed it is given."""
    if spec.algorithm == "grid":
        return _AskTellGridSampler({_GRID_PARAM: list(range(len(grid(spec.params))))}, seed=0)
    stream = None if seed is None else seed + trials_so_far
    if spec.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=stream)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # group: model the parameters of each conditional branch jointly; constant_liar: parallel
        # trials still running count as bad, so they are not all sent to the same region.
        return optuna.samplers.TPESampler(seed=stream, multivariate=True, group=True,
                                          constant_liar=True)


def suggest(trial: optuna.Trial, spec: TuningSpec) -> dict:
    """Samples one trial's parameters: {parameterId: value}, conditional ones only if active."""
    if spec.algorithm == "grid":
        points = grid(spec.params)
        return dict(points[trial.suggest_int(_GRID_PARAM, 0, len(points) - 1)])
    values: dict = {}
    for param in spec.params:
        _suggest(trial, param, values)
    return values


def _suggest(trial: optuna.Trial, param: Param, out: dict) -> None:
    if param.kind == "categorical":
        value = trial.suggest_categorical(param.key, param.values)
    elif param.kind == "discrete":
        value = param.values[trial.suggest_int(param.key, 0, len(param.values) - 1)]
    else:
        draw = trial.suggest_int if param.kind == "integer" else trial.suggest_float
        value = draw(param.key, param.low, param.high, log=param.scale != "linear")
        if param.scale == "reverse_log":
            value = min(max(param.low + param.high - value, param.low), param.high)
    out[param.id] = value
    for condition in param.children:
        if value in condition.parent_values:
            _suggest(trial, condition.param, out)


def grid_size(params: tuple[Param, ...]) -> int:
    return math.prod(_size(p) for p in params)


def _size(param: Param) -> int:
    return sum(grid_size(_active(param, value)) for value in _grid_values(param))


@functools.lru_cache(maxsize=4)  # suggest needs it for every trial
def grid(params: tuple[Param, ...]) -> list[dict]:
    """Every combination of values, conditional parameters only where active; raises
    ValueError past GRID_LIMIT points."""
    size = grid_size(params)
    if size > GRID_LIMIT:
        raise ValueError(f"the grid has {size:,} points (limit {GRID_LIMIT:,})")
    return _points(params)


def _points(params: tuple[Param, ...]) -> list[dict]:
    return [dict(itertools.chain.from_iterable(part.items() for part in combo))
            for combo in itertools.product(*(_param_points(p) for p in params))]


def _param_points(param: Param) -> list[dict]:
    return [{param.id: value, **rest}
            for value in _grid_values(param)
            for rest in _points(_active(param, value))]


def _grid_values(param: Param):
    return param.values if param.kind in ("discrete", "categorical") else range(
        param.low, param.high + 1)


def _active(param: Param, value) -> tuple[Param, ...]:
    return tuple(c.param for c in param.children if value in c.parent_values)
