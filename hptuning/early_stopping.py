"""Early stopping of running trials: the study's stopping rule (hptuning.stopping) applied to
each running trial's measurements so far, against the completed trials' curves.

A trial the rule gives up on gets SIGTERM: the trainer checkpoints and exits, and the trial is
scored by the measurements it made. One still running GRACE_SECS later is killed.
"""

from __future__ import annotations

from typing import Sequence

from hptuning.ledger import Ledger
from hptuning.progress import Progress
from hptuning.stopping import StoppingRule
from hptuning.trials import TrialProcess


class EarlyStopping:
    def __init__(self, rule: StoppingRule | None, ledger: Ledger, progress: Progress):
        self.rule, self.ledger, self.progress = rule, ledger, progress

    def check(self, running: Sequence[TrialProcess]) -> None:
        if self.rule is None:
            return
        for trial in running:
            if trial.stop_reason is not None:
                trial.enforce_deadline()
                continue
            reason = self.rule.reason(self.ledger.measurements(trial.trial_id),
                                      self.ledger.curves)
            # Measurements read just before the trial exited on its own: it ended, unstopped.
            if reason and trial.process.poll() is None:
                trial.stop_early(reason)
                self.progress.row(trial.trial_id, "stopping", details=reason)
