"""A Ray Tune trial that trains several sweep configurations at once, as one fused population.

With `population=K`, each Tune trial asks the Optuna study for K configurations (`study.ask`),
trains them as one `ganimator.population.Population`, and reports each member to its own Optuna
trial: its score at every stage end, where Optuna's successive-halving pruner (ASHA's rule, at
the same rungs) stops a weak member while the others train on, and at the end COMPLETE, PRUNED,
or FAIL with the reason. The batch shrinks as members leave. Ranking, export and the ClearML
comparison read the study. Members become ClearML tasks after the population ends (ClearML
holds one task per process), from their run histories.

Faults are handled as for single trials: a Tune checkpoint at every stage end holds each running
member's run folder, named by its Optuna trial number. A restarted trial continues the members
that are still running in the study; one that never checkpointed takes back the Optuna trials it
had asked (each records its Tune trial id), so a restart asks for nothing twice.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Callable, ContextManager

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray import tune

from ganimator.config import ConfigError, load_config, qualify
from ganimator.dataset import MotionDataset
from ganimator.population import SEARCHABLE_KEYS, Population
from ganimator.review import ValidationRecording
from ganimator.tracking import Tracking
from ganimator.trainer import HISTORY, Trainer, TrainEvent, TrainingDiverged

from .export import TrialRow, last_line, rank
from .objective import PARETO_METRICS
from .search import TUNE_ID, StudySpec
from .space import SearchSpace
from .trainable import SUMMARY_METRICS, TrialSetup, restore_run, stage_files, trial_metrics, trial_overrides

MEMBERS = "members.json"  # in a population's Tune checkpoint: the Optuna trial numbers that go on
BATCH = "batch"  # the Optuna user attribute naming a member's Tune trial by its batch index


def batches(num_samples: int, population: int) -> list[dict]:
    """The Tune trials of a population sweep: num_samples configurations, `population` to a trial."""
    sizes = [min(population, num_samples - start) for start in range(0, num_samples, population)]
    return [{"index": i, "members": n} for i, n in enumerate(sizes)]


def train_population(config: dict, setup: TrialSetup, spec: StudySpec, space: SearchSpace) -> None:
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    context = tune.get_context()
    trial_dir, tune_id = Path(context.get_trial_dir()), context.get_trial_id()
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "input.npz").write_bytes(setup.data)
    runs = trial_dir / "population"
    shutil.rmtree(runs, ignore_errors=True)
    checkpoint = tune.get_checkpoint()
    restored = checkpoint is not None and restore_run(checkpoint, runs)
    going_on = json.loads((runs / MEMBERS).read_text()) if restored else None

    study = spec.load(seed_offset=config["batch"]["index"])
    trials = member_trials(study, tune_id, config["batch"]["members"], space, going_on, spec.asking)
    if not trials:
        return  # every member was told its outcome before this restart
    for t in trials:
        t.set_user_attr(BATCH, config["batch"]["index"])
    dataset = MotionDataset.load(trial_dir / "input.npz")
    cfgs = [load_config([*trial_overrides(setup, t.params, trial_dir / "input.npz", runs / str(t.number), restored),
                         f"experiment_name={setup.sweep}/{member_id(tune_id, t.number)}"]) for t in trials]
    callbacks = [[*([ValidationRecording(dataset, runs / str(t.number))] if cfg.tracking.rerun else []),
                  _judge(study, t, spec, setup)] for cfg, t in zip(cfgs, trials)]

    last: dict = {}  # the newest stage end, for Tune's trial table: the best member's score

    def after_stage(stage: int, active: list[Trainer]) -> None:
        going = [trials[population.members.index(m)].number for m in active]
        scores = [trial_metrics(m.result.events[-1], setup.num_stages, setup.rec_weight)["score"] for m in active]
        last.update({"stages_done": stage + 1, "members": len(going), "finished": stage + 1 == setup.num_stages,
                     **({"score": max(scores)} if scores else {})})
        if going and not last["finished"]:
            staging = trial_dir / "checkpoint-staging"
            shutil.rmtree(staging, ignore_errors=True)
            for m, number in zip(active, going):
                stage_files(m.result.events[-1].checkpoint, m.run_dir, staging / str(number))
            (staging / MEMBERS).write_text(json.dumps(going) + "\n")
            tune.report(last, checkpoint=tune.Checkpoint.from_directory(staging))

    def on_leave(index: int, outcome) -> None:
        if isinstance(outcome, TrainingDiverged):  # at once: the others may train for hours yet
            trials[index].set_user_attr("failure", str(outcome)[:1000])
            study.tell(trials[index], state=TrialState.FAIL)

    population = Population(cfgs, dataset, callbacks, after_stage=after_stage, on_leave=on_leave)
    outcomes = population.fit()
    for cfg, trial, outcome in zip(cfgs, trials, outcomes):
        _track(cfg, dataset, trial, outcome, setup)
    if last:  # the last report: Tune may end the trial inside it, so nothing comes after it
        tune.report(last)


def check_space_fusable(space: SearchSpace) -> None:
    """A population's members may differ only in SEARCHABLE_KEYS: say so before any trial starts."""
    for key in space:
        if not qualify(key).startswith(SEARCHABLE_KEYS):
            raise ConfigError(f"search space key {key!r} cannot vary within a population (population > 1 "
                              f"fuses members that differ only in {', '.join(SEARCHABLE_KEYS)}): "
                              "drop it from the space or set population=1")


def member_trials(study: optuna.Study, tune_id: str, size: int, space: SearchSpace, going_on: list[int] | None,
                  asking: Callable[[], ContextManager] = contextlib.nullcontext) -> list[optuna.Trial]:
    """This Tune trial's Optuna trials: those its checkpoint names, or on a first start the ones
    an earlier attempt asked, topped up to `size` with new asks. `asking` (StudySpec.asking) makes
    each ask and its claim one step among concurrent trials."""
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TUNE_ID) == tune_id]
    running = {t.number: t for t in mine if t.state == TrialState.RUNNING}
    numbers = [n for n in going_on if n in running] if going_on is not None else sorted(running)
    trials = [optuna.Trial(study, running[n]._trial_id) for n in numbers]
    for _ in range(size - len(mine) if going_on is None else 0):
        with asking():
            trial = study.ask(space.distributions())
            trial.set_user_attr(TUNE_ID, tune_id)
        trials.append(trial)
    return trials


def member_id(tune_id: str, number: int) -> str:
    return f"{tune_id}-{number}"


def _judge(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, setup: TrialSetup):
    """A member's stage ends, told to its Optuna trial; True (the member stops) when pruned."""
    def judge(event: TrainEvent) -> bool:
        if event.kind != "stage_end":
            return False
        metrics = trial_metrics(event, setup.num_stages, setup.rec_weight)
        trial.set_user_attr("metrics", {k: metrics[k] for k in (*SUMMARY_METRICS, "stages_done", "step")})
        if metrics["finished"]:
            values = [metrics[k] for k in PARETO_METRICS] if spec.pareto else metrics["score"]
            study.tell(trial, values)
            return False
        if spec.pareto:
            return False  # Optuna prunes single-objective studies only (the config enforces it)
        trial.report(metrics["score"], step=metrics["stages_done"])
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return True
        return False

    return judge


def _track(cfg, dataset: MotionDataset, trial: optuna.Trial, outcome, setup: TrialSetup) -> None:
    """The member as a ClearML task (when the sweep tracks to ClearML), from its history."""
    def objective(event: TrainEvent) -> dict:
        return {"score": trial_metrics(event, setup.num_stages, setup.rec_weight)["score"]}

    with Tracking(cfg, dataset, ["trial", setup.sweep], trial.params, announce=False, objective=objective) as tracking:
        tracking.replay(Path(cfg.util.run_dir) / HISTORY)
        if isinstance(outcome, TrainingDiverged):
            tracking.fail(str(outcome))
        tracking.stopped = not isinstance(outcome, TrainingDiverged) and not outcome.finished  # pruned


def study_rows(study: optuna.Study, space_keys, pareto: bool) -> list[TrialRow]:
    """Every configuration of a population sweep, ranked like a sweep of single trials."""
    return rank([_row(t, space_keys) for t in study.get_trials(deepcopy=False)], pareto)


def close_orphans(study: optuna.Study, errors: dict[int, BaseException]) -> int:
    """FAIL the members still running in the Tune trials that errored past their retries (`errors`:
    batch index -> the error), so the study says what happened. Members of a sweep that was
    interrupted stay running, for `resume=true` to continue. Returns how many were closed."""
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get(BATCH) in errors]
    for t in orphans:
        error = last_line(errors[t.user_attrs[BATCH]])
        optuna.Trial(study, t._trial_id).set_user_attr("failure", f"its Ray trial ended with an error: {error}"[:1000])
        study.tell(t.number, state=TrialState.FAIL)
    return len(orphans)


def _row(t: FrozenTrial, space_keys) -> TrialRow:
    metrics = dict(t.user_attrs.get("metrics", {}))
    done = int(metrics.get("stages_done", 0))
    status = {TrialState.COMPLETE: "finished", TrialState.PRUNED: f"stopped after stage {done}",
              TrialState.FAIL: f"failed: {str(t.user_attrs.get('failure', 'unknown'))[:300]}",
              TrialState.RUNNING: "unfinished (resume=true continues it)"}.get(
        t.state, f"error: {t.state.name.lower()}")
    tune_id = t.user_attrs.get(TUNE_ID, "")
    return TrialRow(member_id(tune_id, t.number) if tune_id else str(t.number), {k: t.params.get(k) for k in space_keys},
                    metrics, status, done, int(metrics.get("step", 0)))
