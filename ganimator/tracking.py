"""Experiment tracking: a run as a ClearML task.

    trainer = build_trainer(cfg)
    with Tracking(cfg, len(trainer.stages), tags=["train"]) as tracking:
        trainer.fit([RunOutputs(), tracking])       # the task is one of the run's hooks

The same wrapper serves `ganimator-train`, every sweep trial and every retrain, so their tasks
line up in ClearML's compare view: the config's sections are connected as flat hyperparameter
sections (`optim/lambda_rec`), each loss is a scalar per level on the global iteration axis,
and a run that finishes its last stage attaches what its folder holds: resolved config,
history, generated BVH and the Rerun recordings (the trainer writes them, whatever the
tracking). Every task, the sweep's too (sweeps/report.py), is a `RunTask` and closes with an
explicit `TaskOutcome`: completed, stopped or failed. Credentials stay in ClearML's own
configuration; nothing here reads or prints them.
"""
from __future__ import annotations

import enum
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

from omegaconf import DictConfig, OmegaConf

from .errors import UserError
from .rundir import RunDir, read_history
from .trainer import EventKind, Hooks, Outcome, TrainEvent, TrainingDiverged

OFF_NOTE = ("ClearML: off (no clearml.conf, CLEARML_CONFIG_FILE or CLEARML_API_HOST; "
            "clearml=offline records sessions locally)")
CONFIG_SECTIONS = ("data", "model", "optim", "scheduling", "util")


class TrackingError(UserError, RuntimeError):
    """ClearML was asked for and could not start; the message says how to go on without it."""


def clearml_mode(setting: str) -> str:
    """'on', 'offline' or 'off' for a `tracking.clearml` setting: 'auto' is on when ClearML is configured."""
    if setting != "auto":
        return setting
    from clearml.backend_config.defs import get_active_config_file

    if os.environ.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true", "yes", "on"):
        return "offline"
    return "on" if get_active_config_file() or os.environ.get("CLEARML_API_HOST") else "off"


def offline_dir() -> Path:
    """Where ClearML keeps offline sessions on this machine (one folder and one zip per task)."""
    from clearml.config import get_cache_dir

    return Path(get_cache_dir()) / "offline"


class TaskOutcome(enum.Enum):
    """How a task ends: every close names one."""

    COMPLETED = "completed"
    STOPPED = "stopped"  # a scheduler (a pruner, Tune) or the user ended it early
    FAILED = "failed"


class RunTask:
    """One ClearML task (`mode` 'on' or 'offline'), child of `parent` when given: started here,
    reported and uploaded to, and closed with an explicit `TaskOutcome`. The one ClearML task type
    of a training run, a sweep trial, a retrain and a sweep."""

    def __init__(self, mode: str, project: str, name: str, tags: Iterable[str], task_type: str = "training",
                 parent: str = "", continue_task: str = ""):
        from clearml import Task
        from clearml.config import config_obj

        # ClearML reports through a subprocess by default, and each flush or close then waits about 5 s
        # for it; a sweep flushes at every stage end, so a reporting thread is used instead.
        config_obj.set_overrides({"sdk": {"development": {"report_use_subprocess": False}}})
        # A process that inherited ClearML's marker of a tracked parent (Ray workers started by a
        # tracked sweep driver) would join the parent's task; each run here is a task of its own.
        for var in ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID"):
            if os.environ.get(var, "").partition(":")[0] not in ("", str(os.getpid())):
                del os.environ[var]
        logging.getLogger("clearml.Repository Detection").setLevel(logging.ERROR)  # Ray workers are in no repository
        Task.set_offline(mode == "offline")
        try:
            self.task = Task.init(project_name=project, task_name=name, task_type=task_type, tags=list(tags),
                                  reuse_last_task_id=False, continue_last_task=continue_task or False,
                                  auto_connect_frameworks=False, auto_connect_arg_parser=False,
                                  auto_resource_monitoring=False)
        except Exception as e:  # ClearML raises several types for a missing or unreachable server
            reason = " ".join(str(e).split())  # ClearML's messages span lines; ours is one
            raise TrackingError(f"ClearML could not start a task ({type(e).__name__}: {reason}); "
                                "set clearml=offline to record locally or clearml=off") from None
        if parent:
            self.task.set_parent(parent)

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def logger(self):
        return self.task.get_logger()

    def connect(self, values: dict, name: str) -> None:
        self.task.connect(values, name=name)

    def upload(self, name: str, path: Path) -> None:
        self.task.upload_artifact(name, artifact_object=path, wait_on_upload=True)

    def flush(self) -> None:
        self.task.flush(wait_for_uploads=True)

    def close(self, outcome: TaskOutcome, reason: str = "") -> None:
        if outcome is TaskOutcome.FAILED:
            self.task.mark_failed(status_reason=reason[:500])
        elif outcome is TaskOutcome.STOPPED:
            self.task.mark_stopped(force=True, status_message=reason or "stopped")
        self.task.close()


def flat_sections(cfg: DictConfig) -> dict[str, dict]:
    """The trainer config as {section: {key: value}}, lists as strings, so every task has the same names."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {section: {k: json.dumps(v) if isinstance(v, list) else v for k, v in plain[section].items()}
            for section in CONFIG_SECTIONS}


class Tracking(Hooks):
    """The ClearML task of one training run, reported to as one of its hooks. It closes on exit
    with the outcome `end` gave it; without one, completed unless an exception or interrupt
    ended the run before its last stage (failed, or stopped)."""

    def __init__(self, cfg: DictConfig, num_stages: int, tags: Iterable[str] = ("train",),
                 params: dict | None = None, announce: bool = True,
                 objective: Callable[[TrainEvent], dict[str, float]] | None = None):
        """`params`: searched values, connected as their own section; `objective`: scalars a sweep
        derives from each event, reported under `objective/`."""
        self.cfg = cfg
        self.run = RunDir(cfg.util.run_dir)
        self.run_dir = self.run.path
        self.num_stages = num_stages
        self.finished = False
        self.outcome: TaskOutcome | None = None
        self.reason = ""
        self.objective = objective
        self.mode = clearml_mode(cfg.tracking.clearml)
        self.task = None
        if self.mode == "off":
            if announce:
                print(OFF_NOTE)
            return
        t = cfg.tracking
        name = cfg.util.experiment_name or self.run_dir.name
        self.task = RunTask(self.mode, t.project, name, [*tags, *t.tags], parent=t.parent_task)
        for section, values in flat_sections(cfg).items():
            self.task.connect(values, name=section)
        if params:  # a trial's searched values, under the names the search space gives them
            self.task.connect(dict(params), name="search")

    def __enter__(self) -> "Tracking":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.task is None:
            return False
        if exc_type is not None and issubclass(exc_type, Exception) and self.outcome is not TaskOutcome.FAILED:
            self.end(TaskOutcome.FAILED, f"{exc_type.__name__}: {exc}")
        # SystemExit or an interrupt before the last stage: a sweep's scheduler stopped the trial, or the user did.
        unfinished = TaskOutcome.COMPLETED if exc_type is None or self.finished else TaskOutcome.STOPPED
        self.task.close(self.outcome or unfinished, self.reason)
        return False

    def end(self, outcome: TaskOutcome, reason: str = "") -> None:
        """The outcome the task closes with on exit. A failure is reported and flushed at once: a
        sweep may end this process before the exit."""
        if (outcome, reason) == (self.outcome, self.reason):
            return
        self.outcome, self.reason = outcome, reason
        if self.task is not None and outcome is TaskOutcome.FAILED:
            self.task.logger.report_text(f"failed: {reason}")
            self.task.flush()

    def end_as(self, outcome: Outcome) -> None:
        """The outcome of the member that left the stage loop: failed (it diverged), completed
        (it trained every stage) or stopped (pruned)."""
        if isinstance(outcome, TrainingDiverged):
            self.end(TaskOutcome.FAILED, str(outcome))
        else:
            self.end(TaskOutcome.COMPLETED if outcome.finished else TaskOutcome.STOPPED)

    def replay(self, history: Path) -> None:
        """Report a run that trained without this task (a population member) from its history."""
        if self.task is None:
            return
        for _, record in read_history(history):
            self.report(TrainEvent.from_record(record))

    @property
    def task_id(self) -> str:
        return self.task.id if self.task is not None else ""

    def on_event(self, trainer, event: TrainEvent) -> bool:
        if self.task is not None:
            self.report(event)
        return False

    def report(self, event: TrainEvent) -> None:
        """Losses as `<loss>/level <l>`, sample quality as `quality/<metric>`, on the global iteration axis."""
        logger = self.task.logger
        for key, value in event.metrics.items():
            level, _, metric = key.rpartition("/")
            title, series = (metric, f"level {level}") if level else ("quality", key)
            logger.report_scalar(title, series, value, iteration=event.step)
        for series, value in (self.objective(event) if self.objective else {}).items():
            logger.report_scalar("objective", series, value, iteration=event.step)
        logger.report_scalar("progress", "iterations", event.step, iteration=event.step)
        if event.kind == EventKind.STAGE_END:
            logger.report_scalar("progress", "stages done", event.stages_done, iteration=event.step)
            if event.stages_done == self.num_stages:
                self.finished = True
                self.attach_results()
            # A sweep may end this process inside its next report, so nothing may wait for close().
            self.task.flush()

    def attach_results(self) -> None:
        """What the finished run's folder holds: config, history, samples and Rerun recordings."""
        for path in (self.run.config, self.run.history, self.run.samples, self.run.review,
                     *sorted(self.run_dir.glob("validation*.rrd"))):
            if path.exists():
                self.upload(path.name, path)

    def upload(self, name: str, path: Path) -> None:
        if self.task is not None:
            self.task.upload(name, path)

    def report_values(self, values: dict) -> None:
        """Single numbers (a retrain's final evaluation) shown in the task's summary table."""
        if self.task is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.task.logger.report_single_value(name, value)
