"""Sweep GANimator's hyperparameters on Ray Tune with Optuna, then retrain and export the best.

    python sweeps/run.py npz_filename=clip.npz num_samples=64 [train_data_iter=2000 ...]
    ray job submit --working-dir . -- python sweeps/run.py npz_filename=/shared/clip.npz ...

Under `ray job submit` (or with `address=...`) it runs on that cluster; otherwise it starts a
local Ray on 127.0.0.1. Settings are `SweepConfig` fields (sweeps/config.py); every other
`key=value` is a trainer override applied to all trials. The search space is `space.yaml`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import optuna
import ray
from omegaconf import OmegaConf
from ray import tune

from ganimator.config import ConfigError, stage_levels
from ganimator.dataset import DatasetError, MotionDataset
from sweeps.config import ARGS, STUDY_DB, SweepConfig, load_sweep_config
from sweeps.export import rank_trials, retrain_and_export, write_summary
from sweeps.plots import comparison_figures, write_figures
from sweeps.report import SweepTask
from sweeps.population import batches, check_space_fusable, close_orphans, study_rows, train_population
from sweeps.search import StudySpec, scheduler, searcher
from sweeps.space import load_space
from sweeps.trainable import TrialSetup, train_trial

# Tiny test sweeps checkpoint every second or so; real stages take minutes.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def connect(cfg) -> None:
    if cfg.address:
        ray.init(address=cfg.address)
    elif os.environ.get("RAY_ADDRESS"):  # set by `ray job submit`
        ray.init()
    else:  # a new local Ray, reachable from this machine only
        ray.init(address="local", num_cpus=cfg.num_cpus or None, _node_ip_address="127.0.0.1",
                 dashboard_host="127.0.0.1")


def main(argv: list[str]) -> int:
    argv = _with_saved_args(argv)
    cfg, trainer_overrides, base = load_sweep_config(argv)
    space = load_space(cfg.space, trainer_overrides)
    if cfg.population > 1:
        check_space_fusable(space)
    # A bad npz or stages that do not fit it fail here, not in every trial.
    num_stages = len(stage_levels(base.model, MotionDataset.load(base.data.npz_filename).num_levels,
                                  base.data.npz_filename))
    results_dir = cfg.results_dir if "://" in cfg.results_dir else str(Path(cfg.results_dir).resolve())
    sweep_path = f"{results_dir}/{cfg.name}"
    storage = cfg.optuna_storage or f"sqlite:///{Path(sweep_path) / STUDY_DB}"
    _check_new_or_resume(cfg, sweep_path, storage)

    setup_dir = Path(sweep_path) if "://" not in sweep_path else None  # where resume finds its study and arguments
    if setup_dir and not cfg.resume:
        setup_dir.mkdir(parents=True, exist_ok=True)
        (setup_dir / ARGS).write_text(json.dumps(argv, indent=1) + "\n")

    with SweepTask(cfg, base, space, setup_dir) as sweep_task:
        data = Path(base.data.npz_filename).read_bytes()
        setup = TrialSetup((*trainer_overrides, *sweep_task.trial_overrides()), data, num_stages, sweep=cfg.name,
                           rec_weight=cfg.rec_weight, threads=max(1, int(cfg.cpus_per_trial)),
                           device="cuda" if cfg.gpus_per_trial > 0 else base.util.device)
        resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
        pareto, fused = cfg.objective == "pareto", cfg.population > 1
        if fused:  # the trials ask Optuna and stop their own members; Tune runs and restarts them
            study = StudySpec(cfg.name, storage, OmegaConf.to_object(cfg))
            trainable = tune.with_parameters(train_population, setup=setup, spec=study, space=space)
            search = {"param_space": {"batch": tune.grid_search(batches(cfg.num_samples, cfg.population))},
                      "tune_config": tune.TuneConfig(num_samples=1, max_concurrent_trials=cfg.max_concurrent or None)}
        else:
            trainable = tune.with_parameters(train_trial, setup=setup)
            search = {"tune_config": tune.TuneConfig(
                search_alg=searcher(cfg, space, storage, num_stages), scheduler=scheduler(cfg, num_stages),
                num_samples=cfg.num_samples, max_concurrent_trials=cfg.max_concurrent or None)}
        trainable = tune.with_resources(trainable, resources)

        connect(cfg)
        if cfg.resume:
            tuner = tune.Tuner.restore(sweep_path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            if fused:
                study.create(space.defaults())
            tuner = tune.Tuner(
                trainable, **search,
                run_config=tune.RunConfig(name=cfg.name, storage_path=results_dir, verbose=1,  # a live trial table
                                          failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        results = tuner.fit()

        if fused:
            optuna_study = study.load()
            close_orphans(optuna_study, {r.config["batch"]["index"]: r.error for r in results if r.error is not None})
            rows = study_rows(optuna_study, list(space), pareto)
        else:
            rows = rank_trials(results, list(space), num_stages, pareto)
        exports = retrain_and_export(rows, setup, cfg, resources)
        out_dir = Path(cfg.export_dir) / cfg.name
        csv_path, md_path = write_summary(rows, cfg, list(space), out_dir)
        figures = comparison_figures(rows, space.log_scales(), pareto)
        plots = write_figures(figures, out_dir / "plots")
        sweep_task.report(rows, exports, list(space), pareto, figures, [csv_path, md_path])
    _print_summary(cfg, rows, exports, md_path, storage)
    print(f"comparison plots: {plots[0].parent}")
    return 0


def _with_saved_args(argv: list[str]) -> list[str]:
    """`resume=true` continues with the sweep's own arguments; those given again override them."""
    values = dict(a.partition("=")[::2] for a in argv)
    if values.get("resume", "false").lower() != "true":
        return argv
    name = values.get("name") or Path(values.get("npz_filename", values.get("data.npz_filename", ""))).stem
    saved = Path(values.get("results_dir", SweepConfig.results_dir)) / name / ARGS
    return [*json.loads(saved.read_text()), *argv] if name and saved.is_file() else argv


def _check_new_or_resume(cfg, sweep_path: str, storage: str) -> None:
    """A new sweep never reuses an old one's folder or Optuna study; a resumed one needs both."""
    studies = optuna.study.get_all_study_names(storage) if (
        "sqlite" not in storage or Path(sweep_path, STUDY_DB).exists()) else []
    if cfg.resume:
        if not tune.Tuner.can_restore(sweep_path):
            raise ConfigError(f"resume=true but {sweep_path} holds no sweep to resume (check name= and results_dir=)")
    elif cfg.name in studies or ("://" not in sweep_path and Path(sweep_path).exists()):
        raise ConfigError(f"sweep {cfg.name!r} already exists in {sweep_path}: pass resume=true to continue it, "
                          "or choose another name=")


def _print_summary(cfg, rows, exports, md_path: Path, storage: str) -> None:
    stopped = sum(r.status.startswith("stopped") for r in rows)
    how = f"successive halving, {cfg.population} configurations a Ray trial" if cfg.population > 1 else "ASHA"
    print(f"\nsweep {cfg.name}: {len(rows)} trials, {stopped} stopped early by {how}")
    for e in exports:
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.row.params.items())
        print(f"  #{e.rank} {e.row.trial_id}: score {e.metrics['score']:.4f}, coverage {e.metrics['coverage']:.3f}, "
              f"global diversity {e.metrics['global_diversity']:.3f}, local diversity "
              f"{e.metrics['local_diversity']:.3f} (seed {e.metrics['seed']})\n      {params}\n      -> {e.path}")
    if not exports:
        print("  no trial finished every stage: nothing to export")
    print(f"ranking of every trial: {md_path} (and .csv)")
    print(f"optuna study: optuna-dashboard {storage}")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
