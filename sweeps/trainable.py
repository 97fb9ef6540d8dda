"""The trainer as a Ray Tune function trainable, through the trainer's callbacks alone.

Each validation and each finished stage becomes a `tune.report`; a finished stage also carries
a Tune checkpoint: the run folder's checkpoint, config, data and history, which is everything
`resume=true` needs. Each trial is also a ClearML task, a child of the sweep's, when the sweep
tracks to ClearML; its scalars are flushed before each stage's report, since Tune may end the
trial inside that report. When Tune restarts a trial (after a failure, or when a sweep resumes), the
trial continues from its last stage checkpoint, on whichever node it lands.
"""
from __future__ import annotations

import logging
import math
import posixpath
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs
from ray import tune

from ganimator.config import load_config
from ganimator.tracking import Tracking
from ganimator.trainer import (CHECKPOINT, CONFIG, DATA, HISTORY, CheckpointError, Trainer, TrainEvent,
                               TrainingDiverged, load_checkpoint_file)

from .objective import score

SUMMARY_METRICS = ("score", "coverage", "global_diversity", "local_diversity", "rec_error")


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares; Tune ships it once through the object store."""

    trainer_overrides: tuple[str, ...]  # the user's, plus the sweep task's ClearML mode and id
    data: bytes  # the training npz, so nodes need no shared copy of it
    num_stages: int
    sweep: str = ""  # the sweep's name: ClearML task names and tags
    rec_weight: float = 1.0
    threads: int = 1
    device: str = "cpu"


def trial_overrides(setup: TrialSetup, params: dict, npz: Path, run_dir: Path, resume: bool) -> list[str]:
    return [*setup.trainer_overrides, *(f"{k}={v}" for k, v in params.items()),
            f"npz_filename={npz}", f"run_dir={run_dir}", f"resume={str(resume).lower()}",
            "progress=false", f"num_threads={setup.threads}", f"device={setup.device}"]


def trial_metrics(event: TrainEvent, num_stages: int, rec_weight: float) -> dict:
    """The trainer's event as Tune metrics: the objective, its parts, and every loss as `l<level>/<name>`."""
    m = event.metrics
    out = {f"l{k}": v for k, v in m.items() if "/" in k}
    core = {"coverage": m["coverage"], "global_diversity": m["global_diversity"],
            "local_diversity": m["local_diversity"], "rec_error": m[f"{event.levels[-1]}/rec_error"]}
    stages_done = event.stage + 1 if event.kind == "stage_end" else event.stage
    return {"score": score(core, rec_weight), **core, **out, "stages_done": stages_done,
            "finished": stages_done == num_stages, "stage_iteration": event.iteration, "step": event.step}


def train_trial(params: dict, setup: TrialSetup) -> None:
    # Ray logs every persisted checkpoint at INFO, which buries the trial table on the driver.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    trial_dir = Path(tune.get_context().get_trial_dir())
    run_dir = trial_dir / "run"
    trial_dir.mkdir(parents=True, exist_ok=True)  # only the driver's node has it made already
    (trial_dir / "input.npz").write_bytes(setup.data)
    checkpoint = tune.get_checkpoint()
    shutil.rmtree(run_dir, ignore_errors=True)  # a restart begins from the Tune checkpoint or from scratch
    resume = checkpoint is not None and restore_run(checkpoint, run_dir)
    trial_id = tune.get_context().get_trial_id()
    cfg = load_config([*trial_overrides(setup, params, trial_dir / "input.npz", run_dir, resume=resume),
                       f"experiment_name={setup.sweep}/{trial_id}"])
    trainer = Trainer(cfg)

    def objective(event: TrainEvent) -> dict:
        return {"score": trial_metrics(event, setup.num_stages, setup.rec_weight)["score"]}

    tags = ["trial", setup.sweep]
    with Tracking(cfg, trainer.dataset, tags, params, announce=False, objective=objective) as tracking:
        trainer.callbacks += [*tracking.callbacks, _tune_report(setup, trial_dir, run_dir)]
        try:
            trainer.fit()
        except TrainingDiverged as e:
            # A retry would diverge again at the same point: the trial ends now, failed with the
            # reason, and the sweep goes on. Raising would make Tune retry it max_failures times.
            tracking.fail(str(e))
            tune.report(failure_metrics(str(e), trainer.stage, trainer.step))


def restore_run(checkpoint: tune.Checkpoint, run_dir: Path) -> bool:
    """Copy the newest of the trial's Tune checkpoints whose trainer checkpoints all read into `run_dir`
    (one for a trial, one per member for a population). A corrupt or truncated one is skipped with
    a warning naming it; False if none reads."""
    for candidate in [checkpoint, *_older_checkpoints(checkpoint)]:
        with candidate.as_directory() as saved:
            try:
                for path in sorted(Path(saved).rglob(CHECKPOINT)):
                    load_checkpoint_file(path)
            except CheckpointError as e:
                print(f"warning: {e} (Tune checkpoint {candidate.path}); trying the one before it", file=sys.stderr)
                continue
            shutil.copytree(saved, run_dir)
            return True
    print("warning: no readable checkpoint left; the trial starts again from scratch", file=sys.stderr)
    return False


def _older_checkpoints(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's other kept checkpoints (`checkpoint_NNNNNN` beside this one), newest first."""
    parent, name = posixpath.split(checkpoint.path.rstrip("/"))
    infos = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    older = sorted((i.path for i in infos if i.type == pyarrow.fs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
    return [tune.Checkpoint(path, filesystem=checkpoint.filesystem) for path in older]


def failure_metrics(reason: str, stage: int, step: int) -> dict:
    """A diverged trial's last report: the reason, and the worst value of every objective."""
    return {"failure": reason, "score": -math.inf, "coverage": 0.0, "global_diversity": 0.0, "local_diversity": 0.0,
            "stages_done": stage, "finished": False, "step": step}


def _tune_report(setup: TrialSetup, trial_dir: Path, run_dir: Path):
    def report(event: TrainEvent) -> None:
        metrics = trial_metrics(event, setup.num_stages, setup.rec_weight)
        if event.kind != "stage_end":
            tune.report(metrics)
            return
        # Tune copies this folder into its storage during the report. Tune may also end the
        # trial inside the report (its last stage, or an early stop), so nothing runs after it.
        staging = trial_dir / "checkpoint-staging"
        shutil.rmtree(staging, ignore_errors=True)
        stage_files(event.checkpoint, run_dir, staging)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(staging))

    return report


def stage_files(checkpoint: Path, run_dir: Path, dest: Path) -> None:
    """What a run needs to continue from a stage end: its checkpoint, config, data and history."""
    dest.mkdir(parents=True)
    shutil.copyfile(checkpoint, dest / CHECKPOINT)
    for name in (CONFIG, DATA, HISTORY):
        shutil.copyfile(run_dir / name, dest / name)
