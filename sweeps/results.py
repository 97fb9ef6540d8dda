"""A sweep's results, read from its Optuna study: one row per configuration, ranked, and the summary.

The study is the one record of every configuration a sweep tried: its searched values, its state
(COMPLETE, PRUNED, FAIL, or RUNNING until told), and user attributes written by the trial that
trained it: `metrics` (its newest stage end's quality, `stages_done` and `step`), `failure` (why
it failed) and the Ray trial that trained it. Ranking, the exports, the summary files, the plots
and `ganimator-compare` all read it here.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ganimator.metrics import Quality

from .objective import Objective

TUNE_ID = "tune_trial_id"  # user attribute: the Ray trial that trained the configuration
BATCH = "batch"  # user attribute: that Ray trial's batch index
METRICS = "metrics"  # user attribute: the newest stage end's quality, stages_done and step
FAILURE = "failure"  # user attribute: why the configuration failed


class Status(Enum):
    FINISHED = "finished"  # trained every stage
    STOPPED = "stopped"  # stopped early at a stage end (pruned)
    FAILED = "failed"  # diverged, or its Ray trial ended with an error
    UNFINISHED = "unfinished"  # still running in the study: an interrupted sweep, for resume=true

    @property
    def failed(self) -> bool:
        return self is Status.FAILED


@dataclass
class TrialRow:
    trial_id: str  # '<Ray trial id>-<Optuna trial number>'
    params: dict
    status: Status
    stages_done: int
    steps: int  # training iterations the configuration ran, all stages together
    quality: Quality | None = None  # at its newest stage end
    reason: str = ""  # a failure's
    score: float | None = None
    pareto: bool = False
    rank: int = 0
    export: str = ""

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    @property
    def status_text(self) -> str:
        """As the summary shows it: 'finished', 'stopped after stage 2', 'failed: <why>'..."""
        return {Status.FINISHED: "finished", Status.STOPPED: f"stopped after stage {self.stages_done}",
                Status.FAILED: f"failed: {self.reason}", Status.UNFINISHED: "unfinished (resume=true continues it)",
                }[self.status]


def member_id(tune_id: str, number: int) -> str:
    return f"{tune_id}-{number}"


STATES = {TrialState.COMPLETE: Status.FINISHED, TrialState.PRUNED: Status.STOPPED, TrialState.FAIL: Status.FAILED,
          TrialState.RUNNING: Status.UNFINISHED, TrialState.WAITING: Status.UNFINISHED}


def row_of(t: FrozenTrial, space_keys, objective: Objective) -> TrialRow:
    metrics = dict(t.user_attrs.get(METRICS, {}))
    quality = Quality.of(metrics)
    tune_id = t.user_attrs.get(TUNE_ID, "")
    return TrialRow(member_id(tune_id, t.number) if tune_id else str(t.number), {k: t.params.get(k) for k in space_keys},
                    STATES[t.state], int(metrics.get("stages_done", 0)), int(metrics.get("step", 0)), quality,
                    str(t.user_attrs.get(FAILURE, "unknown"))[:300] if t.state == TrialState.FAIL else "",
                    objective.score(quality) if quality else None)


def study_rows(study: optuna.Study, space_keys, objective: Objective) -> list[TrialRow]:
    """Every configuration of the sweep, ranked."""
    return objective.rank([row_of(t, space_keys, objective) for t in study.get_trials(deepcopy=False)])


def last_line(error: BaseException) -> str:
    """The line of an error worth a summary: a Ray error's last, the original exception."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def close_orphans(study: optuna.Study, errors: dict[int, BaseException]) -> int:
    """FAIL the configurations still running in the Ray trials that errored past their retries
    (`errors`: batch index -> the error), so the study says what happened. Those of a sweep that
    was interrupted stay running, for `resume=true` to continue. Returns how many were closed."""
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get(BATCH) in errors]
    for t in orphans:
        error = last_line(errors[t.user_attrs[BATCH]])
        optuna.Trial(study, t._trial_id).set_user_attr(FAILURE, f"its Ray trial ended with an error: {error}"[:1000])
        study.tell(t.number, state=TrialState.FAIL)
    return len(orphans)


# ---- the summary --------------------------------------------------------------------------------

SUMMARY_METRICS = ("score", *Quality.NAMES)


def summary_table(rows: list[TrialRow], space_keys, objective: Objective) -> tuple[list[str], list[list]]:
    """Column names, and one line per trial: rank, status, metrics, searched values, export folder."""
    columns = ["rank", "trial_id", "status", "stages_done", "steps", *SUMMARY_METRICS, *space_keys, "export"]
    if objective.pareto:
        columns.insert(3, "pareto")
    return columns, [[cell(row, c) for c in columns] for row in rows]


def cell(row: TrialRow, column: str):
    if column in row.params:
        return row.params[column]
    if column == "status":
        return row.status_text
    if column == "score":
        return row.score if row.score is not None else ""
    if column in Quality.NAMES:
        return getattr(row.quality, column) if row.quality else ""
    return getattr(row, column)


def counts(rows: list[TrialRow]) -> dict[Status, int]:
    return {status: sum(r.status is status for r in rows) for status in Status}


def write_summary(rows: list[TrialRow], name: str, space_keys, objective: Objective, out_dir: Path) -> tuple[Path, Path]:
    """summary.csv and summary.md: every trial, ranked, with parameters, metrics and status."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns, table = summary_table(rows, space_keys, objective)
    csv_path = out_dir / "summary.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([columns, *table])
    n = counts(rows)
    lines = [f"# Sweep {name}", "",
             f"{len(rows)} trials: {n[Status.FINISHED]} finished, {n[Status.STOPPED]} stopped early, "
             f"{n[Status.FAILED]} failed" + (f", {n[Status.UNFINISHED]} unfinished" if n[Status.UNFINISHED] else "")
             + f". Objective: {objective.description} (see sweeps/objective.py).", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in table]
    md_path = out_dir / "summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
