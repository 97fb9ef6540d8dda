"""The sweep's comparison plots, as Plotly figures: ClearML shows them natively, and they are
written as HTML files that open offline (plotly.js sits once beside them).

- `objective vs <param>`: every scored trial's score against each searched value;
- `parallel coordinates`: all searched values and the score, one line per trial;
- `pareto front` (objective=pareto): coverage against global diversity, the front joined.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import plotly.graph_objects as go

from .objective import PARETO_METRICS

STATUS_COLORS = {"finished": "#1f77b4", "stopped": "#ff7f0e", "error": "#d62728"}


def _status(row) -> str:
    return row.status.split()[0].rstrip(":")


def comparison_figures(rows, log_keys: dict[str, bool], pareto: bool = False) -> dict[str, go.Figure]:
    """Figures named by what they show; `log_keys` maps each searched key to whether its scale is log."""
    scored = [r for r in rows if isinstance(r.metrics.get("score"), float) and math.isfinite(r.metrics["score"])]
    figures = {}
    for key, log in log_keys.items():
        fig = go.Figure()
        for status, color in STATUS_COLORS.items():
            group = [r for r in scored if _status(r) == status]
            if group:
                fig.add_scatter(x=[r.params.get(key) for r in group], y=[r.metrics["score"] for r in group],
                                mode="markers", name=status, marker={"color": color, "size": 9},
                                text=[f"#{r.rank} {r.trial_id} ({r.status})" for r in group])
        fig.update_layout(title=f"score vs {key}", xaxis_title=key, yaxis_title="score")
        if log:
            fig.update_xaxes(type="log")
        figures[f"objective vs {key}"] = fig
    figures["parallel coordinates"] = _parallel(scored, list(log_keys))
    if pareto:
        figures["pareto front"] = _pareto(rows)
    return figures


def _parallel(rows, keys: list[str]) -> go.Figure:
    dims = []
    for key in keys:
        values = [r.params.get(key) for r in rows]
        if all(isinstance(v, (int, float)) for v in values):
            dims.append({"label": key, "values": values})
        else:  # categorical: one tick per choice
            choices = sorted({str(v) for v in values})
            dims.append({"label": key, "values": [choices.index(str(v)) for v in values],
                         "tickvals": list(range(len(choices))), "ticktext": choices})
    scores = [r.metrics["score"] for r in rows]
    dims.append({"label": "score", "values": scores})
    fig = go.Figure(go.Parcoords(dimensions=dims, line={"color": scores, "colorscale": "Viridis", "showscale": True}))
    fig.update_layout(title="searched values and score, one line per trial")
    return fig


def _pareto(rows) -> go.Figure:
    x, y = PARETO_METRICS
    finished = [r for r in rows if r.finished]
    front = sorted((r for r in finished if r.pareto), key=lambda r: r.metrics[x])
    rest = [r for r in finished if not r.pareto]
    fig = go.Figure()
    fig.add_scatter(x=[r.metrics[x] for r in rest], y=[r.metrics[y] for r in rest], mode="markers",
                    name="dominated", marker={"color": "#999999", "size": 9}, text=[r.trial_id for r in rest])
    fig.add_scatter(x=[r.metrics[x] for r in front], y=[r.metrics[y] for r in front], mode="lines+markers",
                    name="Pareto front", marker={"color": "#d62728", "size": 11}, text=[r.trial_id for r in front])
    fig.update_layout(title="Pareto front of finished trials", xaxis_title=x, yaxis_title=y)
    return fig


def write_figures(figures: dict[str, go.Figure], out_dir: Path) -> list[Path]:
    """One HTML file per figure, sharing a single plotly.min.js in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = out_dir / (re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") + ".html")
        fig.write_html(path, include_plotlyjs="directory")
        paths.append(path)
    return paths
