"""Sweep GANimator's hyperparameters on Ray Tune with Optuna, then retrain and export the best.

    python sweeps/run.py npz_filename=clip.npz num_samples=64 [train_data_iter=2000 ...]
    ganimator-sweep npz_filename=clip.npz ...            # the same, installed
    ray job submit --working-dir . -- python sweeps/run.py npz_filename=/shared/clip.npz ...

Under `ray job submit` (or with `address=...`) it runs on that cluster; otherwise it starts a
local Ray on 127.0.0.1. Settings are `SweepConfig` fields (sweeps/config.py); every other
`key=value` is a trainer override applied to all trials. The search space is `space.yaml`.
Every Ray trial runs `sweeps/trainable.py`'s one trainable against the sweep's Optuna study,
which then holds every configuration's result and newest stage checkpoint: ranking, exports,
plots and `resume=true` read it. Resume starts a new Tune run over the batches the study says
are unfinished; Tune's own saved experiment state, pickles included, is never loaded.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import sys
from pathlib import Path

import optuna
import ray
import torch
from omegaconf import OmegaConf
from ray import tune

from ganimator.config import ConfigError
from ganimator.dataset import MotionDataset
from ganimator.errors import run_command, stop_on_signals
from ganimator.files import atomic_write_text
from ganimator.rundir import new_or_empty
from ganimator.schedule import Schedule
from sweeps._compat import keep_local_ray_on_loopback
from sweeps.config import SweepConfig, check_reachable, drop_password, hide_password, load_sweep_config
from sweeps.export import retrain_and_export
from sweeps.objective import Objective
from sweeps.paths import ARGS, STUDY_DB, SweepPaths, saved_args
from sweeps.plots import comparison_figures, embed_pictures, write_figures
from sweeps.report import TASK_ID, SweepTask
from sweeps.results import (EXPORTED, Status, close_orphans, counts, importances, learned_lines, rung_correlations,
                            study_rows, unfinished_batches, write_summary)
from sweeps.search import StudySpec
from sweeps.space import check_on_data, load_space
from sweeps.trainable import TrialSetup, batch_of, batches, check_space_fusable, train_trial

# Tiny test sweeps checkpoint every second or so; real stages take minutes.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune's own Ctrl-C handler ends `fit()` as if the sweep were done, and the driver would go on to
# export a half-run sweep. Without it, SIGINT is a KeyboardInterrupt as SIGTERM is (run_command):
# the driver stops at once, and resume=true continues from the study's record.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


def connect(cfg) -> None:
    if cfg.address:
        ray.init(address=cfg.address)
    elif os.environ.get("RAY_ADDRESS"):  # set by `ray job submit`
        ray.init()
    else:  # a new local Ray, reachable from this machine only
        keep_local_ray_on_loopback()
        _owner_only_token()
        ray.init(address="local", num_cpus=cfg.num_cpus or None, _node_ip_address="127.0.0.1",
                 dashboard_host="127.0.0.1")
        node_ip = ray.util.get_node_ip_address()
        if node_ip != "127.0.0.1":
            print(f"warning: Ray runs on {node_ip}, not loopback: its ports are reachable from the network",
                  file=sys.stderr)
    stop_on_signals()  # ray.init made SIGTERM a bare sys.exit: it ends the driver as Ctrl-C does again


def _owner_only_token() -> None:
    """A new local Ray turns token authentication on and, when no token exists, writes
    ~/.ray/auth_token with the umask's mode (0644): write it first, owner-only, and tighten an old one."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    token = Path(given) if given else Path.home() / ".ray" / "auth_token"
    if not token.exists() and not given:
        token.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    elif token.is_file() and stat.S_IMODE(token.stat().st_mode) & 0o077:
        try:
            token.chmod(0o600)
        except OSError as e:
            print(f"warning: Ray's token {token} is readable by others and could not be made "
                  f"owner-only: {e.strerror}", file=sys.stderr)


def main(argv: list[str]) -> int:
    argv = _with_saved_args(argv)
    cfg, trainer_overrides, base = load_sweep_config(argv)
    space = load_space(cfg.space, trainer_overrides)
    check_space_fusable(space, cfg.population)
    if cfg.objective == "pareto" and cfg.early_stopping:
        print("note: objective=pareto trains every configuration to the end (Optuna prunes single-objective "
              "studies only)", file=sys.stderr)
    # A bad npz, stages or space values that do not fit it fail here, not in every trial.
    dataset = MotionDataset.load(base.data.npz_filename)
    schedule = Schedule.of(base, dataset.num_levels, base.data.npz_filename)
    num_stages = len(schedule.stages)
    if base.scheduling.budget_iters or base.scheduling.budget_minutes:
        print(f"budget mode: every trial and retrain trains {_budget(base)} ({schedule.describe()} by default; "
              "retrain_iter is not used)", file=sys.stderr)
    if cfg.export_fix_contact and not dataset.skeleton.contacts:
        raise ConfigError(f"export_fix_contact=true: {base.data.npz_filename}'s rig ({dataset.skeleton.rig}) has no "
                          "contact joints, so there are no feet to pin")
    local = not (cfg.address or os.environ.get("RAY_ADDRESS")) and cfg.gpus_per_trial == 0  # trials use this memory
    check_on_data(space, trainer_overrides, dataset, check_memory=local)
    paths = SweepPaths.of(cfg)
    check_reachable(paths.storage)
    _check_new_or_resume(cfg, paths)
    if cfg.resume and (exported := _exported(cfg, paths)):
        # Exporting again would replace what the user may have added to the exports since.
        print(f"sweep {cfg.name} is finished: its exports and summary are in {exported}; nothing to resume")
        return 0

    setup_dir = paths.local  # where resume finds its arguments
    if setup_dir and not cfg.resume:
        setup_dir.mkdir(parents=True, exist_ok=True)
        saved = [f"{k}={drop_password(v)}" if k == "optuna_storage" else a
                 for a, (k, _, v) in zip(argv, (a.partition("=") for a in argv))]
        if saved != argv:
            print("note: the database password is not saved with the sweep: on resume, give optuna_storage= "
                  "again or keep the password in PGPASSWORD or ~/.pgpass", file=sys.stderr)
        atomic_write_text(paths.args, json.dumps(saved, indent=1) + "\n")

    objective = Objective.named(cfg.objective, cfg.rec_weight)
    with SweepTask(cfg, base, space, setup_dir) as sweep_task:
        data = Path(base.data.npz_filename).read_bytes()
        setup = TrialSetup((*trainer_overrides, *sweep_task.trial_overrides()), data, num_stages, sweep=cfg.name,
                           threads=max(1, int(cfg.cpus_per_trial)), device=_trial_device(cfg, base.util.device))
        resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
        # Trials ask the study for their configurations and stop their own members; Tune runs and restarts them.
        spec = StudySpec(cfg.name, paths.storage, OmegaConf.to_object(cfg), space)
        trainable = tune.with_resources(tune.with_parameters(train_trial, setup=setup, spec=spec, paths=paths),
                                        resources)

        connect(cfg)
        if not cfg.resume:
            spec.create()
        backend = spec.backend()
        study = spec.load(backend=backend)
        todo = unfinished_batches(study, batches(cfg.num_samples, cfg.population))
        if todo:  # a resumed sweep killed while exporting has none
            tuner = tune.Tuner(
                trainable, param_space={"batch": tune.grid_search(todo)},
                tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=cfg.max_concurrent or None),
                run_config=tune.RunConfig(name=cfg.name, storage_path=paths.results, verbose=1,  # a live trial table
                                          failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
            results = tuner.fit()
            study = spec.load(backend=backend)
            close_orphans(study, backend, {batch_of(r.config, cfg)["index"]: r.error
                                           for r in results if r.error is not None})
        rows = study_rows(study, list(space), objective)
        exports = retrain_and_export(rows, setup, cfg, objective, resources, paths)
        learned = learned_lines(rung_correlations(rows, num_stages), importances(study, objective))
        csv_path, md_path = write_summary(rows, paths, list(space), objective, learned)
        figures = comparison_figures(study, objective)
        plots = write_figures(figures, paths.plots, cfg.plot_pngs)
        embed_pictures(md_path, plots)
        sweep_task.report(rows, exports, list(space), objective, figures, [csv_path, md_path])
    study.set_user_attr(EXPORTED, str(paths.exports))
    _print_summary(cfg, rows, exports, md_path, paths.storage)
    print(f"comparison plots: {paths.plots}" if plots else "comparison plots: none (no finished trial)")
    return 0


def _exported(cfg, paths: SweepPaths) -> str | None:
    """Where a finished sweep exported its results (its study records it last; a sweep finished
    before the study did has its summary there); None before."""
    try:
        exported = optuna.load_study(study_name=cfg.name, storage=paths.storage).user_attrs.get(EXPORTED)
    except KeyError:  # no such study: not finished
        return None
    return exported or (str(paths.exports) if paths.summary_csv.is_file() else None)


def _trial_device(cfg, device: str) -> str:
    """Where trials and retrains train, printed at the start: Ray gives a trial the GPUs it asks for
    (gpus_per_trial) and hides the others, so `auto` without them is the CPU."""
    if cfg.gpus_per_trial > 0:
        device = "cuda"
    elif device == "auto":
        device = "cpu"
    gpus = torch.cuda.device_count()
    hint = (f"; this machine has {gpus} CUDA device(s): gpus_per_trial=1 (or 0.25 to share one) trains on them"
            if gpus and device == "cpu" else "")
    print(f"device: trials train on {device} (gpus_per_trial={cfg.gpus_per_trial:g}){hint}", flush=True)
    return device


def _with_saved_args(argv: list[str]) -> list[str]:
    """`resume=true` continues with the sweep's own arguments; those given again override them."""
    values = dict(a.partition("=")[::2] for a in argv)
    if values.get("resume", "false").lower() != "true":
        return argv
    name = values.get("name") or Path(values.get("npz_filename", values.get("data.npz_filename", ""))).stem
    saved = SweepPaths.of(SweepConfig(name=name, results_dir=values.get("results_dir", SweepConfig.results_dir))).args
    return [*saved_args(saved), *argv] if name and saved.is_file() else argv


# What a sweep writes before its study holds a configuration: a sweep that failed with only these never started.
SETUP_FILES = {ARGS, STUDY_DB, TASK_ID}


def _check_new_or_resume(cfg, paths: SweepPaths) -> None:
    """A new sweep never reuses an old one's folder or Optuna study; a resumed one needs its study.
    A sweep that failed before its study held a configuration (ClearML unreachable, say) never
    started: a new start takes its name over, removing only what it had written."""
    storage, local = paths.storage, paths.local
    studies = optuna.study.get_all_study_names(storage) if (
        paths.study_db is None or paths.study_db.exists()) else []
    trials = cfg.name in studies and optuna.load_study(study_name=cfg.name, storage=storage).get_trials(deepcopy=False)
    foreign = local is not None and local.exists() and (
        not local.is_dir() or any(f.name not in SETUP_FILES for f in local.iterdir()))
    started = bool(trials) or foreign
    leftover = cfg.name in studies or (local is not None and local.exists())  # of a sweep that never started
    if cfg.resume:
        if leftover and not started:
            raise ConfigError(f"sweep {cfg.name!r} failed before it began training, so there is nothing to resume: "
                              "start it again without resume=true")
        if not trials:
            raise ConfigError(f"resume=true but {paths.sweep} holds no sweep to resume (check name=, results_dir= "
                              "and optuna_storage=)")
    elif started:
        raise ConfigError(f"sweep {cfg.name!r} already exists in {paths.sweep}: pass resume=true to continue it, "
                          "or choose another name=")
    elif leftover:
        print(f"note: sweep {cfg.name!r} failed before it began training; starting it afresh", file=sys.stderr)
        if cfg.name in studies:
            optuna.delete_study(study_name=cfg.name, storage=storage)
        for name in SETUP_FILES if local else ():
            (local / name).unlink(missing_ok=True)
    if not cfg.resume and not new_or_empty(paths.exports):
        raise ConfigError(f"export folder {paths.exports} already exists and is not empty: choose another name= or "
                          "export_dir=")


def _budget(base) -> str:
    s = base.scheduling
    return f"budget_iters={s.budget_iters}" if s.budget_iters else f"budget_minutes={s.budget_minutes:g}"


def _print_summary(cfg, rows, exports, md_path: Path, storage: str) -> None:
    stopped = counts(rows)[Status.STOPPED]
    how = f", {cfg.population} configurations a Ray trial" if cfg.population > 1 else ""
    print(f"\nsweep {cfg.name}: {len(rows)} trials, {stopped} stopped early by successive halving{how}")
    for e in exports:
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.row.params.items())
        print(f"  #{e.rank} {e.row.trial_id}: score {e.metrics['score']:.4f}, coverage {e.metrics['coverage']:.3f}, "
              f"global diversity {e.metrics['global_diversity']:.3f}, local diversity "
              f"{e.metrics['local_diversity']:.3f}, jitter {e.metrics['jitter']:.2f}x, foot skating "
              f"{e.metrics['foot_skating']:.2f}x, penetration {e.metrics['penetration']:.2f}, ground contact "
              f"{e.metrics['ground_contact']:.2f}x, foot motion {e.metrics['foot_motion']:.2f}x (seed {e.metrics['seed']})"
              f"\n      {params}\n      -> {e.path}")
    if not exports:
        print("  no trial finished every stage: nothing to export")
    print(f"ranking of every trial: {md_path} (and .csv)")
    print(f"optuna study: optuna-dashboard {hide_password(storage)}")


def cli() -> None:
    """`ganimator-sweep`: the same as `python sweeps/run.py`."""
    run_command(lambda: main(sys.argv[1:]), interrupted="interrupted: continue the sweep with resume=true")


if __name__ == "__main__":
    cli()
