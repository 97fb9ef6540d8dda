"""A sweep's results, read from its Optuna study: one row per configuration, ranked, and the summary.

The study is the one record of every configuration a sweep tried: its searched values, its state
(COMPLETE, PRUNED, FAIL, or RUNNING until told), and user attributes written by the trial that
trained it: `metrics` (its newest stage end's quality, `stages_done` and `step`), `failure` (why
it failed), the Ray trial that asked it, its batch and its newest stage checkpoint (what
resume continues it from). Ranking, the exports, the summary files, the plots
and `ganimator-compare` all read it here.
"""
from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import optuna
import scipy.stats
from optuna.trial import FrozenTrial, TrialState

from ganimator.metrics import Quality

from .objective import Objective
from .paths import SweepPaths
from .search import adopt

TUNE_ID = "tune_trial_id"  # user attribute: the Ray trial that asked the configuration (its name)
BATCH = "batch"  # user attribute: the batch index of the Ray trials that train it
CHECKPOINT = "checkpoint"  # user attribute: {"path": its newest stage checkpoint in the sweep folder, "stages_done"}
METRICS = "metrics"  # user attribute: the newest stage end's quality, stages_done and step
FAILURE = "failure"  # user attribute: why the configuration failed
STAGE_SCORES = "stage_scores"  # user attribute: the score at each stage end, in order
EXPORTED = "exported"  # study attribute: where the finished sweep exported and summarised its results


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
    stage_scores: list[float] = field(default_factory=list)  # at each stage end it reached
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
                    objective.score(quality) if quality else None, list(t.user_attrs.get(STAGE_SCORES, [])))


def study_rows(study: optuna.Study, space_keys, objective: Objective) -> list[TrialRow]:
    """Every configuration of the sweep, ranked."""
    return objective.rank([row_of(t, space_keys, objective) for t in study.get_trials(deepcopy=False)])


def last_line(error: BaseException) -> str:
    """The line of an error worth a summary: a Ray error's last, the original exception."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def close_orphans(study: optuna.Study, backend: optuna.storages.BaseStorage, errors: dict[int, BaseException]) -> int:
    """FAIL the configurations still running in the Ray trials that errored past their retries
    (`errors`: batch index -> the error), so the study says what happened. Those of a sweep that
    was interrupted stay running, for `resume=true` to continue. Returns how many were closed."""
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get(BATCH) in errors]
    for t, trial in zip(orphans, adopt(study, backend, [t.number for t in orphans])):
        error = last_line(errors[t.user_attrs[BATCH]])
        trial.set_user_attr(FAILURE, f"its Ray trial ended with an error: {error}"[:1000])
        study.tell(t.number, state=TrialState.FAIL)
    return len(orphans)


def unfinished_batches(study: optuna.Study, batches: list[dict]) -> list[int]:
    """The batches (trainable.batches) that resume trains: those with a configuration still
    running or not yet asked. The others are done, whatever Tune's record says."""
    asked: dict[int, int] = {}
    running = set()
    for t in study.get_trials(deepcopy=False):
        if (batch := t.user_attrs.get(BATCH)) is not None:
            asked[batch] = asked.get(batch, 0) + 1
            if t.state == TrialState.RUNNING:
                running.add(batch)
    return [b["index"] for b in batches if b["index"] in running or asked.get(b["index"], 0) < b["members"]]


# ---- the summary --------------------------------------------------------------------------------

SUMMARY_METRICS = ("score", *Quality.NAMES)


def summary_table(rows: list[TrialRow], space_keys, objective: Objective) -> tuple[list[str], list[list]]:
    """Column names, and one line per trial: rank, status, metrics, searched values, export folder."""
    columns = ["rank", "trial_id", "status", "stages_done", "steps", *SUMMARY_METRICS, *space_keys, "export"]
    columns[3:3] = objective.columns
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


# ---- what the sweep learned ----------------------------------------------------------------------

@dataclass(frozen=True)
class RungCorrelation:
    """How well a stage end's score ranks configurations as their final score does (Spearman)."""

    stage: int  # 1-based: the stage end whose score is compared with the last one's
    rho: float  # nan with fewer than 3 configurations or no spread
    pvalue: float
    configurations: int


def spearman(x: list[float], y: list[float]) -> tuple[float, float]:
    """Spearman's rank correlation and its p-value; nan below 3 pairs or without spread."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    result = scipy.stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def finished_stage_scores(rows: list[TrialRow], num_stages: int) -> list[list[float]]:
    """The stage-end scores of every configuration that finished all `num_stages`, all finite."""
    return [r.stage_scores for r in rows if r.finished and len(r.stage_scores) == num_stages
            and all(math.isfinite(v) for v in r.stage_scores)]


def rung_correlations(rows: list[TrialRow], num_stages: int) -> list[RungCorrelation]:
    """For each stage before the last: does its score rank the finished configurations as their
    final score does? Early stopping trusts it. Configurations stopped early have no final score,
    so under early stopping this reads the survivors only; benchmarks/sweep_value.py measures it
    on a sweep that stops none."""
    done = finished_stage_scores(rows, num_stages)
    out = []
    for stage in range(1, num_stages):
        rho, p = spearman([s[stage - 1] for s in done], [s[-1] for s in done])
        out.append(RungCorrelation(stage, rho, p, len(done)))
    return out


def importances(study: optuna.Study, objective: Objective) -> dict[str, float]:
    """How much each searched value decided the score over the finished configurations, largest
    first, by Optuna's default evaluator (PED-ANOVA in Optuna 5: deterministic, and no scikit-learn
    as fANOVA needs); empty until two have finished with different values."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(finished) < 2 or not any(len({str(t.params.get(k)) for t in finished}) > 1 for k in finished[0].params):
        return {}
    target = objective.target(lambda t: t.user_attrs[METRICS]["score"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return dict(optuna.importance.get_param_importances(study, target=target))


def learned_lines(rung: list[RungCorrelation], weights: dict[str, float]) -> list[str]:
    """The summary's 'what the sweep learned': importances and the rung-correlation check."""
    lines = ["## What the sweep learned", ""]
    if weights:
        lines += ["Importance of each searched value for the score (Optuna's default evaluator over the finished "
                  "configurations; they sum to 1, and are rough below a few dozen):", "",
                  "| parameter | importance |", "| --- | --- |", *(f"| {k} | {v:.3f} |" for k, v in weights.items()), ""]
    else:
        lines += ["Importances need at least two finished configurations with different values.", ""]
    shown = [c for c in rung if math.isfinite(c.rho)]
    if shown:
        lines += ["Does an early stage's score rank configurations as the final score does? Spearman's rho over "
                  f"the {shown[0].configurations} configurations that finished (1: the same order; early stopping "
                  "at a stage is only as good as its rho; configurations stopped early are not counted):", "",
                  "| stage end | rho | p-value |", "| --- | --- | --- |",
                  *(f"| {c.stage} | {c.rho:.2f} | {c.pvalue:.2g} |" for c in shown), ""]
    else:
        lines += ["The rung-correlation check needs at least three configurations that finished every stage.", ""]
    return lines


def counts(rows: list[TrialRow]) -> dict[Status, int]:
    return {status: sum(r.status is status for r in rows) for status in Status}


def write_summary(rows: list[TrialRow], paths: SweepPaths, space_keys, objective: Objective,
                  learned: list[str] = ()) -> tuple[Path, Path]:
    """summary.csv and summary.md: every trial, ranked, with parameters, metrics and status, then
    `learned` (learned_lines)."""
    paths.exports.mkdir(parents=True, exist_ok=True)
    columns, table = summary_table(rows, space_keys, objective)
    csv_path = paths.summary_csv
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([columns, *table])
    n = counts(rows)
    lines = [f"# Sweep {paths.name}", "",
             f"{len(rows)} trials: {n[Status.FINISHED]} finished, {n[Status.STOPPED]} stopped early, "
             f"{n[Status.FAILED]} failed" + (f", {n[Status.UNFINISHED]} unfinished" if n[Status.UNFINISHED] else "")
             + f". Objective: {objective.description} (see sweeps/objective.py).", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in table]
    lines += ["", *learned] if learned else []
    md_path = paths.summary_md
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
