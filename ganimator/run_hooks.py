"""What the commands that train (ganimator-train, a sweep's trials, an export's retrain) add to
the trainer: a conditional run's trajectories, and the run folder's recordings and samples.

    trainer = build_trainer(cfg)                  # a conditional run given its trajectories
    trainer.fit([RunOutputs(), *other_hooks])     # validation.rrd, then samples/ and review.rrd

The trainer itself imports neither generation nor review: they are attached here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from .config import ConfigError, check_device, npz_filename, resolve_device
from .dataset import MotionDataset
from .artifacts import write_run_results
from .edit import TrajectorySource
from .recording import ValidationRecording
from .rundir import RunDir
from .trainer import EventKind, Hooks, Trainer, TrainEvent, TrainResult, training_data


class RunOutputs(Hooks):
    """What every run folder gets, whatever the tracking: every validation's samples in
    validation.rrd (tracking.rerun), and once the run finishes its samples and review.rrd."""

    def __init__(self):
        self._recordings: dict[Path, ValidationRecording] = {}  # per member's run folder

    def on_event(self, trainer: Trainer, event: TrainEvent) -> bool:
        if trainer.cfg.tracking.rerun:
            if trainer.run_dir not in self._recordings:
                self._recordings[trainer.run_dir] = ValidationRecording(trainer.dataset, trainer.run_dir)
            self._recordings[trainer.run_dir](event)
        if event.kind == EventKind.STAGE_END and event.stages_done == len(trainer.stages):
            write_run_results(trainer.run_dir, trainer.cfg.tracking.artifact_samples)
        return False


def load_trajectories(cfg: DictConfig, dataset: MotionDataset) -> TrajectorySource | None:
    """A conditional run's trajectories (None for an unconditional run): from the run folder's own
    copy of its trajectory run when resuming, else from the run `model.trajectory_run` names,
    which the config then names by its absolute path (config.yaml outlives the cwd)."""
    if not cfg.model.trajectory_run:
        return None
    if len(dataset.clips) > 1:
        raise ConfigError("config key 'model.trajectory_run': a conditional run trains on one clip, and "
                          f"{npz_filename(cfg)} holds {len(dataset.clips)}")
    device = resolve_device(cfg.util.device)
    check_device(device)
    own = RunDir(cfg.util.run_dir).trajectory_run
    source = TrajectorySource.load(own if own.is_dir() else cfg.model.trajectory_run, dataset, device)
    cfg.model.trajectory_run = str(Path(cfg.model.trajectory_run).resolve())
    return source


def build_trainer(cfg: DictConfig, dataset: MotionDataset | None = None) -> Trainer:
    """A Trainer of `cfg`, on `dataset` or the run's data (`training_data`), with its trajectories."""
    dataset = training_data(cfg, dataset)
    return Trainer(cfg, dataset, load_trajectories(cfg, dataset))


def train(cfg: DictConfig, dataset: MotionDataset | None = None, hooks: Sequence[Hooks] = ()) -> TrainResult:
    """A run trained as the commands train it: `build_trainer`, RunOutputs, then `hooks`."""
    return build_trainer(cfg, dataset).fit([RunOutputs(), *hooks])
