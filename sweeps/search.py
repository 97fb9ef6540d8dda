"""How trials are chosen and stopped: Optuna's sampler behind Ray Tune, and ASHA at stage ends."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from .objective import PARETO_METRICS
from .space import SearchSpace

TUNE_ID = "tune_trial_id"


class SweepSearch(OptunaSearch):
    """OptunaSearch that records early-stopped trials as pruned, and that a killed sweep can
    resume without duplicating Optuna trials.

    Tune saves the searcher with its experiment state every few seconds. A driver killed
    between a save and the next leaves Optuna trials that the restored searcher has never
    heard of: asked for a trial Tune had not recorded yet (still RUNNING in the study), or
    told the result of a trial that Tune will run again from its checkpoint. Each Optuna trial
    records its Tune trial id, so a new Tune trial adopts such an orphan (the restored sampler
    would suggest the same parameters anyway) and reports on finished trials are ignored.
    """

    def __init__(self, *args, num_stages: int, **kwargs):
        self.num_stages = num_stages
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        if trial_id not in self._ot_trials and self._ot_study is not None:
            orphan = self._orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = optuna.Trial(self._ot_study, orphan._trial_id)
        params = super().suggest(trial_id)
        if params is not None:
            self._ot_trials[trial_id].set_user_attr(TUNE_ID, trial_id)
        return params

    def _orphan(self):
        known = {t._trial_id for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return next((t for t in running if t._trial_id not in known), None)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and result.get("failure"):  # diverged: FAIL with the reason, never a score
            self._ot_trials[trial_id].set_user_attr("failure", result["failure"][:1000])
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL, skip_if_finished=True)
            self._completed_trials.add(trial_id)
            return
        if result and not error and result.get("stages_done", 0) < self.num_stages:
            # Stopped by ASHA: PRUNED, as an Optuna pruner would record it, so the sampler does
            # not take a score from an early stage for a final one.
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED, skip_if_finished=True)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def on_trial_result(self, trial_id: str, result: dict):
        if result.get("failure"):
            return  # told as FAIL when the trial completes
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # told before the driver was killed; Tune reruns the trial's last stage


def searcher(cfg, space: SearchSpace, storage: str, num_stages: int) -> OptunaSearch:
    pareto = cfg.objective == "pareto"
    samplers = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
                "random": optuna.samplers.RandomSampler}
    sampler = samplers[cfg.sampler or ("nsga2" if pareto else "tpe")](seed=cfg.sampler_seed)
    metric, mode = (list(PARETO_METRICS), ["max"] * len(PARETO_METRICS)) if pareto else ("score", "max")
    return SweepSearch(space.distributions(), metric=metric, mode=mode, points_to_evaluate=[space.defaults()],
                       sampler=sampler, study_name=cfg.name, storage=optuna.storages.RDBStorage(storage),
                       num_stages=num_stages)


def scheduler(cfg, num_stages: int):
    if not cfg.early_stopping:
        return FIFOScheduler()
    # `stages_done` rises by one at each stage end, so ASHA's rungs fall on stage boundaries.
    return ASHAScheduler(time_attr="stages_done", metric="score", mode="max", max_t=num_stages,
                         grace_period=cfg.grace_stages, reduction_factor=cfg.reduction_factor)
