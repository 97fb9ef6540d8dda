"""The sweep's comparison plots, drawn by `optuna.visualization` from the study, as Plotly figures:
ClearML shows them natively, and they are written as HTML files that open offline (plotly.js sits
once beside them), with a PNG copy of each for summary.md (kaleido draws them in Chrome or Chromium;
without either, the HTML alone).

Optuna's figures are made readable first: its colour scales start at white, where the first trial
(the defaults, often the best) would vanish; its slice plot puts every searched value in one row,
too wide to read; parallel coordinates cut axis names to 20 characters.

- `score vs parameters`: every finished configuration's score against each searched value;
- `parallel coordinates`: all searched values and the score, one line per configuration;
- `importances`: how much each searched value decided the objective (Optuna's default importance evaluator);
- `pareto front` (objective=pareto): coverage, global diversity and naturalness, the front marked;
- `rung correlation`: each finished configuration's score at every earlier stage end against its
  final score, with Spearman's rho: whether stopping at that stage is safe.
"""
from __future__ import annotations

import math
import re
import sys
import warnings
from pathlib import Path

import optuna
import optuna.visualization as vis
import plotly.colors
import plotly.graph_objects as go
import plotly.io as pio
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from .objective import Objective
from .results import METRICS, TrialRow, finished_stage_scores, rung_correlations, study_rows


def _score(trial: optuna.trial.FrozenTrial) -> float:
    return trial.user_attrs[METRICS]["score"]


def comparison_figures(study: optuna.Study, objective: Objective) -> dict[str, go.Figure]:
    """Figures named by what they show; none before a configuration has finished."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}
    target = {"target": objective.target(_score), "target_name": "score"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # "too few trials: importances equal" says the plot itself
        figures = {"score vs parameters": slice_grid(vis.plot_slice(study, **target)),
                   "parallel coordinates": readable_lines(vis.plot_parallel_coordinate(study, **target), study),
                   "importances": vis.plot_param_importances(study)}
        figures.update(objective.figures(study))
    rungs = rung_figure(study_rows(study, [], objective))
    if rungs is not None:
        figures["rung correlation"] = rungs
    for fig in figures.values():  # the browser window sets the size, not Optuna's fixed widths
        fig.update_layout(width=None, autosize=True, margin={"l": 60, "r": 40, "t": 80, "b": 60})
    return figures


COLUMNS, PANEL = 4, 300  # the slice grid: searched values a row, pixels a panel
BEST = "#d62728"  # the best configuration, in every plot


def _scale(values: list[float]) -> list[str]:
    """Viridis up to its green: every colour dark enough to see on white (its yellow end is not)."""
    lo, hi = min(values), max(values)
    return plotly.colors.sample_colorscale("Viridis", [0.8 * (v - lo) / ((hi - lo) or 1) for v in values])


def slice_grid(fig: go.Figure) -> go.Figure:
    """Optuna's slice plot (a panel per searched value, in one row) as a grid of COLUMNS panels a
    row, points coloured by trial number on a visible scale, the best score a red star."""
    panels = [t for t in fig.data if t.type == "scatter" and t.x is not None]
    if not panels:
        return fig
    rows = math.ceil(len(panels) / COLUMNS)
    grid = make_subplots(rows=rows, cols=min(COLUMNS, len(panels)), shared_yaxes=True,
                         vertical_spacing=0.5 / rows, horizontal_spacing=0.04)
    axes = [fig.layout[k] for k in sorted((k for k in fig.layout if k.startswith("xaxis")),
                                          key=lambda k: int(k[5:] or 1))]
    best = max(y for t in panels for y in t.y)  # the score, higher is better (also in Pareto mode)
    for k, (trace, axis) in enumerate(zip(panels, axes)):
        row, col = divmod(k, COLUMNS)
        trials = list(trace.marker.color) if trace.marker.color is not None else list(range(len(trace.x)))
        top = [i for i, y in enumerate(trace.y) if y == best]
        grid.add_scatter(x=trace.x, y=trace.y, mode="markers", showlegend=False, hovertemplate=trace.hovertemplate,
                         customdata=trace.customdata, row=row + 1, col=col + 1,
                         marker={"color": _scale(trials), "size": 9, "line": {"color": "#333", "width": 0.5}})
        grid.add_scatter(x=[trace.x[i] for i in top], y=[trace.y[i] for i in top], mode="markers", row=row + 1,
                         col=col + 1, name="best", showlegend=k == 0, hoverinfo="skip",
                         marker={"color": BEST, "size": 16, "symbol": "star", "line": {"color": "black", "width": 1}})
        grid.update_xaxes(title_text=axis.title.text, type=axis.type, row=row + 1, col=col + 1)
    grid.update_yaxes(title_text=fig.layout.yaxis.title.text, col=1)
    grid.update_layout(title=f"{fig.layout.title.text} (colour: trial number, darker first)",
                       height=PANEL * rows + 120, plot_bgcolor="white")
    grid.update_xaxes(showgrid=True, gridcolor="#eee")
    grid.update_yaxes(showgrid=True, gridcolor="#eee")
    return grid


def readable_lines(fig: go.Figure, study: optuna.Study) -> go.Figure:
    """Optuna's parallel coordinates with each line on a visible colour scale, the best line thick
    and red on top, and every axis named in full (Optuna cuts names at 20 characters)."""
    lines = [t for t in fig.data if t.mode == "lines" and t.customdata is not None]
    if not lines:
        return fig
    values = [float(t.customdata[0][1]) for t in lines]
    for trace, colour, value in zip(lines, _scale(values), values):
        trace.update(line={"color": colour, "width": 2}, opacity=0.9)
        if value == max(values):
            trace.update(line={"color": BEST, "width": 4}, opacity=1.0, name="best", showlegend=True)
    fig.data = [t for t in fig.data if t.name != "best"] + [t for t in fig.data if t.name == "best"]  # on top
    for trace in fig.data:  # the colour bar's scale, as the lines are drawn
        if trace.mode == "markers" and trace.marker.showscale:
            steps = [k / 8 for k in range(9)]
            trace.marker.update(colorscale=list(map(list, zip(steps, _scale(steps)))), reversescale=False)
    names = sorted({p for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) for p in t.params})
    ticks = list(fig.layout.xaxis.ticktext)
    if len(ticks) == 1 + len(names):
        fig.update_xaxes(ticktext=[ticks[0], *names], tickangle=-30)
    return fig


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


def write_figures(figures: dict[str, go.Figure], out_dir: Path, pngs: bool = True) -> list[Path]:
    """One HTML file per figure, sharing a single plotly.min.js in `out_dir`, and a PNG copy of each
    where kaleido finds Chrome or Chromium (a note on stderr where it does not). Returns the HTML files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = out_dir / (re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") + ".html")
        fig.write_html(path, include_plotlyjs="directory")
        paths.append(path)
    if figures and pngs:
        try:  # one browser for all of them: a start takes seconds
            pio.write_images(list(figures.values()), [p.with_suffix(".png") for p in paths], width=PNG_WIDTH,
                             height=[f.layout.height or 560 for f in figures.values()])
        except Exception as e:  # no browser, or one that fails: the HTML plots stand alone
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"note: no PNG copies of the plots ({type(e).__name__}{': ' + detail if detail else ''}); "
                  "kaleido draws them in Chrome or Chromium (Debian: apt-get install chromium)", file=sys.stderr)
    return paths


PNG_WIDTH = 1200  # fits a laptop's window and a markdown viewer's column at full size


def embed_pictures(md_path: Path, html_paths: list[Path]) -> None:
    """summary.md ends with the plots' PNG copies, so that wherever markdown is read it shows them."""
    pictures = [p.with_suffix(".png") for p in html_paths if p.with_suffix(".png").is_file()]
    if not pictures:
        return
    lines = ["", "## Plots", "", "Each links to its interactive HTML version.", ""]
    for png in pictures:
        rel = png.relative_to(md_path.parent) if png.is_relative_to(md_path.parent) else png
        title = png.stem.replace("-", " ")
        lines += [f"### {title}", "", f"[![{title}]({rel.as_posix()})]({rel.with_suffix('.html').as_posix()})", ""]
    with open(md_path, "a") as f:
        f.write("\n".join(lines))
