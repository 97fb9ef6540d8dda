"""`resume=true` unpickles only Tune state that the sweep itself wrote (sweeps/trust.py).

A driver killed mid-sweep and resumed passes the check for both engines in test_sweeps.py
(population=1) and test_postgres.py (population=2): the record is never behind the folder.
"""
import json
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from ray.tune.utils.serialization import TuneFunctionDecoder, TuneFunctionEncoder

from sweeps import trust
from sweeps.results import EXPORTED, SUMMARY_CSV

from conftest import ROOT, run_sweep

pytestmark = pytest.mark.ray
SMALL_EXPORT = ["retrain_iter=2", "eval_samples=2", "export_samples=1"]


class Payload:
    """Unpickled, it creates `marker`: what a crafted state file would do with a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def swept(npz, tmp_path_factory):  # noqa: F811
    """A finished two-trial sweep, its record in a state folder of its own."""
    tmp = tmp_path_factory.mktemp("trust")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}
    out = run_sweep(npz, tmp, "name=t", "num_samples=2", *SMALL_EXPORT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, env


@pytest.fixture
def state_home(swept, monkeypatch):
    tmp, env = swept
    monkeypatch.setenv("XDG_STATE_HOME", env["XDG_STATE_HOME"])
    return tmp


def resume(tmp: Path, env: dict, name: str = "t", timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "sweeps/run.py", f"name={name}", f"results_dir={tmp / 'results'}",
                          f"export_dir={tmp / 'exports'}", "num_cpus=2", "resume=true"],
                         cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    print(out.stdout[-3000:], out.stderr[-3000:])
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def newest(sweep: Path, pattern: str) -> Path:
    return max(sweep.glob(pattern))  # Tune's choice: the newest session's name


def record_of(tmp: Path, sweep: Path) -> Path:
    """The sweep's record among those in the test's state folder."""
    [record] = [p for p in (tmp / "state" / "ganimator" / "sweeps").glob("*.json")
                if json.loads(p.read_text())["sweep"] == str(sweep)]
    return record


def assert_refused(out: subprocess.CompletedProcess, name: str) -> None:
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()  # one line, and nothing else
    assert line.startswith("error: refusing to load ") and name in line


def test_a_sweep_records_its_state_and_resumes_from_it(state_home):
    tmp = state_home
    sweep = tmp / "results" / "t"
    trust.verify(str(sweep))  # every state file of the finished sweep is one it wrote
    record = record_of(tmp, sweep)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    recorded = json.loads(record.read_text())["files"]
    assert {"tuner.pkl", "sweep-args.json"} <= set(recorded)
    assert newest(sweep, "experiment_state-*.json").name in recorded
    assert newest(sweep, "basic-variant-state-*.json").name in recorded  # the grid of Ray trials

    # As a driver killed while exporting leaves it: Tune done, the exports not (a finished sweep
    # resumes to nothing, test_sweeps.py). Resume then restores Tune and exports again.
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{sweep / 'optuna.db'}")
    study.set_user_attr(EXPORTED, None)
    (tmp / "exports" / "t" / SUMMARY_CSV).unlink()
    sessions = len(list(sweep.glob("experiment_state-*.json")))
    out = resume(tmp, dict(os.environ, XDG_STATE_HOME=str(tmp / "state")))
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list(sweep.glob("experiment_state-*.json"))) == sessions + 1
    trust.verify(str(sweep))  # what the resumed run wrote is recorded too: it can resume again
    assert (tmp / "exports" / "t" / SUMMARY_CSV).is_file() and optuna.load_study(
        study_name="t", storage=f"sqlite:///{sweep / 'optuna.db'}").user_attrs[EXPORTED] == str(tmp / "exports" / "t")


def test_a_crafted_tuner_pkl_is_refused_before_it_is_unpickled(swept):
    tmp, env = swept
    sweep, marker = tmp / "results" / "t", tmp / "payload-ran"
    crafted = pickle.dumps(Payload(marker))
    pickle.loads(crafted)  # the payload works: unpickled, it runs
    assert marker.exists()
    marker.unlink()

    original = (sweep / "tuner.pkl").read_bytes()
    (sweep / "tuner.pkl").write_bytes(crafted)
    before = snapshot(tmp)
    try:
        out = resume(tmp, env, timeout=300)
        assert_refused(out, f"{sweep}/tuner.pkl")
        assert not marker.exists()
        assert snapshot(tmp) == before  # nothing written, nothing changed, the record included
    finally:
        (sweep / "tuner.pkl").write_bytes(original)


def test_a_planted_newer_experiment_state_is_refused(swept):
    """Tune restores from the experiment state with the newest name; one planted beside the sweep's."""
    tmp, env = swept
    sweep, marker = tmp / "results" / "t", tmp / "payload-ran"
    planted = sweep / "experiment_state-2999-01-01_00-00-00.json"
    crafted = json.dumps({"trial_data": [], "runner_data": {"x": Payload(marker)}, "stats": {}},
                         cls=TuneFunctionEncoder)  # a cloudpickled field, as Tune writes them
    TuneFunctionDecoder(allow_cloudpickle=True).decode(crafted)  # as Tune reads them: the payload runs
    assert marker.exists()
    marker.unlink()
    planted.write_text(crafted)
    before = snapshot(tmp)
    try:
        out = resume(tmp, env, timeout=300)
        assert_refused(out, str(planted))
        assert not marker.exists()
        assert snapshot(tmp) == before
    finally:
        planted.unlink()


@pytest.mark.parametrize("pattern", ["basic-variant-state-*.json", "experiment_state-*.json"])
def test_each_state_file_of_the_sweep_is_checked(state_home, pattern):
    tmp = state_home
    sweep, marker = tmp / "results" / "t", tmp / "payload-ran"
    target = newest(sweep, pattern)
    original = target.read_bytes()
    target.write_bytes(pickle.dumps(Payload(marker)))
    try:
        refused = f"refusing to load {re.escape(str(target))}: it is not a file this sweep wrote"
        with pytest.raises(trust.UntrustedState, match=refused):
            trust.verify(str(sweep))
        assert not marker.exists()
    finally:
        target.write_bytes(original)
    trust.verify(str(sweep))


def test_a_state_file_planted_under_a_new_name_or_as_a_folder_is_refused(state_home):
    tmp = state_home
    sweep = tmp / "results" / "t"
    for planted in (sweep / "searcher-state-2999-01-01_00-00-00.pkl", sweep / "callback-states-x.pkl"):
        planted.write_bytes(pickle.dumps(Payload(tmp / "payload-ran")))
        try:
            with pytest.raises(trust.UntrustedState, match=re.escape(str(planted))):
                trust.verify(str(sweep))
        finally:
            planted.unlink()
    folder = sweep / "basic-variant-state-x.json"
    folder.mkdir()
    try:
        with pytest.raises(trust.UntrustedState, match=re.escape(str(folder))):
            trust.verify(str(sweep))
    finally:
        folder.rmdir()
    (sweep / "tmp-searcher-state-x.pkl").write_bytes(b"")  # Tune's temporaries match nothing it loads
    try:
        trust.verify(str(sweep))
    finally:
        (sweep / "tmp-searcher-state-x.pkl").unlink()


def test_the_saved_arguments_are_read_only_as_written(state_home):
    """`sweep-args.json` steers a resumed sweep (its cluster address, where it writes): checked as read."""
    tmp = state_home
    sweep = tmp / "results" / "t"
    args = sweep / "sweep-args.json"
    original = args.read_bytes()
    assert trust.read(str(sweep), "sweep-args.json") == original
    args.write_text(json.dumps([*json.loads(original), "address=ray://elsewhere:10001"]))
    try:
        with pytest.raises(trust.UntrustedState, match="sweep-args.json"):
            trust.read(str(sweep), "sweep-args.json")
    finally:
        args.write_bytes(original)


def test_a_record_that_others_can_write_vouches_for_nothing(state_home):
    tmp = state_home
    record = record_of(tmp, tmp / "results" / "t")
    record.chmod(0o666)
    try:
        with pytest.raises(trust.UntrustedState, match="writable by this user alone"):
            trust.verify(str(tmp / "results" / "t"))
    finally:
        record.chmod(0o600)


def test_a_sweep_without_a_record_is_refused_until_vouched_for(state_home, tmp_path, capsys):
    """A copy (or a sweep from before the check) has no record: `python -m sweeps.trust accept` gives it one."""
    copy = tmp_path / "t"
    shutil.copytree(state_home / "results" / "t", copy, ignore=shutil.ignore_patterns("train_trial_*"))
    with pytest.raises(trust.UntrustedState, match=f"no sweep of this user on this machine recorded .*"
                                                   f"python -m sweeps.trust accept {re.escape(str(copy))}"):
        trust.verify(str(copy))
    assert trust.main(["accept", str(copy)]) == 0
    assert "tuner.pkl" in capsys.readouterr().out
    trust.verify(str(copy))
