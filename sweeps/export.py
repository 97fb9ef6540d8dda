"""After the search: the best configurations (sweeps/results.py ranks them) retrained at full length and exported.

An export, `exports/<sweep>/<rank>/`, is a self-contained run folder that `ganimator-generate`
reads unchanged: the resolved config, the training data, a generator-only checkpoint, plus
`samples/` (BVH and npz), `metrics.json` and the retrain's `history.jsonl`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray
from tqdm.auto import tqdm

from ganimator.config import load_config
from ganimator.generate import load_run
from ganimator.metrics import Quality
from ganimator.rundir import RunDir
from ganimator.run_hooks import RunOutputs, build_trainer
from ganimator.tracking import Tracking

from .objective import Objective
from .paths import SweepPaths
from .results import SUMMARY_METRICS, TrialRow, cell
from .trainable import TrialSetup, trial_overrides


@dataclass
class Export:
    rank: int
    row: TrialRow
    path: Path
    metrics: dict  # the exported seed's, with every seed's under "seeds"


def _retrain(setup: TrialSetup, params: dict, rank: int, seed: int, iterations: int, eval_samples: int,
             tags: list[str]) -> dict:
    """One full-length training of a configuration, evaluated as the original evaluates."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = tmp / "input.npz"
        npz.write_bytes(setup.data)
        # With a progress bar per stage (trials run without): the driver draws each retrain's whole.
        cfg = load_config([*trial_overrides(setup, params, npz, tmp / "run", resume=False), f"seed={seed}",
                           f"train_data_iter={iterations}", f"experiment_name={setup.sweep}/rank-{rank}-seed-{seed}",
                           "progress=true"])
        trainer = build_trainer(cfg)
        with Tracking(cfg, len(trainer.stages), tags, params, announce=False) as tracking:
            trainer.fit([RunOutputs(), tracking])
            run = load_run(tmp / "run")
            metrics = {**run.evaluate(eval_samples, progress=True).as_dict(), **run.sampling(eval_samples)}
            tracking.report_values(metrics)
        out = RunDir(tmp / "run")
        files = {name: (out.path / name).read_bytes() for name in (RunDir.CONFIG, RunDir.DATA, RunDir.HISTORY)}
        return {"metrics": metrics, "files": {**files, RunDir.CHECKPOINT: out.generator_checkpoint()},
                "task_id": tracking.task_id}


def retrain_and_export(rows: list[TrialRow], setup: TrialSetup, cfg, objective: Objective,
                       resources: dict, paths: SweepPaths) -> list[Export]:
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

    sweep_dir = paths.exports
    sweep_dir.mkdir(parents=True, exist_ok=True)
    exports = []
    for rank, row in tqdm(list(enumerate(best, 1)), desc="exporting (samples, BVH)", unit="rank"):
        seeds = {seed: done[rank, seed] for seed in cfg.retrain_seeds}
        for out in seeds.values():
            out["metrics"]["score"] = objective.score(Quality.from_dict(out["metrics"]))
        seed = max(seeds, key=lambda s: seeds[s]["metrics"]["score"])
        path, fixed = _write_export(sweep_dir / str(rank), seeds[seed]["files"], cfg)
        metrics = {"rank": rank, "trial_id": row.trial_id, "params": row.params, "seed": seed,
                   "clearml_task": seeds[seed]["task_id"],
                   **seeds[seed]["metrics"], "sweep_metrics": {k: cell(row, k) for k in SUMMARY_METRICS},
                   "seeds": {str(s): out["metrics"] for s, out in seeds.items()}, **fixed}
        RunDir(path).metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        row.export = str(path)
        exports.append(Export(rank, row, path, metrics))
    return exports


def _write_export(path: Path, files: dict, cfg) -> tuple[Path, dict]:
    """Written beside the target and renamed into place, so an export is whole or absent. With
    export_fix_contact, the samples' foot-contact clean-up too, and its record for metrics.json."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, blob in files.items():
        (tmp / name).write_bytes(blob)
    run = load_run(tmp)
    length = cfg.export_length or 2 * run.dataset.num_frames
    fixed = {}
    if cfg.export_samples:
        samples = run.generate(length, cfg.export_samples, seed=0)
        run.write(samples, RunDir(tmp).samples)
        if cfg.export_fix_contact:
            _, fix = run.write_fixed(samples, RunDir(tmp).samples, progress=True)
            # Speeds of the feet in the frames the fix pinned: not Quality's foot_skating (a ratio to the clip's).
            fixed = {"contact_fix": {"pinned_speed_before": fix.skating_before, "pinned_speed_after": fix.skating_after,
                                     "unit": "m/s"}}
    if path.exists():  # an export of this sweep's earlier run is replaced; anything else is kept
        if not RunDir(path).checkpoint.is_file() or not RunDir(path).metrics.is_file():
            shutil.rmtree(tmp)
            raise FileExistsError(f"{path} exists and is not an export of this sweep: it is left as it is")
        shutil.rmtree(path)
    tmp.rename(path)
    return path, fixed
