"""Rank a sweep's trials and write its comparison plots, from its Optuna study or from ClearML.

    ganimator-compare NAME [--results-dir results] [--out DIR] [--source auto|local|clearml]
    python sweeps/compare.py NAME ...

`local` reads the sweep's Optuna study (in `results_dir/NAME`, or the database it was given);
`clearml` reads the trial tasks under the sweep's task on the ClearML server; `auto` (the default)
prints the local ranking, and ClearML's as well when a server is configured. The plots (score
against each searched value, parallel coordinates, importances, the Pareto front in Pareto mode)
are written as HTML to `--out` (default `export_dir/NAME/plots`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna

from ganimator.config import ConfigError, stage_levels
from ganimator.dataset import MotionDataset
from ganimator.errors import run_command
from ganimator.metrics import Quality
from ganimator.tracking import clearml_mode
from sweeps.config import SweepConfig, load_sweep_config
from sweeps.objective import Objective
from sweeps.paths import ARGS, SweepPaths, saved_args
from sweeps.plots import comparison_figures, rows_study, write_figures
from sweeps.results import Status, TrialRow, study_rows, summary_table
from sweeps.space import load_space

SHOWN = ("rank", "trial_id", "status", "pareto", *("score", *Quality.NAMES))


def local_study(paths: SweepPaths) -> optuna.Study:
    return optuna.load_study(study_name=paths.name, storage=paths.storage)


def clearml_rows(project: str, name: str, space, num_stages: int, objective: Objective) -> list[TrialRow]:
    """The trials of the newest sweep task called NAME on the ClearML server."""
    from clearml import Task

    sweeps = Task.get_tasks(project_name=project, task_name=f"^{name}$", tags=["__$all", "sweep", name],
                            task_filter={"order_by": ["-last_update"]})
    if not sweeps:
        raise ConfigError(f"no sweep task {name!r} in ClearML project {project!r}")
    trials = Task.get_tasks(project_name=project, tags=["__$all", "trial", name],
                            task_filter={"parent": sweeps[0].id})
    rows = [row_from_task(t.name, t.get_parameters(), t.get_last_scalar_metrics(), t.get_status(), list(space),
                          num_stages, objective) for t in trials]
    return objective.rank(rows)


def row_from_task(task_name: str, parameters: dict, scalars: dict, status: str, space_keys, num_stages: int,
                  objective: Objective) -> TrialRow:
    """A trial as its ClearML task holds it: `search/<key>` parameters (as text), last scalars
    ({title: {series: {'last': value}}}) and the task's status."""
    last = {title: {series: v["last"] for series, v in values.items()} for title, values in scalars.items()}
    params = {k: _number(parameters.get(f"search/{k}")) for k in space_keys}
    done = int(last.get("progress", {}).get("stages done", 0))
    steps = int(last.get("progress", {}).get("iterations", 0))
    values = dict(last.get("quality", {}))
    if last.get("rec_error"):  # the newest level reported is the one the trial was scored on
        values["rec_error"] = last["rec_error"][max(last["rec_error"], key=lambda s: int(s.split()[-1]))]
    quality = Quality.of(values)
    state = (Status.FINISHED if done == num_stages else Status.FAILED if status == "failed" else Status.STOPPED)
    return TrialRow(task_name.rpartition("/")[2], params, state, done, steps, quality,
                    f"task {status}" if state is Status.FAILED else "",
                    objective.score(quality) if quality else None)


def _number(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def print_ranking(rows: list[TrialRow], space_keys, objective: Objective, source: str) -> None:
    columns, table = summary_table(rows, space_keys, objective)
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
    saved = SweepPaths.of(SweepConfig(name=args.name, results_dir=args.results_dir)).args
    if not saved.is_file():
        raise ConfigError(f"{sweep_dir} holds no sweep (no {ARGS}); check the name and --results-dir")
    cfg, overrides, base = load_sweep_config(saved_args(saved))
    cfg.results_dir = args.results_dir  # where the sweep is now
    paths = SweepPaths.of(cfg)
    space = load_space(cfg.space, overrides)
    objective = Objective.named(cfg.objective, cfg.rec_weight)
    online = clearml_mode(base.tracking.clearml) == "on"
    if args.source == "clearml" and not online:
        raise ConfigError("--source clearml needs a ClearML server: configure clearml.conf or CLEARML_API_HOST")

    study = None
    if args.source in ("auto", "local"):
        study = local_study(paths)
        print_ranking(study_rows(study, list(space), objective), list(space), objective,
                      f"the sweep's study in {sweep_dir}")
    if args.source == "clearml" or (args.source == "auto" and online):
        levels = MotionDataset.load(base.data.npz_filename).num_levels
        num_stages = len(stage_levels(base.model, levels, base.data.npz_filename))
        remote = clearml_rows(base.tracking.project, cfg.name, space, num_stages, objective)
        print_ranking(remote, list(space), objective, f"ClearML project {base.tracking.project!r}")
        study = study or rows_study(remote, space.distributions(), objective)
    out = Path(args.out) if args.out else paths.plots
    written = write_figures(comparison_figures(study, objective), out)
    print(f"{len(written)} plots written to {out}")
    return 0


def cli() -> None:
    """`ganimator-compare`: the same as `python sweeps/compare.py`."""
    run_command(lambda: main(sys.argv[1:]), interrupted="interrupted")


if __name__ == "__main__":
    cli()
