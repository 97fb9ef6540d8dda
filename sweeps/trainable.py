"""The trainer as a Ray Tune function trainable, through the trainer's callbacks alone.

Each validation and each finished stage becomes a `tune.report`; a finished stage also carries
a Tune checkpoint: the run folder's checkpoint, config, data and history, which is everything
`resume=true` needs. When Tune restarts a trial (after a failure, or when a sweep resumes), the
trial continues from its last stage checkpoint, on whichever node it lands.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from ganimator.config import load_config
from ganimator.trainer import CHECKPOINT, CONFIG, DATA, HISTORY, Trainer, TrainEvent

from .objective import score

SUMMARY_METRICS = ("score", "coverage", "global_diversity", "local_diversity", "rec_error")


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares; Tune ships it once through the object store."""

    trainer_overrides: tuple[str, ...]
    data: bytes  # the training npz, so nodes need no shared copy of it
    num_stages: int
    rec_weight: float = 1.0
    threads: int = 1
    device: str = "cpu"


def trial_overrides(setup: TrialSetup, params: dict, run_dir: Path, resume: bool) -> list[str]:
    return [*setup.trainer_overrides, *(f"{k}={v}" for k, v in params.items()),
            f"npz_filename={run_dir.parent / 'input.npz'}", f"run_dir={run_dir}", f"resume={str(resume).lower()}",
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
    (trial_dir / "input.npz").write_bytes(setup.data)
    checkpoint = tune.get_checkpoint()
    shutil.rmtree(run_dir, ignore_errors=True)  # a restart begins from the Tune checkpoint or from scratch
    if checkpoint is not None:
        with checkpoint.as_directory() as saved:
            shutil.copytree(saved, run_dir)
    cfg = load_config(trial_overrides(setup, params, run_dir, resume=checkpoint is not None))

    def report(event: TrainEvent) -> None:
        metrics = trial_metrics(event, setup.num_stages, setup.rec_weight)
        if event.kind != "stage_end":
            tune.report(metrics)
            return
        # Tune copies this folder into its storage during the report. Tune may also end the
        # trial inside the report (its last stage, or an early stop), so nothing runs after it.
        staging = trial_dir / "checkpoint-staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copyfile(event.checkpoint, staging / CHECKPOINT)
        for name in (CONFIG, DATA, HISTORY):
            shutil.copyfile(run_dir / name, staging / name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(staging))

    Trainer(cfg, callbacks=[report]).fit()
