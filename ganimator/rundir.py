"""The run folder: what a training run, a sweep trial or an export holds, and how it is read and written.

    runs/<name>/
      config.yaml      the resolved config, data.npz as its data
      data.npz         the training data, so the run never depends on the npz it started from
      checkpoint.pt    the newest state (written beside and renamed into place); an export's
                       holds the generators only (`make_checkpoint`)
      stage-K.pt       the state at the end of the last stage ended, kept for resume after a damaged
                       checkpoint.pt (only the last: each is a whole checkpoint, and a sweep keeps many runs)
      history.jsonl    one line per validation and stage end
      samples/         generated BVH and npz of a finished run
      review.rrd       a finished run's samples beside the clip, for the Rerun viewer
      validation.rrd   every validation's samples (tracking.rerun=true)
      evaluations.jsonl  one line per ganimator-evaluate
      metrics.json     an export's rank, parameters and per-seed evaluation (sweeps/export.py)
      .lock            held by the process training in it, with its PID

Every name lives here, so that the trainer, generation, review, tracking and the sweep agree.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import IO

import torch
from omegaconf import DictConfig, OmegaConf

from .files import atomic_write_text, replace_atomically
from .errors import UserError

CHECKPOINT_VERSION = 3  # 3: the original's channel layout and skeleton-aware networks
GENERATOR_ONLY = ("pyramid",)  # what generation reads of a member's state (generate.load_run)


def make_checkpoint(stage: int, iteration: int, step: int, member: dict, seconds: float = 0.0,
                    generators_only: bool = False) -> dict:
    """A checkpoint: where the schedule stands (with the training time a time budget counts) and a
    member's state (`Member.state_dict`), all of it (resume reads it) or only the generators (an
    export: generation reads no more)."""
    kept = {k: member[k] for k in GENERATOR_ONLY} if generators_only else member
    return {"version": CHECKPOINT_VERSION, "stage": stage, "iteration": iteration, "step": step, "seconds": seconds,
            **kept}


class CheckpointError(UserError, ValueError):
    """A checkpoint or history that cannot be read; the message names the file."""


class RunInUse(UserError, RuntimeError):
    """Another live process trains in the run folder."""


class RunDir:
    CHECKPOINT = "checkpoint.pt"
    CONFIG = "config.yaml"
    DATA = "data.npz"
    HISTORY = "history.jsonl"
    SAMPLES = "samples"
    REVIEW = "review.rrd"
    EVALUATIONS = "evaluations.jsonl"
    METRICS = "metrics.json"
    TRAJECTORY_RUN = "trajectory-run"
    LOCK = ".lock"  # held by the process training in the folder (RunDir.hold)

    def __init__(self, path):
        self.path = Path(path)
        self.checkpoint = self.path / self.CHECKPOINT
        self.config = self.path / self.CONFIG
        self.data = self.path / self.DATA
        self.history = self.path / self.HISTORY
        self.samples = self.path / self.SAMPLES
        self.review = self.path / self.REVIEW
        self.evaluations = self.path / self.EVALUATIONS
        self.metrics = self.path / self.METRICS
        self.trajectory_run = self.path / self.TRAJECTORY_RUN

    def stage_file(self, stage: int) -> Path:
        """The checkpoint kept at the end of 1-based `stage`."""
        return self.path / f"stage-{stage}.pt"

    def stage_files(self) -> list[Path]:
        """Kept stage checkpoints, newest stage first."""
        return sorted(self.path.glob("stage-*.pt"), key=lambda p: int(p.stem.split("-")[1]), reverse=True)

    # ---- a new run ----------------------------------------------------------------------

    def create(self, cfg: DictConfig, dataset) -> IO:
        """A new run: the folder must be new or empty; it gets the config (reading its own data) and
        the data. Returns the folder's lock (`hold`), taken before anything is written: of two runs
        started at once on one folder, the second is refused with nothing of its own written."""
        from .config import to_yaml

        if self.checkpoint.exists():
            raise FileExistsError(f"{self.path} already holds a run; pass resume=true to continue it "
                                  "or choose another run_dir")
        if not new_or_empty(self.path):
            raise FileExistsError(f"run_dir {self.path} exists and is not empty: a new run needs a new or empty folder")
        self.path.mkdir(parents=True, exist_ok=True)
        held = self.hold()
        try:
            if not new_or_empty(self.path):  # another run took it between the check and the lock
                raise FileExistsError(f"run_dir {self.path} was just taken by another run: choose another run_dir")
            own = OmegaConf.merge(cfg, {"data": {"npz_filename": self.DATA}, "util": {"resume": False}})
            self.config.write_text(to_yaml(own))
            dataset.save(self.data)
        except BaseException:
            held.close()
            raise
        return held

    def keep_trajectory_run(self, source) -> None:
        """A conditional run's own copy of the run its trajectories come from (its config, data and
        checkpoint), so that the folder needs nothing else, wherever it goes."""
        self.trajectory_run.mkdir()
        for name in (self.CONFIG, self.DATA, self.CHECKPOINT):
            shutil.copyfile(RunDir(source).path / name, self.trajectory_run / name)

    # ---- checkpoints --------------------------------------------------------------------

    def save(self, state: dict, stage: int | None = None) -> Path:
        """`state` as checkpoint.pt, and as stage-K.pt too at the end of 1-based `stage`, in place of
        the stage file before it; returns the file that holds exactly this state (the stage file when
        there is one)."""
        replace_atomically(self.checkpoint, lambda tmp: torch.save(state, tmp))
        if stage is None:
            return self.checkpoint
        kept = self.stage_file(stage)
        replace_atomically(kept, lambda tmp: shutil.copyfile(self.checkpoint, tmp))
        for older in self.stage_files():  # removed only once the new one is whole
            if older != kept:
                older.unlink()
        return kept

    def generator_checkpoint(self) -> bytes:
        """checkpoint.pt as an export ships it: the generators only, as the bytes of a checkpoint file."""
        state = load_checkpoint_file(self.checkpoint)
        buffer = io.BytesIO()
        torch.save(make_checkpoint(state["stage"], state["iteration"], state["step"], state, state.get("seconds", 0.0),
                                   generators_only=True), buffer)
        return buffer.getvalue()

    def newest_state(self) -> tuple[Path, dict]:
        """checkpoint.pt, or when it is damaged (truncated, corrupt, of another version) the readable
        stage-K.pt, with a warning naming what was skipped."""
        if not self.checkpoint.exists():
            raise FileNotFoundError(f"resume=true but {self.checkpoint} does not exist")
        errors = []
        for path in [self.checkpoint, *self.stage_files()]:
            try:
                state = load_checkpoint_file(path)
            except CheckpointError as e:
                errors.append(str(e))
                continue
            if errors:  # a finished run trains no further: checkpoint.pt must be whole for generation now
                replace_atomically(self.checkpoint, lambda tmp: shutil.copyfile(path, tmp))
                print(f"warning: {'; '.join(errors)}; resuming from {path} (now also {self.CHECKPOINT})",
                      file=sys.stderr)
            return path, state
        raise CheckpointError("; ".join(errors) + f" (and no readable stage checkpoint in {self.path})")

    # ---- one process at a time -----------------------------------------------------------

    def hold(self) -> IO:
        """Hold the folder for this process until the returned file is closed: a second process
        training or resuming in it meanwhile is refused. The kernel drops the lock when its holder
        dies, so the folder of a killed run is free again at once."""
        f = open(self.path / self.LOCK, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise RunInUse(f"run_dir {self.path} is in use by {f'process {holder}' if holder else 'another process'}"
                           " training in it: wait for it to end, or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        return f

    # ---- history ------------------------------------------------------------------------

    def append_event(self, record: dict) -> None:
        with open(self.history, "a") as f:
            f.write(json.dumps(record) + "\n")

    def events(self) -> list[dict]:
        return [event for _, event in read_history(self.history)] if self.history.exists() else []

    def keep_history_until(self, step: int) -> None:
        """Drop events after `step`: a resumed run repeats them from its checkpoint."""
        if self.history.exists():
            kept = [line for line, event in read_history(self.history) if event["step"] <= step]
            atomic_write_text(self.history, "".join(kept))


def new_or_empty(folder: Path) -> bool:
    """Whether `folder` may take new output: it does not exist, or is an empty folder (a run
    folder's lock alone, left by a run refused or killed before it wrote anything, counts as empty)."""
    return not folder.exists() or (folder.is_dir() and all(p.name == RunDir.LOCK for p in folder.iterdir()))


def read_history(path: Path) -> list[tuple[str, dict]]:
    """history.jsonl as (line, event) pairs. A torn last line is what a crash leaves: it is dropped
    with a warning. Anything else unreadable is a one-line error naming the line."""
    try:
        lines = path.read_bytes().decode().splitlines(keepends=True)
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {e.start})") from None
    events = []
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("step"), int):
                raise ValueError("no integer 'step'")
        except ValueError as e:
            if number == len(lines) and not line.endswith("\n"):
                print(f"warning: {path}:{number}: dropped a torn last line (the run was interrupted while writing it)",
                      file=sys.stderr)
                break
            raise CheckpointError(f"{path}:{number}: not a history event ({e}); remove or fix the line") from None
        events.append((line if line.endswith("\n") else line + "\n", event))
    return events


# What torch.load raises for a file that is not a whole checkpoint: truncated or corrupt zip
# archives (RuntimeError from its reader, BadZipFile, EOFError), bytes that are not a pickle, and
# a pickle that weights_only refuses. Anything else (a folder in its place, no permission, no
# memory) is not a damaged file and must not send resume back to an older stage.
DAMAGED = (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, UnicodeDecodeError, ValueError)


def load_checkpoint_file(path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except DAMAGED as e:
        raise CheckpointError(f"{path}: not a readable ganimator checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a ganimator checkpoint of version {CHECKPOINT_VERSION}")
    return state


@contextlib.contextmanager
def checkpoint_fits(path):
    """A readable checkpoint of another clip, rig or network width is one line, not torch's page."""
    try:
        yield
    except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        detail = lines[1] if len(lines) > 1 else lines[0]  # torch's first line only names the module
        raise CheckpointError(f"{path}: does not fit this run's model and data ({detail})") from None
