"""Early stopping that never stops a seed architecture.

The seed architectures (vanilla above all) are the baseline every verdict compares with, and
the spread of their seed runs is the search's own noise estimate: a scheduler that prunes them
leaves the search with nothing to compare its winner with. They still count (ASHA's rungs,
the median of completed runs), but they always run to the full budget. Module-level classes,
so that Tune can pickle them with the experiment and restore them on ``--resume``."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

from ._trainable import SEED_RUN

__all__ = ["SeedsRunASHA", "SeedsRunMedian"]


def _keep_seeds(decision: str, trial: Any) -> str:
    if trial.config.get(SEED_RUN) and decision == TrialScheduler.STOP:
        return TrialScheduler.CONTINUE
    return decision


class SeedsRunASHA(ASHAScheduler):
    """ASHA (asynchronous successive halving) that lets seed architectures finish."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return _keep_seeds(super().on_trial_result(tune_controller, trial, result), trial)


class SeedsRunMedian(MedianStoppingRule):
    """The median stopping rule that lets seed architectures finish (it is not asked about
    them: a trial it once stopped must never report again; their completed runs still count
    in the median)."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.config.get(SEED_RUN):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
