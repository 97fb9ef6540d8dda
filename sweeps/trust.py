"""What `resume=true` will unpickle: only Tune state that this user's own sweep wrote.

Tune's restore unpickles `tuner.pkl`, the newest `experiment_state-*.json` (cloudpickled fields),
the searcher's `searcher-state-*.pkl`, `search_gen_state-*.json` and `basic-variant-state-*.json`
(pickles despite the name) and, when a callback has state, `callback-states-*.pkl`. All of them
lie in the sweep's
folder under `results_dir`, which may be shared; whoever can write there could otherwise run code
as the user who resumes. Unpickling cannot be made safe, so the files are vouched for instead: a
ledger outside the results folder, in `$XDG_STATE_HOME/ganimator/sweeps/` (default
`~/.local/state`), writable by this user only, holds the SHA-256 of every state file the sweep
wrote, and resume refuses, before anything is unpickled, a folder whose top-level `.json` or
`.pkl` file has no recorded digest.

Digests are taken from the bytes the sweep itself produced, never read back from the results
folder (a file read back could already be someone else's): `tuner.pkl` is pickled again and
rewritten by `track`, `sweep-args.json` is written by `write`, and the rest are hashed in the
driver's own staging folder by `LedgerCallback`. Tune calls its `get_state` inside each
experiment save, after writing the experiment and searcher state there and before copying them
to the results folder: a driver killed at any moment leaves a ledger that already holds what the
results folder holds, save for the windows of milliseconds below.

The ledger may be ahead: the copy runs in the background and may lag several saves behind, so
each file keeps every digest since the version the results folder held at the last save, and
any of them is accepted (a rolled-back file is still one the sweep wrote). What a kill can leave
refused: a file caught half-copied (Tune could not load it either), a save overlapping a still
running copy of the previous one in the milliseconds before it is recorded, and a `tuner.pkl`
written by `tune.Tuner(...)` just before `track` records it. Tune's temporaries (`tmp-*`, `.*`)
match no name it loads and are ignored.

The check guards files at rest, between runs. Tune reads each file again after `verify`, and
reads back the `error.pkl` of a trial that failed in the run now ending, so someone writing in
the folder during a run or a resume is not defended against. Nothing else reads a sweep's Tune
state: ranking and `ganimator-compare` read its Optuna study. Remote folders (`s3://...`) are
checked the same way, against the ledger of the machine whose driver ran the sweep. A sweep
continued from elsewhere (a new head node) or written before this check has no ledger; a user
who trusts its folder vouches for it with `python -m sweeps.trust accept SWEEP_FOLDER`, which
records the folder as it is.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import pyarrow.fs
from ray import tune

from ganimator.config import ConfigError

KEEP = 1000  # digests a file keeps at most, should the results folder never be readable back


class UntrustedState(ConfigError):
    """Resume would unpickle a file the sweep did not write; the message names it."""


def begin(sweep_path: str) -> None:
    """A new sweep: forget any record of an earlier sweep in its folder."""
    fs, root = _location(sweep_path)
    _store(_key(fs, root), {"files": {}})


def write(sweep_path: str, name: str, data: bytes) -> None:
    """Write a top-level file of the sweep and record it, from the bytes written."""
    fs, root = _location(sweep_path)
    fs.create_dir(root)
    _write(fs, f"{root}/{name}", data)
    _record(fs, root, {name: (_digest(data), None)})


def read(sweep_path: str, name: str) -> bytes:
    """A top-level file of the sweep, once its bytes match the record; the bytes checked are the bytes returned."""
    fs, root = _location(sweep_path)
    data = _read(fs, f"{root}/{name}")
    record = _ledger_path(_key(fs, root))
    _check(sweep_path, record, _ledger(record), name, _digest(data))
    return data


def verify(sweep_path: str) -> None:
    """Raise `UntrustedState` unless every state file in the sweep's folder (every top-level `.json`
    and `.pkl`) is one the sweep wrote."""
    fs, root = _location(sweep_path)
    record = _ledger_path(_key(fs, root))
    ledger = _ledger(record)
    for info in sorted(fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)), key=lambda i: i.path):
        if _is_state(info.base_name):
            _check(sweep_path, record, ledger, info.base_name, _file_digest(fs, info))


def accept(sweep_path: str) -> list[str]:
    """Vouch for the sweep's folder as it is now: record its state files (the names) as the sweep's own."""
    fs, root = _location(sweep_path)
    found = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        if _is_state(info.base_name) and info.type == pyarrow.fs.FileType.File:
            found[info.base_name] = _file_digest(fs, info)
    if not found:
        raise ConfigError(f"{sweep_path} holds no Tune state to vouch for")
    _store(_key(fs, root), {"files": {name: [digest] for name, digest in found.items()}})
    return sorted(found)


def track(tuner: tune.Tuner, sweep_path: str, new: bool) -> None:
    """Record, from now on, the Tune state this sweep writes; for a new sweep, also its `tuner.pkl`.

    Call it right after `tune.Tuner(...)` or `tune.Tuner.restore(...)`, before `fit`."""
    internal = getattr(tuner, "_local_tuner", None)  # None under Ray Client, where Tune runs remotely
    if internal is None:
        print("warning: under Ray Client the sweep's state is not recorded: resume=true will refuse it",
              file=sys.stderr)
        return
    run_config = internal.get_run_config()
    callback = next((c for c in run_config.callbacks or () if isinstance(c, LedgerCallback)), None)
    if callback is None:  # a sweep vouched for with `accept`, from before this check
        callback = LedgerCallback()
        run_config.callbacks = [*(run_config.callbacks or ()), callback]
    analysis = getattr(internal, "_experiment_analysis", None)  # the restored trials, for their storage
    if not new and analysis is not None and analysis.trials:
        # A resumed sweep whose trials had all ended saves once without taking a step, so without
        # telling a callback about a trial: this one's storage names the same staging folder.
        callback._storage = analysis.trials[0].storage
    if new:
        # Tune has written tuner.pkl already: write what it would write now, callback included, so
        # that the digest is of bytes the sweep made, not of whatever the shared folder holds.
        import ray.cloudpickle

        data = ray.cloudpickle.dumps(internal.__getstate__())
        fs, root = _location(sweep_path)
        _write(fs, f"{root}/tuner.pkl", data)
        _record(fs, root, {"tuner.pkl": (_digest(data), None)})


class LedgerCallback(tune.Callback):
    """Records each experiment save of this session, and each trial's `error.pkl`, as Tune writes them."""

    def __init__(self):
        self._trials: list = []
        self._storage = None  # a restored trial's StorageContext, until a step shows the live trials
        self._held: dict = {}  # file name -> ((size, mtime), digest) of the copy in the results folder
        self._warned = False

    def __reduce__(self):  # pickled into tuner.pkl without state: a restored sweep starts afresh
        return LedgerCallback, ()

    def on_step_begin(self, iteration, trials, **info):
        self._trials = trials  # Tune's own list: it grows as trials are added

    def get_state(self):
        # Tune calls this from its experiment save, after writing the experiment and searcher state
        # into the driver's staging folder and before copying them to the results folder.
        storage = self._trials[0].storage if self._trials else self._storage
        if storage is not None:
            self._guarded(self._record_save, storage)
        return None  # no callback-states file

    def _record_save(self, storage) -> None:
        staging = Path(storage.experiment_driver_staging_path)
        fs, root = storage.storage_filesystem, storage.experiment_fs_path
        # This session's files end in its session string, the newest: files downloaded from the
        # results folder on resume were vouched for then and are not the sweep's to record again.
        sessions = [n[len("experiment_state-"):-len(".json")] for n in os.listdir(staging)
                    if n.startswith("experiment_state-") and n.endswith(".json")]
        if not sessions:
            return
        session = max(sessions)  # the timestamp Tune names the newest by
        entries = {}
        for name in os.listdir(staging):
            if _is_state(name) and name.rpartition(".")[0].endswith(f"-{session}") and (staging / name).is_file():
                entries[name] = (_digest((staging / name).read_bytes()), self._held_digest(fs, f"{root}/{name}", name))
        _record(fs, root, entries)

    def _held_digest(self, fs, path: str, name: str) -> str | None:
        """The digest of the file the results folder holds now: the versions before it can go."""
        try:
            info = fs.get_file_info(path)
            if info.type != pyarrow.fs.FileType.File:
                return None
            mark = (info.size, info.mtime_ns)
            if self._held.get(name, (None,))[0] != mark:
                self._held[name] = (mark, _file_digest(fs, info))
            return self._held[name][1]
        except OSError:
            return None

    def _guarded(self, record, *args) -> None:
        try:
            record(*args)
        except Exception as e:  # a sweep that cannot record goes on, and cannot be resumed
            if not self._warned:
                self._warned = True
                print(f"warning: the sweep's state could not be recorded ({type(e).__name__}: {e}); "
                      "resume=true will refuse this sweep", file=sys.stderr)


def _is_state(name: str) -> bool:
    return name.endswith((".json", ".pkl")) and not name.startswith(("tmp-", "."))


def _location(sweep_path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in sweep_path:
        return pyarrow.fs.FileSystem.from_uri(sweep_path)  # as Tune resolves it
    return pyarrow.fs.LocalFileSystem(), os.path.realpath(sweep_path)


def _key(fs: pyarrow.fs.FileSystem, root: str) -> str:
    if fs.type_name == "local":
        return os.path.realpath(root)
    return f"{fs.type_name}://{root.rstrip('/')}"


def _ledger_path(key: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base, "ganimator", "sweeps", hashlib.sha256(key.encode()).hexdigest() + ".json")


def _ledger(path: Path) -> dict | None:
    """The sweep's record, or None if there is none; refused if others could have written it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UntrustedState(f"the sweep's record {path} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        for what, st in (("record", os.fstat(f.fileno())), ("record's folder", os.stat(path.parent))):
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UntrustedState(f"the sweep's {what} {path if what == 'record' else path.parent} is not "
                                     "writable by this user alone: it cannot vouch for the sweep")
        try:
            ledger = json.loads(f.read())
        except ValueError:
            ledger = None
    if not isinstance(ledger, dict) or not isinstance(ledger.get("files"), dict):
        raise UntrustedState(f"the sweep's record {path} is not a record this module wrote")
    return ledger


def _store(key: str, ledger: dict) -> None:
    """Replace the record atomically: a driver killed mid-write leaves the old one."""
    path = _ledger_path(key)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"sweep": key, **ledger}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _record(fs, root: str, entries: dict[str, tuple[str, str | None]]) -> None:
    """Add each file's new digest; with the digest the results folder holds now, drop older ones."""
    if not entries:
        return
    key = _key(fs, root)
    ledger = _ledger(_ledger_path(key)) or {"files": {}}
    files = ledger["files"]
    for name, (digest, held) in entries.items():
        kept = files.get(name, [])
        if held in kept:
            kept = kept[kept.index(held):]
        if not kept or kept[-1] != digest:
            kept.append(digest)
        files[name] = kept[-KEEP:]
    _store(key, ledger)


def _check(sweep_path: str, record: Path, ledger: dict | None, name: str, digest: str | None) -> None:
    where = f"{sweep_path.rstrip('/')}/{name}"
    if ledger is None:
        raise UntrustedState(
            f"refusing to load {where}: no sweep of this user on this machine recorded writing it (no record in "
            f"{record}), and a sweep's state can hold code that runs when it is loaded; if you trust every file "
            f"in that folder, vouch for it with: python -m sweeps.trust accept {sweep_path}")
    if digest is None or digest not in ledger["files"].get(name, ()):
        raise UntrustedState(
            f"refusing to load {where}: it is not a file this sweep wrote (someone else changed it, or a crash "
            f"cut it short), and a sweep's state can hold code that runs when it is loaded")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(fs, info: pyarrow.fs.FileInfo) -> str | None:
    if info.type != pyarrow.fs.FileType.File:
        return None  # a folder or anything else under a state file's name: never the sweep's
    h = hashlib.sha256()
    with fs.open_input_stream(info.path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _write(fs, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "accept":
        print("usage: python -m sweeps.trust accept SWEEP_FOLDER\n  records the Tune state in SWEEP_FOLDER as "
              "this user's own, so that resume=true loads it: only for a folder you trust", file=sys.stderr)
        return 2
    try:
        names = accept(argv[1])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"vouched for {len(names)} state files in {argv[1]}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
