"""The sweep's own settings, as a typed structured config.

A `key=value` argument of `sweeps/run.py` sets a field of `SweepConfig` when it names one, and
is otherwise a trainer override (`npz_filename=...`, `train_data_iter=300`), checked by
`ganimator.config.load_config`. So one command line holds both.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import sqlalchemy
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganimator.config import ConfigError, load_config, npz_filename, refuse_resolvers

from .objective import KINDS

SPACE = Path(__file__).with_name("space.yaml")


@dataclass
class SweepConfig:
    name: str = ""  # the sweep's folder under results_dir; default: the npz file's name
    space: str = str(SPACE)  # search space YAML
    num_samples: int = 16  # trials
    objective: str = "score"  # 'score' (one number), 'pareto' (coverage vs diversity) or 'band' (see objective.py)
    sampler: str = ""  # 'tpe', 'nsga2' or 'random'; default: tpe for score, nsga2 for pareto
    sampler_seed: int = 0
    rec_weight: float = 1.0  # weight of the reconstruction error in the score
    # Early stopping on the score (successive halving, ASHA's rule), with rungs at stage boundaries:
    # grace_stages, then x reduction_factor. objective=pareto trains every configuration to the end.
    early_stopping: bool = True
    grace_stages: int = 1
    reduction_factor: float = 2.0
    # Resources per trial; fractions of a GPU share one between trials.
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0: as many trials as the resources hold
    max_failures: int = 1  # retries of a trial that raises, from its last stage checkpoint
    # Configurations a Ray trial trains at once, fused (ganimator/population.py); 1: one configuration a trial.
    population: int = 1
    # Where things live.
    results_dir: str = "results"  # Ray Tune storage_path: a local folder, NFS, s3:// or gs://
    optuna_storage: str = ""  # default sqlite in the sweep folder; postgresql://... on a cluster
    address: str = ""  # Ray cluster; default: the one `ray job submit` names, else a new local one
    num_cpus: int = 0  # CPUs of a new local Ray (0: all)
    resume: bool = False  # continue the sweep `name` after an interruption
    # Retraining the best configurations and exporting them.
    top_k: int = 1
    retrain_seeds: list[int] = field(default_factory=lambda: [0])
    retrain_iter: int = 15000  # iterations per stage of a retrain (the original's full length); a budget replaces it
    export_dir: str = "exports"
    export_samples: int = 5  # BVH samples written per export
    export_length: int = 0  # frames per sample; 0: twice the clip
    export_fix_contact: bool = False  # also each sample with its feet pinned in contact (<name>-fixed.bvh)
    eval_samples: int = 200  # samples the exported metrics average over (the original: 200)
    plot_pngs: bool = True  # PNG copies of the plots, shown in summary.md (needs Chrome or Chromium; seconds)


def sweep_keys() -> set[str]:
    return {f.name for f in fields(SweepConfig)}


def load_sweep_config(args: list[str]):
    """(SweepConfig, trainer overrides, the trainer config they give) from `key=value` arguments."""
    ours, trainer = [], []
    for arg in args:
        key, sep, _ = arg.partition("=")
        if not sep:
            raise ConfigError(f"argument {arg!r} is not key=value")
        (ours if key.split(".")[0] in sweep_keys() else trainer).append(arg)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(SweepConfig), OmegaConf.from_dotlist(ours))
        refuse_resolvers(cfg, "sweep key")
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"sweep key {getattr(e, 'full_key', '')!r}: {str(e).splitlines()[0]}") from None
    base = load_config(trainer)  # unknown or mistyped trainer keys fail here, before Ray starts
    npz_filename(base)
    if not cfg.name:
        cfg.name = Path(base.data.npz_filename).stem
    _validate(cfg, base)
    cfg.optuna_storage = database_url(cfg.optuna_storage)
    return cfg, trainer, base


def database_url(url: str) -> str:
    """A `postgresql://` URL names no driver, and SQLAlchemy's default changed from psycopg2 to
    psycopg (3) in 2.1: name the one installed, so the URL works with either (the cluster
    images install psycopg2-binary)."""
    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql" or not sep:
        return url
    driver = next((m for m in ("psycopg", "psycopg2") if importlib.util.find_spec(m)), None)
    return f"postgresql+{driver}://{rest}" if driver else url


def hide_password(url: str) -> str:
    """A database URL as it may be printed or published: the password masked."""
    parsed = _database_url(url)
    return parsed.render_as_string(hide_password=True) if parsed and parsed.password else url


def check_reachable(url: str) -> None:
    """A database server that cannot be reached is one line naming it (password masked), before
    the sweep starts anything; SQLAlchemy's own error is a long traceback that may hold the URL."""
    if url.startswith("sqlite:"):
        return
    try:
        sqlalchemy.create_engine(url).connect().close()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        parsed = _database_url(url)
        if parsed is not None and parsed.password:
            reason = reason.replace(parsed.password, "***")
        what = "needs a database driver that is not installed" if isinstance(e, ImportError) else "cannot be reached"
        raise ConfigError(f"optuna_storage {hide_password(url)} {what}: {reason}") from None


def drop_password(url: str) -> str:
    """A database URL as it may be saved for resume: without its password, which PostgreSQL's
    client then takes from PGPASSWORD or ~/.pgpass (or from optuna_storage= given again)."""
    parsed = _database_url(url)
    return parsed._replace(password=None).render_as_string(hide_password=False) if parsed and parsed.password else url


def _database_url(url: str) -> sqlalchemy.engine.URL | None:
    try:
        return sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None


# A sweep's name is one folder under results_dir and export_dir, and the study's name: nothing
# that could climb out of them (`..`, `/`) or hide (a leading dot).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _validate(cfg, base) -> None:
    if not NAME.fullmatch(cfg.name):
        raise ConfigError(f"sweep key 'name': {cfg.name!r} is not a plain folder name (letters, digits, '.', '_' "
                          "and '-', starting with a letter or digit)")
    kinds = [kind.kind for kind in KINDS]
    if cfg.objective not in kinds:
        raise ConfigError(f"sweep key 'objective' must be one of {', '.join(kinds)}, got {cfg.objective!r}")
    if cfg.sampler not in ("", "tpe", "nsga2", "random"):
        raise ConfigError(f"sweep key 'sampler' must be 'tpe', 'nsga2' or 'random', got {cfg.sampler!r}")
    positive = {"num_samples": cfg.num_samples, "population": cfg.population, "cpus_per_trial": cfg.cpus_per_trial, "top_k": cfg.top_k,
                "retrain_iter": cfg.retrain_iter, "eval_samples": cfg.eval_samples, "grace_stages": cfg.grace_stages}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"sweep key {key!r} must be positive, got {value}")
    for key in ("gpus_per_trial", "max_concurrent", "max_failures", "export_samples", "export_length", "num_cpus",
                "rec_weight"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"sweep key {key!r} must not be negative, got {getattr(cfg, key)}")
    if cfg.reduction_factor <= 1:
        raise ConfigError(f"sweep key 'reduction_factor' must be above 1, got {cfg.reduction_factor}")
    if not cfg.retrain_seeds:
        raise ConfigError("sweep key 'retrain_seeds' must name at least one seed")
    if cfg.top_k > cfg.num_samples:
        raise ConfigError(f"sweep key 'top_k' ({cfg.top_k}) is more than num_samples ({cfg.num_samples})")
    if cfg.reduction_factor != int(cfg.reduction_factor):
        raise ConfigError(f"sweep key 'reduction_factor' must be a whole number (Optuna's successive halving), "
                          f"got {cfg.reduction_factor}")
    if base.scheduling.validation_samples < 1:
        raise ConfigError("trainer key 'scheduling.validation_samples' must be at least 1 in a sweep: "
                          "the objective is computed from validation samples")
    if "://" in cfg.results_dir and not cfg.optuna_storage:
        raise ConfigError(f"results_dir {cfg.results_dir!r} is remote: set optuna_storage (a PostgreSQL URL) too")
