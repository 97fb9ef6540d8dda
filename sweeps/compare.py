"""Rank a sweep's trials and write its comparison plots, from the local results or from ClearML.

    python sweeps/compare.py NAME [--results-dir results] [--out DIR] [--source auto|local|clearml]

`local` reads the Tune results in `results_dir/NAME`; `clearml` reads the trial tasks under the
sweep's task on the ClearML server; `auto` (the default) prints the local ranking when the
results are here, and ClearML's as well when a server is configured. The plots (score against
each searched value, parallel coordinates, the Pareto front in Pareto mode) are written as HTML
to `--out` (default `export_dir/NAME/plots`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna

from ganimator.cli import USER_ERRORS
from ganimator.config import ConfigError, stage_levels
from ganimator.dataset import MotionDataset
from ganimator.tracking import clearml_mode
from sweeps.config import ARGS, STUDY_DB, SweepConfig, load_sweep_config
from sweeps.export import TrialRow, rank, rank_trials, summary_table
from sweeps.plots import comparison_figures, write_figures
from sweeps.population import study_rows
from sweeps import trust
from sweeps.space import load_space

SHOWN = ("rank", "trial_id", "status", "pareto", "score", "coverage", "global_diversity", "local_diversity",
         "rec_error")


def local_rows(sweep_dir: Path, cfg, space, num_stages: int, pareto: bool) -> list[TrialRow]:
    """From the Tune results, or for a population sweep from its Optuna study, which holds each member."""
    if cfg.population > 1:
        storage = cfg.optuna_storage or f"sqlite:///{sweep_dir / STUDY_DB}"
        return study_rows(optuna.load_study(study_name=cfg.name, storage=storage), list(space), pareto)
    from ray.tune import ExperimentAnalysis, ResultGrid

    trust.verify(str(sweep_dir), trial_errors=True)  # the result grid unpickles Tune's state and errors
    return rank_trials(ResultGrid(ExperimentAnalysis(str(sweep_dir))), list(space), num_stages, pareto)


def clearml_rows(project: str, name: str, space, num_stages: int, pareto: bool) -> list[TrialRow]:
    """The trials of the newest sweep task called NAME on the ClearML server."""
    from clearml import Task

    sweeps = Task.get_tasks(project_name=project, task_name=f"^{name}$", tags=["__$all", "sweep", name],
                            task_filter={"order_by": ["-last_update"]})
    if not sweeps:
        raise ConfigError(f"no sweep task {name!r} in ClearML project {project!r}")
    trials = Task.get_tasks(project_name=project, tags=["__$all", "trial", name],
                            task_filter={"parent": sweeps[0].id})
    rows = [row_from_task(t.name, t.get_parameters(), t.get_last_scalar_metrics(), t.get_status(), list(space),
                          num_stages) for t in trials]
    return rank(rows, pareto)


def row_from_task(task_name: str, parameters: dict, scalars: dict, status: str, space_keys, num_stages: int
                  ) -> TrialRow:
    """A trial as its ClearML task holds it: `search/<key>` parameters (as text), last scalars
    ({title: {series: {'last': value}}}) and the task's status."""
    last = {title: {series: v["last"] for series, v in values.items()} for title, values in scalars.items()}
    params = {k: _number(parameters.get(f"search/{k}")) for k in space_keys}
    done = int(last.get("progress", {}).get("stages done", 0))
    metrics = {**last.get("quality", {}), **last.get("objective", {}), "stages_done": done}
    if last.get("rec_error"):  # the newest level reported is the one the trial was scored on
        metrics["rec_error"] = last["rec_error"][max(last["rec_error"], key=lambda s: int(s.split()[-1]))]
    steps = int(last.get("progress", {}).get("iterations", 0))
    state = ("finished" if done == num_stages else f"error: task {status}" if status == "failed"
             else f"stopped after stage {done}")
    return TrialRow(task_name.rpartition("/")[2], params, metrics, state, done, steps)


def _number(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def print_ranking(rows: list[TrialRow], space_keys, pareto: bool, source: str) -> None:
    columns, table = summary_table(rows, space_keys, pareto)
    keep = [i for i, c in enumerate(columns) if c in SHOWN or c in space_keys]
    lines = [[columns[i] for i in keep]] + [[_text(line[i]) for i in keep] for line in table]
    widths = [max(len(line[k]) for line in lines) for k in range(len(keep))]
    print(f"{len(rows)} trials, from {source}")
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def _text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Rank a sweep's trials and write its comparison plots.")
    p.add_argument("name", help="the sweep's name (its folder under results_dir)")
    p.add_argument("--results-dir", default=SweepConfig.results_dir)
    p.add_argument("--out", help="folder for the plots (default: export_dir/NAME/plots)")
    p.add_argument("--source", choices=["auto", "local", "clearml"], default="auto")
    args = p.parse_args(argv)

    sweep_dir = Path(args.results_dir) / args.name
    if not (sweep_dir / ARGS).is_file():
        raise ConfigError(f"{sweep_dir} holds no sweep (no {ARGS}); check the name and --results-dir")
    cfg, overrides, base = load_sweep_config(json.loads(trust.read(str(sweep_dir), ARGS)))
    space = load_space(cfg.space, overrides)
    levels = MotionDataset.load(base.data.npz_filename).num_levels
    num_stages, pareto = len(stage_levels(base.model, levels, base.data.npz_filename)), cfg.objective == "pareto"
    online = clearml_mode(base.tracking.clearml) == "on"
    if args.source == "clearml" and not online:
        raise ConfigError("--source clearml needs a ClearML server: configure clearml.conf or CLEARML_API_HOST")

    rows = None
    if args.source in ("auto", "local"):
        rows = local_rows(sweep_dir.resolve(), cfg, space, num_stages, pareto)
        print_ranking(rows, list(space), pareto, f"the local results in {sweep_dir}")
    if args.source == "clearml" or (args.source == "auto" and online):
        remote = clearml_rows(base.tracking.project, cfg.name, space, num_stages, pareto)
        print_ranking(remote, list(space), pareto, f"ClearML project {base.tracking.project!r}")
        rows = rows or remote
    out = Path(args.out) if args.out else Path(cfg.export_dir) / cfg.name / "plots"
    paths = write_figures(comparison_figures(rows, space.log_scales(), pareto), out)
    print(f"{len(paths)} plots written to {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except USER_ERRORS as e:  # the trainer's commands' rule: bad input is one line
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
