"""After the search: every trial ranked, the best retrained at full length and exported.

An export, `exports/<sweep>/<rank>/`, is a self-contained run folder that `ganimator-generate`
reads unchanged: the resolved config, the training data, a generator-only checkpoint, plus
`samples/` (BVH and npz), `metrics.json` and the retrain's `history.jsonl`.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from tqdm.auto import tqdm

from ganimator.config import load_config
from ganimator.generate import load_run
from ganimator.tracking import Tracking
from ganimator.trainer import CHECKPOINT, CHECKPOINT_VERSION, CONFIG, DATA, HISTORY, Trainer

from .objective import pareto_front, score
from .trainable import SUMMARY_METRICS, TrialSetup, trial_overrides


@dataclass
class TrialRow:
    trial_id: str
    params: dict
    metrics: dict  # the trial's last report
    status: str  # 'finished', 'stopped after stage K' (early stopping), 'failed: <why>' (diverged) or 'error: ...'
    stages_done: int
    steps: int  # training iterations the trial ran, all stages together
    pareto: bool = False
    rank: int = 0
    export: str = ""

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass
class Export:
    rank: int
    row: TrialRow
    path: Path
    metrics: dict  # the exported seed's, with every seed's under "seeds"


def last_line(error: BaseException) -> str:
    """The line of an error worth a summary: a Ray error's last, the original exception."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def rank_trials(results, space_keys, num_stages: int, pareto: bool) -> list[TrialRow]:
    """Every trial of a Tune ResultGrid, ranked (see `rank`)."""
    rows = []
    for result in results:
        m = dict(result.metrics or {})
        done = int(m.get("stages_done", 0))
        if result.error is not None:
            status = f"error: {last_line(result.error)[:200]}"
        elif m.get("failure"):
            status = f"failed: {m['failure'][:300]}"
        elif done == num_stages:
            status = "finished"
        else:
            status = f"stopped after stage {done}"
        params = {k: result.config.get(k) for k in space_keys}
        trial_id = m.get("trial_id") or Path(result.path).name
        rows.append(TrialRow(trial_id, params, m, status, done, int(m.get("step", 0))))
    return rank(rows, pareto)


def rank(rows: list[TrialRow], pareto: bool) -> list[TrialRow]:
    """Best first: finished trials by score (the Pareto front first in multi-objective mode),
    then those stopped early by how far they got, then errors."""
    if pareto:
        finished = [r for r in rows if r.finished]
        for i in pareto_front([r.metrics for r in finished]):
            finished[i].pareto = True
    rows.sort(key=lambda r: (not r.status.startswith(("error", "failed")), r.stages_done, r.pareto,
                             r.metrics.get("score", float("-inf"))), reverse=True)
    for position, row in enumerate(rows, 1):
        row.rank = position
    return rows


def _retrain(setup: TrialSetup, params: dict, rank: int, seed: int, iterations: int, eval_samples: int,
             tags: list[str]) -> dict:
    """One full-length training of a configuration, evaluated as the original evaluates."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = tmp / "input.npz"
        npz.write_bytes(setup.data)
        cfg = load_config([*trial_overrides(setup, params, npz, tmp / "run", resume=False), f"seed={seed}",
                           f"train_data_iter={iterations}", f"experiment_name={setup.sweep}/rank-{rank}-seed-{seed}"])
        trainer = Trainer(cfg)
        with Tracking(cfg, trainer.dataset, tags, params, announce=False) as tracking:
            trainer.callbacks += tracking.callbacks
            trainer.fit()
            run = load_run(tmp / "run")
            metrics = run.evaluate(eval_samples)
            tracking.report_values(metrics)
        state = torch.load(tmp / "run" / CHECKPOINT, map_location="cpu", weights_only=True)
        slim = {k: state[k] for k in ("stage", "iteration", "step", "pyramid")}  # the generators only
        buffer = io.BytesIO()
        torch.save({"version": CHECKPOINT_VERSION, **slim}, buffer)
        files = {name: (tmp / "run" / name).read_bytes() for name in (CONFIG, DATA, HISTORY)}
        return {"metrics": metrics, "files": {**files, CHECKPOINT: buffer.getvalue()}, "task_id": tracking.task_id}


def retrain_and_export(rows: list[TrialRow], setup: TrialSetup, cfg, resources: dict) -> list[Export]:
    """The top-k finished trials, retrained for every seed in parallel on the cluster; each rank
    exports the seed with the best score."""
    best = [r for r in rows if r.finished][:cfg.top_k]
    if not best:
        return []
    remote = ray.remote(_retrain).options(num_cpus=resources["cpu"], num_gpus=resources["gpu"])
    # With one seed the retrain is the export; with several, the sweep's task tags the best afterwards.
    best_tag = ["best"] if len(cfg.retrain_seeds) == 1 else []
    jobs = {remote.remote(setup, r.params, rank, seed, cfg.retrain_iter, cfg.eval_samples,
                          ["retrain", cfg.name, f"rank-{rank}", f"seed-{seed}", *best_tag]): (rank, seed)
            for rank, r in enumerate(best, 1) for seed in cfg.retrain_seeds}
    done: dict[tuple[int, int], dict] = {}
    with tqdm(total=len(jobs), desc=f"retraining top {len(best)} x {len(cfg.retrain_seeds)} seeds") as bar:
        pending = list(jobs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done[jobs[ready[0]]] = ray.get(ready[0])
            bar.update()

    sweep_dir = Path(cfg.export_dir) / cfg.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    exports = []
    for rank, row in enumerate(best, 1):
        seeds = {seed: done[rank, seed] for seed in cfg.retrain_seeds}
        for out in seeds.values():
            out["metrics"]["rec_error"] = out["metrics"]["reconstruction_l1"]
            out["metrics"]["score"] = score(out["metrics"], cfg.rec_weight)
        seed = max(seeds, key=lambda s: seeds[s]["metrics"]["score"])
        path = _write_export(sweep_dir / str(rank), seeds[seed]["files"], cfg)
        metrics = {"rank": rank, "trial_id": row.trial_id, "params": row.params, "seed": seed,
                   "clearml_task": seeds[seed]["task_id"],
                   **seeds[seed]["metrics"], "sweep_metrics": {k: row.metrics.get(k) for k in SUMMARY_METRICS},
                   "seeds": {str(s): out["metrics"] for s, out in seeds.items()}}
        (path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        row.export = str(path)
        exports.append(Export(rank, row, path, metrics))
    return exports


def _write_export(path: Path, files: dict, cfg) -> Path:
    """Written beside the target and renamed into place, so an export is whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, blob in files.items():
        (tmp / name).write_bytes(blob)
    run = load_run(tmp)
    length = cfg.export_length or 2 * run.dataset.features.shape[-1]
    if cfg.export_samples:
        run.write(run.generate(length, cfg.export_samples, seed=0), tmp / "samples")
    if path.exists():  # an export of this sweep's earlier run is replaced; anything else is kept
        if not (path / CHECKPOINT).is_file() or not (path / "metrics.json").is_file():
            shutil.rmtree(tmp)
            raise FileExistsError(f"{path} exists and is not an export of this sweep: it is left as it is")
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def summary_table(rows: list[TrialRow], space_keys, pareto: bool) -> tuple[list[str], list[list]]:
    """Column names, and one line per trial: rank, status, metrics, searched values, export folder."""
    columns = ["rank", "trial_id", "status", "stages_done", "steps", *SUMMARY_METRICS, *space_keys, "export"]
    if pareto:
        columns.insert(3, "pareto")
    return columns, [[_cell(row, c) for c in columns] for row in rows]


def write_summary(rows: list[TrialRow], cfg, space_keys, out_dir: Path) -> tuple[Path, Path]:
    """summary.csv and summary.md: every trial, ranked, with parameters, metrics and status."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns, table = summary_table(rows, space_keys, cfg.objective == "pareto")
    csv_path = out_dir / "summary.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([columns, *table])

    stopped = sum(r.status.startswith("stopped") for r in rows)
    errors = sum(r.status.startswith(("error", "failed")) for r in rows)
    lines = [f"# Sweep {cfg.name}", "",
             f"{len(rows)} trials: {len(rows) - stopped - errors} finished, {stopped} stopped early, {errors} failed. "
             f"Objective: {'coverage vs global diversity (Pareto front)' if cfg.objective == 'pareto' else 'score'}"
             f" (see sweeps/objective.py).", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in table]
    md_path = out_dir / "summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _cell(row: TrialRow, column: str):
    if column in row.params:
        return row.params[column]
    if column in SUMMARY_METRICS:
        return row.metrics.get(column, "")
    return getattr(row, column)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
