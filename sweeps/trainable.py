"""The sweep's one Ray Tune trainable: a trial trains K configurations of the study as one fused
population (K = `population`; 1 for a sweep of single configurations).

Each Tune trial asks the Optuna study for its K configurations (`study.ask`), trains them as one
`ganimator.population.Population`, and tells each configuration's Optuna trial what happened: its
score at every stage end, where the study's pruner stops a weak configuration while the others
train on, and at the end COMPLETE with the objective's values, PRUNED, or FAIL with the reason.
The batch shrinks as members leave. Ranking, export and the ClearML comparison read the study
(sweeps/results.py).

A lone configuration is a ClearML task live, as it trains. ClearML holds one task per process
(and offline mode can create no other), so the members of a larger population become tasks
after it ends, from their run histories.

Faults and resume: a Tune checkpoint at every stage end holds each running member's run folder,
named by its Optuna trial number, and each member's Optuna trial records where it lies. Tune
restarts a failed trial from its newest checkpoint; `resume=true` starts a new Tune run over the
batches the study says are unfinished, and each continues from the checkpoint its members
record. Either way a batch takes back the members still running in the study (each records its
batch index), and one that never checkpointed those it had asked, so nothing is asked twice.
Nothing read back is unpickled: the checkpoint holds run folders (weights-only torch files,
YAML, JSON), and Tune's own experiment state is never loaded.
"""
from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import optuna
import pyarrow.fs
from optuna.trial import TrialState
from ray import tune

from ganimator.config import ConfigError, load_config, qualify
from ganimator.dataset import MotionDataset
from ganimator.population import SEARCHABLE_KEYS, Population
from ganimator.run_hooks import RunOutputs, load_trajectories
from ganimator.rundir import CheckpointError, RunDir, load_checkpoint_file
from ganimator.tracking import Tracking
from ganimator.trainer import EventKind, Hooks, Trainer, TrainEvent, TrainingDiverged

from .paths import MEMBERS, SweepPaths, TrialFolder, checkpoint_name
from .results import BATCH, CHECKPOINT, FAILURE, METRICS, STAGE_SCORES, TUNE_ID, member_id
from .search import StudySpec, adopt
from .space import SearchSpace


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares; Tune ships it once through the object store."""

    trainer_overrides: tuple[str, ...]  # the user's, plus the sweep task's ClearML mode and id
    data: bytes  # the training npz, so nodes need no shared copy of it
    num_stages: int
    sweep: str = ""  # the sweep's name: ClearML task names and tags
    threads: int = 1
    device: str = "cpu"


def trial_overrides(setup: TrialSetup, params: dict, npz: Path, run_dir: Path, resume: bool) -> list[str]:
    return [*setup.trainer_overrides, *(f"{k}={v}" for k, v in params.items()),
            f"npz_filename={npz}", f"run_dir={run_dir}", f"resume={str(resume).lower()}",
            "progress=false", f"num_threads={setup.threads}", f"device={setup.device}"]


def batches(num_samples: int, population: int) -> list[dict]:
    """The Tune trials of a sweep: num_samples configurations, `population` to a trial."""
    sizes = [min(population, num_samples - start) for start in range(0, num_samples, population)]
    return [{"index": i, "members": n} for i, n in enumerate(sizes)]


def batch_of(config: dict, sweep) -> dict:
    """A Ray trial's batch from its Tune config, which holds the batch's index: a number that
    Tune's live table shows whole."""
    return batches(sweep.num_samples, sweep.population)[config["batch"]]


def train_trial(config: dict, setup: TrialSetup, spec: StudySpec, paths: SweepPaths) -> None:
    # Ray logs every persisted checkpoint at INFO, which buries the trial table on the driver.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    context = tune.get_context()
    folder, tune_id = TrialFolder(Path(context.get_trial_dir())), context.get_trial_id()
    folder.path.mkdir(parents=True, exist_ok=True)  # only the driver's node has it made already
    folder.data.write_bytes(setup.data)
    runs = folder.runs
    shutil.rmtree(runs, ignore_errors=True)  # a restart begins from a stage checkpoint or from scratch

    batch = batch_of(config, spec.sweep)
    backend = spec.backend()
    study = spec.load(seed_offset=batch["index"], backend=backend)
    # Tune's own, when it restarts this trial; on resume, the newest its members recorded.
    checkpoint = tune.get_checkpoint() or recorded_checkpoint(study, batch["index"], paths)
    restored = checkpoint is not None and restore_run(checkpoint, runs)
    going_on = _members(runs / MEMBERS) if restored else None
    trials = member_trials(study, backend, batch["index"], tune_id, batch["members"], spec.space, going_on,
                           spec.asking)
    if not trials:
        return  # every member was told its outcome before this restart
    dataset = MotionDataset.load(folder.data)
    # A member keeps the name of the Ray trial that asked it (its ClearML task's), across restarts and resumes.
    cfgs = [load_config([*trial_overrides(setup, t.params, folder.data, runs / str(t.number), restored),
                         f"experiment_name={setup.sweep}/{member_id(t.user_attrs.get(TUNE_ID, tune_id), t.number)}"])
            for t in trials]
    live = len(trials) == 1

    with contextlib.ExitStack() as stack:
        trackers = [stack.enter_context(_tracking(cfgs[0], trials[0], setup, spec))] if live else []
        population = Population(cfgs, dataset, load_trajectories)
        hooks = TrialHooks(study, spec, dict(zip(population.members, trials)), folder, setup.num_stages, trackers)
        outcomes = population.fit([RunOutputs(), *trackers, hooks])
        for tracking, outcome in zip(trackers, outcomes):
            tracking.end_as(outcome)
    if not live:
        for cfg, trial, outcome in zip(cfgs, trials, outcomes):
            _replay(cfg, trial, outcome, setup, spec)
    if hooks.last:
        tune.report(hooks.last)


def member_trials(study: optuna.Study, backend: optuna.storages.BaseStorage, batch: int, tune_id: str, size: int,
                  space: SearchSpace, going_on: list[int] | None,
                  asking: Callable[[], ContextManager] = contextlib.nullcontext) -> list[optuna.Trial]:
    """The Optuna trials of batch `batch`: those its checkpoint names, or without one those
    still running that an earlier attempt asked, topped up to `size` with new asks. `asking`
    (StudySpec.asking) makes each ask and its claim one step among concurrent trials; a new ask
    records the batch, and the Ray trial `tune_id` that asked it."""
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(BATCH) == batch]
    running = {t.number for t in mine if t.state == TrialState.RUNNING}
    numbers = [n for n in going_on if n in running] if going_on is not None else sorted(running)
    trials = adopt(study, backend, numbers)
    for _ in range(size - len(mine) if going_on is None else 0):
        with asking():
            trial = study.ask(space.distributions())
            trial.set_user_attr(BATCH, batch)
            trial.set_user_attr(TUNE_ID, tune_id)
        trials.append(trial)
    return trials


def recorded_checkpoint(study: optuna.Study, batch: int, paths: SweepPaths) -> tune.Checkpoint | None:
    """The newest stage checkpoint that the batch's running configurations record, in the sweep folder."""
    kept = [t.user_attrs.get(CHECKPOINT) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get(BATCH) == batch]
    kept = [k for k in kept if isinstance(k, dict) and isinstance(k.get("stages_done"), int)]
    if not kept:
        return None
    newest = max(kept, key=lambda k: k["stages_done"])
    try:
        return tune.Checkpoint(paths.checkpoint(str(newest.get("path"))))
    except ValueError as e:
        print(f"warning: {e}; batch {batch} starts again from scratch", file=sys.stderr)
        return None


def check_space_fusable(space: SearchSpace, population: int) -> None:
    """A population's members may differ only in SEARCHABLE_KEYS: say so before any trial starts."""
    if population == 1:
        return
    for key in space:
        if not qualify(key).startswith(SEARCHABLE_KEYS):
            raise ConfigError(f"search space key {key!r} cannot vary within a population (population > 1 "
                              f"fuses members that differ only in {', '.join(SEARCHABLE_KEYS)}): "
                              "drop it from the space or set population=1")


class TrialHooks(Hooks):
    """A batch's members as the study and Tune see them: each stage end is told to the member's
    Optuna trial (whose pruner may stop it), a diverged member fails at once (the others may train
    for hours yet), and once a stage has ended the members that go on are checkpointed for Tune and
    the checkpoint recorded in their trials, where resume finds it."""

    def __init__(self, study: optuna.Study, spec: StudySpec, trials: dict[Trainer, optuna.Trial],
                 folder: TrialFolder, num_stages: int, trackers: list[Tracking]):
        self.study, self.spec, self.trials, self.folder = study, spec, trials, folder
        self.num_stages, self.trackers = num_stages, trackers
        self.last: dict = {}  # the newest stage end, for Tune's trial table: the best member's score

    def on_event(self, member: Trainer, event: TrainEvent) -> bool:
        if event.kind != EventKind.STAGE_END:
            return False
        trial, objective, quality = self.trials[member], self.spec.objective, event.quality
        score = objective.score(quality)
        trial.set_user_attr(METRICS, {**quality.as_dict(), "score": score, "stages_done": event.stages_done,
                                      "step": event.step})
        # Every stage end's score, for the check that early scores predict final ones (results.py).
        earlier = list(trial.user_attrs.get(STAGE_SCORES, []))[:event.stages_done - 1]
        trial.set_user_attr(STAGE_SCORES, [*earlier, score])
        if event.stages_done == self.num_stages:
            self.study.tell(trial, objective.values(quality))
            return False
        if not objective.prunable:
            return False
        trial.report(score, step=event.stages_done)
        if trial.should_prune():
            self.study.tell(trial, state=TrialState.PRUNED)
            return True
        return False

    def on_leave(self, member: Trainer, outcome) -> None:
        if isinstance(outcome, TrainingDiverged):
            trial = self.trials[member]
            trial.set_user_attr(FAILURE, str(outcome)[:1000])
            self.study.tell(trial, state=TrialState.FAIL)
            for tracking in self.trackers:
                tracking.end_as(outcome)

    def after_stage(self, stage: int, active: list[Trainer]) -> None:
        # Every member that ended this stage, those pruned here too: the table shows the best score.
        ended = [m.result.events[-1] for m in self.trials if m.result.events]
        scores = [self.spec.objective.score(e.quality) for e in ended
                  if e.kind == EventKind.STAGE_END and e.stage == stage]
        # One report a stage end, so Tune's iteration is the stage: a batch continued by a new
        # Tune run counts on from its checkpoint, as one that Tune restarted does.
        finished = stage + 1 == self.num_stages
        self.last = {"stages_done": stage + 1, "training_iteration": stage + 1, "members": len(active),
                     "finished": finished, **({"score": max(scores)} if scores else {})}
        if not active or finished:
            return
        staging = self.folder.staging
        shutil.rmtree(staging, ignore_errors=True)
        going = [self.trials[m].number for m in active]
        for m, number in zip(active, going):
            stage_files(m.result.events[-1].checkpoint, m.run_dir, staging / str(number))
        (staging / MEMBERS).write_text(json.dumps(going) + "\n")
        tune.report(self.last, checkpoint=tune.Checkpoint.from_directory(staging))
        kept = {"path": checkpoint_name(tune.get_checkpoint().path), "stages_done": stage + 1}
        for m in active:  # where resume finds them
            self.trials[m].set_user_attr(CHECKPOINT, kept)


def _tracking(cfg, trial: optuna.Trial, setup: TrialSetup, spec: StudySpec) -> Tracking:
    objective = spec.objective

    def scalars(event: TrainEvent) -> dict:
        return {"score": objective.score(event.quality)} if event.quality else {}

    return Tracking(cfg, setup.num_stages, ["trial", setup.sweep], trial.params, announce=False, objective=scalars)


def _replay(cfg, trial: optuna.Trial, outcome, setup: TrialSetup, spec: StudySpec) -> None:
    """A population member as a ClearML task (when the sweep tracks to ClearML), from its history."""
    with _tracking(cfg, trial, setup, spec) as tracking:
        tracking.replay(RunDir(cfg.util.run_dir).history)
        tracking.end_as(outcome)


def restore_run(checkpoint: tune.Checkpoint, run_dir: Path) -> bool:
    """Copy the newest of the trial's Tune checkpoints whose trainer checkpoints all read into `run_dir`.
    A corrupt or truncated one is skipped with a warning naming it; False if none reads."""
    for candidate in [checkpoint, *_older_checkpoints(checkpoint)]:
        with candidate.as_directory() as saved:
            try:
                for path in sorted(Path(saved).rglob(RunDir.CHECKPOINT)):
                    load_checkpoint_file(path)
                if (Path(saved) / MEMBERS).exists():
                    _members(Path(saved) / MEMBERS)
            except CheckpointError as e:
                print(f"warning: {e} (Tune checkpoint {candidate.path}); trying the one before it", file=sys.stderr)
                continue
            shutil.copytree(saved, run_dir)
            return True
    print("warning: no readable checkpoint left; the trial starts again from scratch", file=sys.stderr)
    return False


def _members(path: Path) -> list[int]:
    """The Optuna trial numbers a stage checkpoint names."""
    try:
        numbers = json.loads(path.read_text())
    except (OSError, ValueError):
        numbers = None
    if not isinstance(numbers, list) or not all(type(n) is int for n in numbers):
        raise CheckpointError(f"{path}: not a list of Optuna trial numbers")
    return numbers


def _older_checkpoints(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's other kept checkpoints (`checkpoint_NNNNNN` beside this one), newest first."""
    parent, name = posixpath.split(checkpoint.path.rstrip("/"))
    infos = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    older = sorted((i.path for i in infos if i.type == pyarrow.fs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
    return [tune.Checkpoint(path, filesystem=checkpoint.filesystem) for path in older]


def stage_files(checkpoint: Path, run_dir: Path, dest: Path) -> None:
    """What a run needs to continue from a stage end: its checkpoint, config, data and history."""
    run, kept = RunDir(run_dir), RunDir(dest)
    dest.mkdir(parents=True)
    shutil.copyfile(checkpoint, kept.checkpoint)
    for name in (RunDir.CONFIG, RunDir.DATA, RunDir.HISTORY):
        shutil.copyfile(run.path / name, kept.path / name)
