"""The sweep's comparison plots, drawn by `optuna.visualization` from the study, as Plotly figures:
ClearML shows them natively, and they are written as HTML files that open offline (plotly.js sits
once beside them).

- `score vs parameters`: every finished configuration's score against each searched value;
- `parallel coordinates`: all searched values and the score, one line per configuration;
- `importances`: how much each searched value decided the objective (Optuna's default importance evaluator);
- `pareto front` (objective=pareto): coverage, global diversity and naturalness, the front marked;
- `rung correlation`: each finished configuration's score at every earlier stage end against its
  final score, with Spearman's rho: whether stopping at that stage is safe.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
import optuna.visualization as vis
import plotly.graph_objects as go
from optuna.trial import TrialState

from .objective import Objective
from .results import METRICS, TrialRow, finished_stage_scores, rung_correlations, study_rows


def _score(trial: optuna.trial.FrozenTrial) -> float:
    return trial.user_attrs[METRICS]["score"]


def comparison_figures(study: optuna.Study, objective: Objective) -> dict[str, go.Figure]:
    """Figures named by what they show; none before a configuration has finished."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}
    # In Pareto mode the score is no study value: the slices and lines show it from the trial's record.
    target = {"target": _score, "target_name": "score"} if objective.pareto else {"target_name": "score"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # "too few trials: importances equal" says the plot itself
        figures = {"score vs parameters": vis.plot_slice(study, **target),
                   "parallel coordinates": vis.plot_parallel_coordinate(study, **target),
                   "importances": vis.plot_param_importances(study)}
        if objective.pareto:
            figures["pareto front"] = vis.plot_pareto_front(study)
    rungs = rung_figure(study_rows(study, [], objective))
    if rungs is not None:
        figures["rung correlation"] = rungs
    return figures


def rung_figure(rows: list[TrialRow]) -> go.Figure | None:
    """Earlier stage ends' scores against the final one, a trace per stage (None before three
    configurations have finished)."""
    stages = max((len(r.stage_scores) for r in rows), default=0)
    done = finished_stage_scores(rows, stages)
    correlations = rung_correlations(rows, stages)
    if len(done) < 3 or not correlations:
        return None
    fig = go.Figure()
    for c in correlations:
        fig.add_scatter(x=[s[c.stage - 1] for s in done], y=[s[-1] for s in done], mode="markers",
                        name=f"stage {c.stage} (rho {c.rho:.2f})")
    fig.update_layout(title="Does an early score predict the final one?", xaxis_title="score at the stage end",
                      yaxis_title=f"final score (stage {stages})")
    return fig


def rows_study(rows: list[TrialRow], distributions: dict, objective: Objective) -> optuna.Study:
    """An in-memory study of the finished rows (read from ClearML, say), for the same plots."""
    study = objective.new_study()
    for row in rows:
        if row.finished and row.quality is not None:
            study.add_trial(optuna.trial.create_trial(
                params=row.params, distributions=distributions, values=objective.values(row.quality),
                user_attrs={METRICS: {**row.quality.as_dict(), "score": row.score}}))
    return study


def write_figures(figures: dict[str, go.Figure], out_dir: Path) -> list[Path]:
    """One HTML file per figure, sharing a single plotly.min.js in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = out_dir / (re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") + ".html")
        fig.write_html(path, include_plotlyjs="directory")
        paths.append(path)
    return paths
