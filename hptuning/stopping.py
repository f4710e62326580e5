"""Early stopping of trials, after the study's automated stopping spec.

`medianAutomatedStoppingSpec`: a trial stops when its best measurement so far is worse than
the median, over the trials that completed, of their best measurement up to the same step
(Vertex's median rule; it starts once MIN_COMPLETED trials have completed).
`decayCurveStoppingSpec`: a trial stops when its curve, extended in a straight line from its
last two measurements to --max-steps, ends worse than the best completed trial's final value
(Vertex fits a decay curve; the straight line is the local stand-in). Steps stand for
elapsed time: `useElapsedDuration` is not followed locally. Pure Python, measurements only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from hptuning.measurements import Measurement
from trainer.errors import TrainerError

MIN_COMPLETED = 2


@dataclass(frozen=True)
class StoppingRule:
    kind: str  # "median" or "decay curve"
    maximize: bool
    # The trainer's --max-steps: where a decay curve is extended to, and the end. None with
    # --epochs, whose steps differ from trial to trial (the median rule only).
    max_steps: int | None

    def reason(self, running: list[Measurement],
               completed: list[list[Measurement]]) -> str | None:
        """Why the running trial should stop now, or None. A trial measured at --max-steps has
        finished training (it is exporting): stopping it would save nothing and cut its export."""
        if not running or (self.max_steps is not None and running[-1].step >= self.max_steps):
            return None
        if self.kind == "median":
            return self._median(running, completed)
        return self._decay_curve(running, completed)

    def _best(self, values):
        return max(values) if self.maximize else min(values)

    def _worse(self, value: float, than: float) -> bool:
        return value < than if self.maximize else value > than

    def _median(self, running, completed):
        step = running[-1].step
        bests = [self._best(m.value for m in curve if m.step <= step) for curve in completed
                 if any(m.step <= step for m in curve)]
        if len(bests) < MIN_COMPLETED:
            return None
        median, own = statistics.median(bests), self._best(m.value for m in running)
        if self._worse(own, median):
            return (f"median rule: best {own:.4g} by step {step} is worse than the median "
                    f"{median:.4g} of {len(bests)} completed trials by then")
        return None

    def _decay_curve(self, running, completed):
        finals = [curve[-1].value for curve in completed if curve]
        if not finals or len(running) < 2:
            return None
        (step_a, a), (step_b, b) = (running[-2].step, running[-2].value), (running[-1].step,
                                                                           running[-1].value)
        slope = (b - a) / (step_b - step_a) if step_b > step_a else 0.0
        predicted = b + slope * max(0, self.max_steps - step_b)
        target = self._best(finals)
        if self._worse(predicted, target):
            return (f"decay curve: extended to step {self.max_steps} it reaches {predicted:.4g}, "
                    f"worse than the best completed trial's {target:.4g}")
        return None


def rule_of(study_spec, maximize: bool, max_steps: int | None) -> StoppingRule | None:
    """The study's stopping rule (a StudySpec), or None when it sets no automated stopping."""
    if "median_automated_stopping_spec" in study_spec:
        return StoppingRule("median", maximize, max_steps)
    if "decay_curve_stopping_spec" in study_spec:
        if max_steps is None:
            raise TrainerError("studySpec.decayCurveStoppingSpec: the local tuner extends each "
                               "curve to the trainer's --max-steps, which --epochs leaves to "
                               "each trial's batch size; give --max-steps, or use "
                               "medianAutomatedStoppingSpec (Vertex itself takes either)")
        return StoppingRule("decay curve", maximize, max_steps)
    return None
