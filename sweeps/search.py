"""How configurations are chosen and stopped: an Optuna study that each Ray trial asks for its
configurations and tells their results, with Optuna's sampler and pruner.

The decision strategy is the study's sampler (TPE for the score, NSGA-II for the Pareto mode, or
random) and pruner: successive halving at stage ends, the rule ASHA applies (an asynchronous
pruner: a trial is stopped as soon as it is in the bottom of its rung, never waiting for others),
with rungs at `grace_stages`, then x `reduction_factor`. The same strategy serves a sweep of
single configurations (`population=1`) and of fused populations.
"""
from __future__ import annotations

import contextlib
import fcntl
from dataclasses import dataclass
from pathlib import Path

import optuna

from .config import SweepConfig
from .objective import Objective
from .space import SearchSpace

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "random": optuna.samplers.RandomSampler}


@dataclass(frozen=True)
class StudySpec:
    """The sweep's Optuna study, which its trials open themselves: samplers and pruners live in
    the process that asks, not in the storage."""

    name: str
    storage: str
    sweep: SweepConfig  # its sampler and early-stopping settings
    space: SearchSpace

    @property
    def objective(self) -> Objective:
        return Objective.named(self.sweep.objective, self.sweep.rec_weight)

    def sampler(self, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
        kind = self.sweep.sampler or self.objective.sampler
        return SAMPLERS[kind](seed=self.sweep.sampler_seed + seed_offset)

    def pruner(self) -> optuna.pruners.BasePruner:
        if not self.sweep.early_stopping or not self.objective.prunable:
            return optuna.pruners.NopPruner()
        # stages_done is the step, so the rungs fall on stage boundaries.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.sweep.grace_stages,
                                                      reduction_factor=int(self.sweep.reduction_factor))

    def create(self) -> optuna.Study:
        """A new study whose first trial tries the trainer's defaults."""
        study = self.objective.new_study(storage=self.backend(), study_name=self.name, sampler=self.sampler())
        study.enqueue_trial(self.space.defaults())
        return study

    def load(self, seed_offset: int = 0, backend: optuna.storages.BaseStorage | None = None) -> optuna.Study:
        """The study as one trial asks from it; `seed_offset` keeps concurrent trials' samplers apart.
        `backend`: the storage to open it through (`backend()`), for `adopt`."""
        if self.storage.startswith("sqlite:///") and not Path(self.storage.removeprefix("sqlite:///")).is_file():
            raise FileNotFoundError(f"the sweep's Optuna study {self.storage} is not on this node: a sweep on "
                                    "several nodes needs optuna_storage= a PostgreSQL URL they all reach")
        return optuna.load_study(study_name=self.name, storage=backend or self.backend(),
                                 sampler=self.sampler(seed_offset), pruner=self.pruner())

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

    def backend(self) -> optuna.storages.RDBStorage:
        # Trials of one machine share a SQLite file; they wait for its lock rather than fail.
        connect = {"connect_args": {"timeout": 60}} if self.storage.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(self.storage, engine_kwargs=connect)


def adopt(study: optuna.Study, backend: optuna.storages.BaseStorage, numbers: list[int]) -> list[optuna.Trial]:
    """The trials `numbers` of `study` (opened through `backend`), to report to, prune and tell as
    the process that asked them would: a restarted or resumed Ray trial takes its configurations
    back by number, through the storage's public calls."""
    study_id = backend.get_study_id_from_name(study.study_name)
    return [optuna.Trial(study, backend.get_trial_id_from_study_id_trial_number(study_id, n)) for n in numbers]
