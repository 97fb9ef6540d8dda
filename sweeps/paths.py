"""Where a sweep keeps things: every path a sweep, its trials and its readers use, named here once.

    results_dir/NAME/              the sweep folder: Tune's trial folders, the saved arguments, the
                                   SQLite study (unless optuna_storage names a database)
    results_dir/NAME/train_trial_*/checkpoint_NNNNNN/   a Ray trial's stage checkpoints
    export_dir/NAME/               the exports (1/, 2/, ...), summary.csv and .md, plots/
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ganimator.config import ConfigError

ARGS = "sweep-args.json"  # a sweep's own arguments, in its folder, for resume and compare
STUDY_DB = "optuna.db"  # the Optuna study in the sweep's folder, unless optuna_storage names another
SUMMARY_CSV = "summary.csv"  # in the export folder
SUMMARY_MD = "summary.md"
# A Ray trial's stage checkpoint, as the study records it: relative to the sweep folder.
CHECKPOINT = re.compile(r"train_trial_[A-Za-z0-9_=.,\-]+/checkpoint_[0-9]+")


@dataclass(frozen=True)
class SweepPaths:
    results: str  # Tune's storage_path: an absolute local folder or a URL (s3://...)
    name: str
    export_dir: Path
    optuna_storage: str = ""  # a database URL; empty: SQLite in the sweep folder

    @classmethod
    def of(cls, cfg) -> SweepPaths:
        """From a SweepConfig (or anything with its results_dir, name, export_dir and optuna_storage)."""
        results = cfg.results_dir if "://" in cfg.results_dir else str(Path(cfg.results_dir).resolve())
        return cls(results, cfg.name, Path(cfg.export_dir), cfg.optuna_storage)

    @property
    def sweep(self) -> str:
        """The sweep folder, as Tune names it: a local path or a URL."""
        return f"{self.results}/{self.name}"

    @property
    def local(self) -> Path | None:
        """The sweep folder on this machine; None when it is remote."""
        return None if "://" in self.results else Path(self.sweep)

    @property
    def args(self) -> Path:
        return Path(self.sweep) / ARGS

    @property
    def storage(self) -> str:
        """The Optuna study's storage URL."""
        return self.optuna_storage or f"sqlite:///{Path(self.sweep) / STUDY_DB}"

    @property
    def study_db(self) -> Path | None:
        """The SQLite file of the study; None when a database server holds it."""
        return None if self.optuna_storage else Path(self.sweep) / STUDY_DB

    @property
    def exports(self) -> Path:
        return self.export_dir / self.name

    @property
    def summary_csv(self) -> Path:
        return self.exports / SUMMARY_CSV

    @property
    def summary_md(self) -> Path:
        return self.exports / SUMMARY_MD

    @property
    def plots(self) -> Path:
        return self.exports / "plots"

    def checkpoint(self, recorded: str) -> str:
        """A stage checkpoint the study records (`checkpoint_name`), as a path or URL in this sweep
        folder. Refused unless it is one of Tune's checkpoint folders there: the study can name
        nothing outside the sweep."""
        if not CHECKPOINT.fullmatch(recorded):
            raise ValueError(f"the study records {recorded!r} as a checkpoint: not a checkpoint folder of a Ray trial")
        return f"{self.sweep}/{recorded}"


def saved_args(path: Path) -> list[str]:
    """A sweep's saved arguments (`key=value` strings), as resume and compare read them."""
    try:
        args = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a sweep's saved arguments ({e})") from None
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{path}: not a sweep's saved arguments (a JSON list of key=value strings)")
    return args


def checkpoint_name(path: str) -> str:
    """What the study records of a persisted Tune checkpoint: its trial folder and its own name."""
    return "/".join(PurePosixPath(path).parts[-2:])


@dataclass(frozen=True)
class TrialFolder:
    """A Ray trial's own folder on its node (Tune's trial folder)."""

    path: Path

    @property
    def data(self) -> Path:
        """The training npz, written from the sweep's bytes: nodes need no shared copy."""
        return self.path / "input.npz"

    @property
    def runs(self) -> Path:
        """One run folder per member, named by its Optuna trial number."""
        return self.path / "members"

    @property
    def staging(self) -> Path:
        """Where a stage checkpoint is assembled before Tune persists it."""
        return self.path / "checkpoint-staging"


MEMBERS = "members.json"  # in a stage checkpoint: the Optuna trial numbers that go on
