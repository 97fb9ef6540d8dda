"""How trials are chosen and stopped: Optuna's sampler behind Ray Tune and ASHA at stage ends, or, for
population sweeps, an Optuna study that trials ask and tell themselves, with successive halving."""
from __future__ import annotations

import contextlib
import fcntl
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from .config import SweepConfig
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


SAMPLERS = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "random": optuna.samplers.RandomSampler}


def sampler(cfg, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    return SAMPLERS[cfg.sampler or ("nsga2" if cfg.objective == "pareto" else "tpe")](seed=cfg.sampler_seed + seed_offset)


def searcher(cfg, space: SearchSpace, storage: str, num_stages: int) -> OptunaSearch:
    pareto = cfg.objective == "pareto"
    metric, mode = (list(PARETO_METRICS), ["max"] * len(PARETO_METRICS)) if pareto else ("score", "max")
    return SweepSearch(space.distributions(), metric=metric, mode=mode, points_to_evaluate=[space.defaults()],
                       sampler=sampler(cfg), study_name=cfg.name, storage=optuna.storages.RDBStorage(storage),
                       num_stages=num_stages)


@dataclass(frozen=True)
class StudySpec:
    """The Optuna study of a population sweep, which its trials open themselves: samplers and
    pruners live in the process that asks, not in the storage."""

    name: str
    storage: str
    sweep: SweepConfig  # its sampler and early-stopping settings

    @property
    def pareto(self) -> bool:
        return self.sweep.objective == "pareto"

    def pruner(self) -> optuna.pruners.BasePruner:
        if not self.sweep.early_stopping:
            return optuna.pruners.NopPruner()
        # The rule ASHA applies to separate trials, at the same rungs: stages_done is the step.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.sweep.grace_stages,
                                                      reduction_factor=int(self.sweep.reduction_factor))

    def create(self, defaults: dict) -> optuna.Study:
        """A new study whose first trial tries the trainer's defaults (as `points_to_evaluate` does)."""
        study = optuna.create_study(storage=self._storage(), study_name=self.name, sampler=sampler(self.sweep),
                                    directions=["maximize"] * (len(PARETO_METRICS) if self.pareto else 1))
        study.enqueue_trial(defaults)
        return study

    def load(self, seed_offset: int = 0) -> optuna.Study:
        """The study as one trial asks from it; `seed_offset` keeps concurrent trials' samplers apart."""
        if self.storage.startswith("sqlite:///") and not Path(self.storage.removeprefix("sqlite:///")).is_file():
            raise FileNotFoundError(f"the sweep's Optuna study {self.storage} is not on this node: a population "
                                    "sweep on several nodes needs optuna_storage= a PostgreSQL URL they all reach")
        return optuna.load_study(study_name=self.name, storage=self._storage(),
                                 sampler=sampler(self.sweep, seed_offset), pruner=self.pruner())

    @contextlib.contextmanager
    def asking(self):
        """Hold while asking for a trial and claiming it. Optuna hands an enqueued trial (the
        defaults) to the first process that pops it, guarded by SELECT ... FOR UPDATE, which
        SQLite ignores: two trials on one machine could both pop it, and one configuration was
        then trained twice and another never asked (seen in the fault tests). So asks on a SQLite
        study take turns, by a lock on its file; PostgreSQL locks the row itself."""
        if not self.storage.startswith("sqlite:///"):
            yield
            return
        with open(self.storage.removeprefix("sqlite:///"), "rb") as db:  # flock: apart from SQLite's own locks
            fcntl.flock(db, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(db, fcntl.LOCK_UN)

    def _storage(self) -> optuna.storages.RDBStorage:
        # Trials of one machine share a SQLite file; they wait for its lock rather than fail.
        connect = {"connect_args": {"timeout": 60}} if self.storage.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(self.storage, engine_kwargs=connect)


def scheduler(cfg, num_stages: int):
    if not cfg.early_stopping:
        return FIFOScheduler()
    # `stages_done` rises by one at each stage end, so ASHA's rungs fall on stage boundaries.
    return ASHAScheduler(time_attr="stages_done", metric="score", mode="max", max_t=num_stages,
                         grace_period=cfg.grace_stages, reduction_factor=cfg.reduction_factor)
