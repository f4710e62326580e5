"""A tuning config -> a validated `TuningSpec`, shared by the local tuner and the submit script.

A config is the YAML `gcloud ai hp-tuning-jobs create --config` takes: a HyperparameterTuningJob
in the REST (camelCase) shape. It is parsed with the SDK's own protobuf type, so a field Vertex
would reject (unknown, misspelled, wrongly typed) fails here first. Its first worker pool runs
the trainer from our training image (`containerSpec`; the image's entrypoint is
`python -m trainer.task`) or, the legacy way, from our sdist on a prebuilt image
(`pythonPackageSpec`); either spec's `args` are the trainer's flags. Then come the checks Vertex
only discovers in the first trial, or never: every parameterId is a trainer flag of a fitting
type whose values the trainer accepts, ranges and value lists are well formed, conditional
parameters hang off values their parent can take, the metric is the one the trainer reports,
and the trials have data: `--train-files` and `--eval-files`, or `--bundled-sample` on purpose.

`${NAME}` placeholders in any string are replaced from `--set NAME=VALUE` or the environment.
Every problem is a TrainerError whose one-line message names the file and field.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import yaml
from google.cloud.aiplatform_v1.types import HyperparameterTuningJob, StudySpec
from google.protobuf import json_format

from hptuning import flags as trainer_flags
from trainer.errors import TrainerError

POOL_FIELD = "trialJobSpec.workerPoolSpecs[0]"
# The two ways a trial runs the trainer: the SDK's field name -> the config's.
CODE_SPECS = {"container_spec": "containerSpec", "python_package_spec": "pythonPackageSpec"}
ARGS_FIELDS = tuple(f"{POOL_FIELD}.{name}.args" for name in CODE_SPECS.values())
TRAINER_MODULE = "trainer.task"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_VALUE_SPECS = {"double_value_spec": "double", "integer_value_spec": "integer",
                "discrete_value_spec": "discrete", "categorical_value_spec": "categorical"}
# Which parent kind each conditional's `parent*Values` field matches.
_CONDITIONS = {"parent_categorical_values": ("categorical", "parentCategoricalValues"),
               "parent_int_values": ("integer", "parentIntValues"),
               "parent_discrete_values": ("discrete", "parentDiscreteValues")}
_SCALES = {"SCALE_TYPE_UNSPECIFIED": "linear", "UNIT_LINEAR_SCALE": "linear",
           "UNIT_LOG_SCALE": "log", "UNIT_REVERSE_LOG_SCALE": "reverse_log"}
_ALGORITHMS = {"ALGORITHM_UNSPECIFIED": "bayesian", "GRID_SEARCH": "grid",
               "RANDOM_SEARCH": "random"}
# Fields Vertex fills in itself; a config that sets them was copied from a job's description.
_OUTPUT_ONLY = ("name", "trials", "state", "createTime", "startTime", "endTime", "updateTime",
                "error", "satisfiesPzs", "satisfiesPzi")


@dataclass(frozen=True)
class Param:
    """One parameterId in the search space; `children` are its conditional parameters."""

    id: str  # the parameterId, passed to the trainer as --<id>=<value>
    key: str  # unique within the space (a parameterId may repeat under disjoint parent values)
    kind: str  # double | integer | discrete | categorical
    scale: str  # linear | log | reverse_log
    path: str  # the field, for messages: studySpec.parameters[1]
    low: float | int | None = None
    high: float | int | None = None
    values: tuple = ()  # discrete (increasing) or categorical
    integral: bool = False  # the trainer flag takes integers
    children: tuple[Conditional, ...] = ()


@dataclass(frozen=True)
class Conditional:
    parent_values: tuple
    param: Param


@dataclass(frozen=True)
class TuningSpec:
    source: str  # the config file, as given
    job: HyperparameterTuningJob  # placeholders substituted
    metric: str
    maximize: bool
    selection: str  # best | last
    algorithm: str  # bayesian | grid | random
    params: tuple[Param, ...]
    max_trials: int
    parallel: int
    max_failed: int  # 0: Vertex decides (see hptuning.tuner)
    trainer_args: tuple[str, ...]  # the args of args_field, then any extra args
    args_field: str  # one of ARGS_FIELDS, for messages
    extra_args: tuple[str, ...] = ()  # given on the command line (after --), for messages


def error(source: str, field: str, reason: str) -> TrainerError:
    return TrainerError(f"{source}: {field}: {reason}" if field else f"{source}: {reason}")


def load(path: str | Path, values: Mapping[str, str], extra_args: Sequence[str] = (),
         placeholders_everywhere: bool = True, max_trials: int | None = None,
         parallel: int | None = None) -> TuningSpec:
    """Reads, substitutes, parses and validates a config.

    `extra_args` (the args after `--`) follow the config's trainer args, in the job too. With
    `placeholders_everywhere` False only the trainer args must be free of unset placeholders:
    the local tuner never uses the rest of trialJobSpec. `max_trials` and `parallel` replace
    maxTrialCount and parallelTrialCount.
    """
    source = str(path)
    document = _read_yaml(source)
    document, unset = substitute(document, values)
    for field, name in unset:
        if placeholders_everywhere or field.startswith(ARGS_FIELDS):
            raise error(source, field, f"${{{name}}} is not set; pass --set {name}=VALUE or "
                                       f"export {name}")
    job = parse_job(source, document)
    if max_trials is not None:
        job.max_trial_count = max_trials
    if parallel is not None:
        job.parallel_trial_count = parallel
    return validate(source, job, extra_args)


def _read_yaml(source: str) -> dict:
    try:
        data = Path(source).read_bytes()
    except OSError as err:
        raise TrainerError(f"{source}: cannot read the config ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise TrainerError(f"{source}: not UTF-8 at byte {err.start} (line {line}); save the "
                           "config as UTF-8") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TrainerError(f"{source}: malformed YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise TrainerError(f"{source}: expected a mapping of studySpec, maxTrialCount, "
                           f"trialJobSpec, ..., got {type(document).__name__}")
    return document


def substitute(node, values: Mapping[str, str], field: str = ""):
    """(node with every set ${NAME} replaced, [(field, NAME) of those not set])."""
    if isinstance(node, dict):
        unset, out = [], {}
        for key, value in node.items():
            out[key], missing = substitute(value, values, f"{field}.{key}" if field else str(key))
            unset += missing
        return out, unset
    if isinstance(node, list):
        unset, out = [], []
        for index, value in enumerate(node):
            item, missing = substitute(value, values, f"{field}[{index}]")
            out.append(item)
            unset += missing
        return out, unset
    if isinstance(node, str):
        missing = [name for name in _PLACEHOLDER.findall(node) if name not in values]
        text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), node)
        return text, [(field, name) for name in missing]
    return node, []


def parse_job(source: str, document: dict) -> HyperparameterTuningJob:
    """The document as the SDK's HyperparameterTuningJob; unknown fields are errors."""
    for key in _OUTPUT_ONLY:
        if key in document:
            raise error(source, key, "is output only (set by Vertex); remove it")
    message = HyperparameterTuningJob.pb()()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except json_format.ParseError as err:
        raise error(source, *_parse_error(str(err))) from None
    return HyperparameterTuningJob.wrap(message)


def _parse_error(message: str) -> tuple[str, str]:
    """protobuf's nested ParseError text -> (field, reason)."""
    first, _, rest = message.partition("\n")
    chain = re.findall(r"Failed to parse (\w+) field: ", first)
    reason = re.sub(r"^(Failed to parse \w+ field: )+", "", first)
    field = ".".join(chain)
    located = re.search(r' at "?HyperparameterTuningJob\.?([^"\s]*)"?\.*$', reason)
    if located:
        field, reason = located.group(1).rstrip("."), reason[:located.start()]
    unknown = re.search(r'has no field named "(\w+)"', reason)
    if unknown:
        known = re.findall(r"'(\w+)'", rest)
        close = difflib.get_close_matches(unknown.group(1), known, n=1)
        reason = f"unknown field {unknown.group(1)!r}" + (
            f" (did you mean {close[0]!r}?)" if close else
            f" (known: {', '.join(known)})" if known else "")
    return field, reason.rstrip(".")


def validate(source: str, job: HyperparameterTuningJob,
             extra_args: Sequence[str] = ()) -> TuningSpec:
    study = job.study_spec
    if len(study.metrics) != 1:
        raise error(source, "studySpec.metrics", f"needs exactly one metric (the trainer reports "
                                                 f"one), got {len(study.metrics)}")
    metric = study.metrics[0]
    reason = trainer_flags.metric_reason(metric.metric_id)
    if reason:
        raise error(source, "studySpec.metrics[0].metricId", reason)
    goal = StudySpec.MetricSpec.GoalType(metric.goal).name
    if goal not in ("MAXIMIZE", "MINIMIZE"):
        raise error(source, "studySpec.metrics[0].goal", "must be MAXIMIZE or MINIMIZE")
    for field, value, least in (("maxTrialCount", job.max_trial_count, 1),
                                ("parallelTrialCount", job.parallel_trial_count, 1),
                                ("maxFailedTrialCount", job.max_failed_trial_count, 0)):
        if value < least:
            raise error(source, field, f"must be at least {least}, got {value}")
    args_field, args = _trainer_args(source, job)
    trainer_args = (*args, *extra_args)
    algorithm = _ALGORITHMS[StudySpec.Algorithm(study.algorithm).name]
    params = _params(source, study, algorithm)
    _check_trainer_accepts(source, params, trainer_args, metric.metric_id, extra_args,
                           args_field)
    # Last: the config is sound, and what is missing is usually given after --.
    reason = trainer_flags.data_reason(trainer_args)
    if reason:
        raise error(source, "", f"no training data: {reason}")
    _args_of(job).extend(extra_args)  # the job runs what the local trials run
    selection = StudySpec.MeasurementSelectionType(study.measurement_selection_type).name
    return TuningSpec(
        source=source, job=job, metric=metric.metric_id, maximize=goal == "MAXIMIZE",
        selection="best" if selection == "BEST_MEASUREMENT" else "last",
        algorithm=algorithm, params=params, max_trials=job.max_trial_count,
        parallel=job.parallel_trial_count, max_failed=job.max_failed_trial_count,
        trainer_args=tuple(trainer_args), args_field=args_field, extra_args=tuple(extra_args))


def code_spec(pool) -> str | None:
    """Which of CODE_SPECS a worker pool sets (the SDK's name), if any."""
    return next((name for name in CODE_SPECS if name in pool), None)


def _args_of(job: HyperparameterTuningJob):
    """The trainer args of the first worker pool (of the code spec it sets), to change."""
    pool = job.trial_job_spec.worker_pool_specs[0]
    return getattr(pool, code_spec(pool)).args


def _trainer_args(source: str, job: HyperparameterTuningJob) -> tuple[str, list[str]]:
    """(the field, the trainer args) of the first worker pool, which must run our trainer."""
    pools = job.trial_job_spec.worker_pool_specs
    which = code_spec(pools[0]) if pools else None
    if which is None:
        raise error(source, POOL_FIELD, "needs containerSpec (our training image) or "
                                        f"pythonPackageSpec: trials run {TRAINER_MODULE}")
    field = f"{POOL_FIELD}.{CODE_SPECS[which]}"
    if which == "container_spec":
        command = list(pools[0].container_spec.command)
        # Our image's entrypoint is `python -m trainer.task`; a command replaces it.
        if command and command[-2:] != ["-m", TRAINER_MODULE]:
            raise error(source, f"{field}.command",
                        f"must be unset (our image runs {TRAINER_MODULE}) or end in "
                        f"-m {TRAINER_MODULE}, got {' '.join(command)!r}")
        return f"{field}.args", list(pools[0].container_spec.args)
    package = pools[0].python_package_spec
    if package.python_module != TRAINER_MODULE:
        raise error(source, f"{field}.pythonModule",
                    f"must be {TRAINER_MODULE}, got {package.python_module!r}")
    return f"{field}.args", list(package.args)


def _params(source: str, study: StudySpec, algorithm: str) -> tuple[Param, ...]:
    if not study.parameters:
        raise error(source, "studySpec.parameters", "needs at least one parameter")
    flags = trainer_flags.trainer_flags()
    occurrences: dict[str, list] = {}  # flag dest -> [(parent path, parent values, path)]
    params = tuple(_param(source, spec, f"studySpec.parameters[{i}]", flags, occurrences,
                          algorithm, None)
                   for i, spec in enumerate(study.parameters))
    repeated = {dest: where for dest, where in occurrences.items() if len(where) > 1}
    for where in repeated.values():
        parents = {parent for parent, _, _ in where}
        seen: set = set()
        for index, (parent, values, path) in enumerate(where):
            if index and (len(parents) > 1 or parent is None or seen & set(values)):
                raise error(source, f"{path}.parameterId",
                            "repeats another parameter; a parameterId may only repeat among one "
                            "parent's conditional parameters, with disjoint parent values")
            seen |= set(values)
    return tuple(_with_keys(p, set(repeated)) for p in params)


def _with_keys(param: Param, repeated: set, parent: str = "") -> Param:
    """Gives a repeated parameterId a key naming its parent values (dropout|model=cnn,cnn_bn)."""
    children = tuple(
        Conditional(c.parent_values, _with_keys(
            c.param, repeated, f"{param.id}={','.join(map(str, c.parent_values))}"))
        for c in param.children)
    key = f"{param.id}|{parent}" if param.id.replace("-", "_") in repeated else param.id
    return replace(param, key=key, children=children)


def _param(source, spec, path, flags, occurrences, algorithm, parent) -> Param:
    parameter_id = spec.parameter_id
    if not parameter_id or re.search(r"\s", parameter_id):
        raise error(source, f"{path}.parameterId", "must be a flag name without whitespace")
    flag = flags.get(parameter_id)
    if flag is None:
        raise error(source, f"{path}.parameterId",
                    trainer_flags.unknown_flag_reason(parameter_id, flags))
    kind_field = StudySpec.ParameterSpec.pb(spec).WhichOneof("parameter_value_spec")
    if kind_field is None:
        raise error(source, path, "needs one of doubleValueSpec, integerValueSpec, "
                                  "discreteValueSpec, categoricalValueSpec")
    kind = _VALUE_SPECS[kind_field]
    field = f"{path}.{kind}ValueSpec"
    scale = _SCALES[StudySpec.ParameterSpec.ScaleType(spec.scale_type).name]
    if algorithm == "grid" and kind == "double":
        raise error(source, field, "GRID_SEARCH takes only INTEGER, DISCRETE and CATEGORICAL "
                                   "parameters (as on Vertex); list values in discreteValueSpec")
    low = high = None
    values: tuple = ()
    if kind in ("double", "integer"):
        value_spec = getattr(spec, kind_field)
        low, high = value_spec.min_value, value_spec.max_value
        if kind == "double" and not (math.isfinite(low) and math.isfinite(high)):
            raise error(source, field, "minValue and maxValue must be finite numbers")
        if not low < high:
            raise error(source, field, f"minValue {low:g} must be < maxValue {high:g}")
        if scale != "linear" and low <= 0:
            raise error(source, f"{field}.minValue", f"must be > 0 for {_scale_name(spec)}, "
                                                     f"got {low:g}")
    elif kind == "discrete":
        values = tuple(spec.discrete_value_spec.values)
        _check_values(source, field, values)
        if not all(math.isfinite(v) for v in values):
            raise error(source, f"{field}.values", "must be finite numbers")
        if any(b <= a for a, b in zip(values, values[1:])):
            raise error(source, f"{field}.values", "must be in increasing order, each once")
        if scale != "linear" and values[0] <= 0:
            raise error(source, f"{field}.values", f"must be > 0 for {_scale_name(spec)}")
    else:
        values = tuple(spec.categorical_value_spec.values)
        _check_values(source, field, values)
        if len(set(values)) != len(values):
            raise error(source, f"{field}.values", "must not repeat a value")
        if spec.scale_type:
            raise error(source, f"{path}.scaleType", "must be unset for a categorical parameter")
    reason = trainer_flags.kind_reason(flag, kind, values)
    if reason:
        raise error(source, field, reason)
    if flag.type is int:  # DISCRETE values are doubles; the flag wants 64, not 64.0
        values = tuple(int(v) for v in values) if kind == "discrete" else values
    occurrences.setdefault(flag.dest, []).append(
        (parent[0] if parent else None, parent[1] if parent else (), path))
    param = Param(parameter_id, parameter_id, kind, scale, path, low, high, values,
                  flag.type is int)
    return replace(param, children=tuple(
        _conditional(source, condition, f"{path}.conditionalParameterSpecs[{i}]", param, flags,
                     occurrences, algorithm)
        for i, condition in enumerate(spec.conditional_parameter_specs)))


def _scale_name(spec) -> str:
    return StudySpec.ParameterSpec.ScaleType(spec.scale_type).name


def _check_values(source: str, field: str, values: tuple) -> None:
    if not values:
        raise error(source, f"{field}.values", "needs at least one value")


def _conditional(source, condition, path, parent: Param, flags, occurrences,
                 algorithm) -> Conditional:
    which = StudySpec.ParameterSpec.ConditionalParameterSpec.pb(condition).WhichOneof(
        "parent_value_condition")
    if parent.kind == "double":
        raise error(source, path, "a DOUBLE parameter cannot have conditional parameters")
    wanted = next(name for name, (kind, _) in _CONDITIONS.items() if kind == parent.kind)
    if which != wanted:
        raise error(source, path, f"a {parent.kind.upper()} parent needs "
                                  f"{_CONDITIONS[wanted][1]}")
    field = f"{path}.{_CONDITIONS[wanted][1]}.values"
    values = tuple(getattr(condition, which).values)
    if not values:
        raise error(source, field, "needs at least one parent value")
    for value in values:
        possible = (parent.low <= value <= parent.high if parent.kind == "integer"
                    else value in parent.values)
        if not possible:
            raise error(source, field, f"{value!r} is not a value {parent.id!r} can take")
    if "parameter_spec" not in condition:
        raise error(source, f"{path}.parameterSpec", "is required")
    if parent.kind == "discrete" and parent.integral:
        values = tuple(int(v) for v in values)
    child = _param(source, condition.parameter_spec, f"{path}.parameterSpec", flags,
                   occurrences, algorithm, (parent.path, values))
    return Conditional(values, child)


def _check_trainer_accepts(source: str, params: tuple[Param, ...], args: Sequence[str],
                           metric: str, extra_args: Sequence[str], args_field: str) -> None:
    """Runs the trainer's own flag validation on the trainer args and on each parameter's
    extreme or listed values, so limits like dropout in [0, 1) live in one place."""
    where = f"{args_field} (+ the args after --)" if extra_args else args_field
    reason = trainer_flags.rejection(args)
    if reason:
        raise error(source, where, reason)
    # A flag given after -- reads as an override, but each trial's tuned value comes last and
    # would silently replace it.
    given = {trainer_flags.dest_of(arg) for arg in extra_args}
    for param, _ in _walk(params, ()):
        if trainer_flags.dest_of(f"--{param.id}") in given:
            raise error(source, "the args after --", f"set --{param.id.replace('_', '-')}, "
                        f"which the study tunes (parameterId {param.id}): each trial's tuned "
                        "value would silently replace it; remove it")
    reported = trainer_flags.reported_metric(args)
    if reported != metric:
        raise error(source, "studySpec.metrics[0].metricId",
                    f"is {metric!r} but the trainer reports {reported!r}; add "
                    f"--hypertune-metric={metric} to {args_field}")
    for param, context in _walk(params, ()):
        for field, value in _probes(param):
            assignment = [*context, f"--{param.id}={trainer_flags.flag_text(value)}"]
            reason = trainer_flags.rejection([*args, *assignment])
            if reason:
                raise error(source, field, f"the trainer rejects {assignment[-1]}: {reason}")


def _walk(params, context):
    """(param, flags that activate it) for every parameter, conditional ones included."""
    for param in params:
        yield param, context
        for condition in param.children:
            value = trainer_flags.flag_text(condition.parent_values[0])
            yield from _walk((condition.param,), (*context, f"--{param.id}={value}"))


def _probes(param: Param):
    field = f"{param.path}.{param.kind}ValueSpec"
    if param.kind in ("double", "integer"):
        return [(f"{field}.minValue", param.low), (f"{field}.maxValue", param.high)]
    return [(f"{field}.values[{i}]", value) for i, value in enumerate(param.values)]
