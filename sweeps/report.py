"""The sweep as a ClearML task, parent of every trial's and retrain's task.

It holds the sweep's settings and search space, and at the end the comparison: a table of
every trial (searched values, metrics, status, the stage an early stop came at) and the plots of
sweeps/plots.py (score against each searched value, parallel coordinates, importances, and in
Pareto mode the front). When a
retrain ran with several seeds, the exported seed's task is tagged `best` here (a server is
needed for that: an offline session cannot be changed after it closed).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from ganimator.tracking import OFF_NOTE, RunTask, TaskOutcome, clearml_mode, offline_dir

from .config import hide_password
from .export import Export
from .objective import Objective
from .results import Status, TrialRow, counts, summary_table

TASK_ID = "clearml-task-id"  # in the sweep folder, so a resumed sweep continues its task on a server


class SweepTask:
    """The sweep's ClearML task (a `RunTask`, or none when ClearML is off)."""

    def __init__(self, cfg, base, space, sweep_dir: Path | None):
        """`sweep_dir`: the local sweep folder, where a resumed sweep finds its task id (None: remote storage)."""
        self.mode = clearml_mode(base.tracking.clearml)
        self.task = None
        if self.mode == "off":
            print(OFF_NOTE)
            return
        id_file = sweep_dir / TASK_ID if sweep_dir else None
        resumable = cfg.resume and self.mode == "on" and id_file is not None and id_file.is_file()
        resume_id = id_file.read_text().strip() if resumable else ""
        self.task = RunTask(self.mode, base.tracking.project, cfg.name, ["sweep", cfg.name, *base.tracking.tags],
                            task_type="optimizer", continue_task=resume_id)
        settings = {**OmegaConf.to_container(cfg, resolve=True), "optuna_storage": hide_password(cfg.optuna_storage)}
        self.task.connect({k: json.dumps(v) if isinstance(v, list) else v for k, v in settings.items()}, "sweep")
        self.task.connect({key: repr(p.distribution) for key, p in space.items()}, "space")
        if id_file:
            id_file.write_text(self.task.id + "\n")
        where = f", sessions in {offline_dir()}" if self.mode == "offline" else ""
        print(f"ClearML: sweep task {self.task.id} in project {base.tracking.project!r}{where}")

    def trial_overrides(self) -> list[str]:
        """What every trial and retrain needs to become a child task (or to stay quiet when off)."""
        return ["clearml=off"] if self.task is None else [f"clearml={self.mode}", f"parent_task={self.task.id}"]

    def report(self, rows: list[TrialRow], exports: list[Export], space_keys, objective: Objective, figures: dict,
               files: list[Path]) -> None:
        if self.task is None:
            return
        logger = self.task.logger
        columns, table = summary_table(rows, space_keys, objective)
        logger.report_table("trials", "ranked", table_plot=[columns, *[[_plain(v) for v in line] for line in table]])
        for name, fig in figures.items():
            logger.report_plotly(name, name, figure=fig.to_dict())
        logger.report_single_value("trials", len(rows))
        logger.report_single_value("stopped early", counts(rows)[Status.STOPPED])
        if exports:
            logger.report_single_value("best score", exports[0].metrics["score"])
        for path in files:
            self.task.upload(path.name, path)
        if self.mode == "on":
            self._tag_best(exports)

    def _tag_best(self, exports: list[Export]) -> None:
        from clearml import Task

        for export in exports:
            if len(export.metrics["seeds"]) > 1 and export.metrics["clearml_task"]:
                Task.get_task(task_id=export.metrics["clearml_task"]).add_tags(["best"])

    def __enter__(self) -> "SweepTask":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.task is not None:  # an interrupted sweep too is failed: its comparison was never reported
            if exc_type is None:
                self.task.close(TaskOutcome.COMPLETED)
            else:
                self.task.close(TaskOutcome.FAILED, f"{exc_type.__name__}: {exc}")
        return False


def _plain(value):
    """Table cells ClearML can serialise: numbers rounded for reading, everything else as text."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value if isinstance(value, (int, str)) else str(value)
