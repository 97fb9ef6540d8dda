"""`resume=true` reads the sweep's Optuna study and its stage checkpoints, never Tune's saved state:
no file of a results folder can run code. A killed sweep resumed with every Tune state file
replaced by a pickle that would run code is test_sweeps.py's (SQLite, population=1); a killed
population sweep resumed from its stage checkpoints is test_postgres.py's (PostgreSQL)."""
import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.utils.serialization import TuneFunctionDecoder

from ganimator.config import ConfigError
from sweeps.paths import ARGS, SweepPaths, checkpoint_name, saved_args
from sweeps.results import BATCH, CHECKPOINT, EXPORTED, unfinished_batches
from sweeps.trainable import batches, recorded_checkpoint

from conftest import ROOT, Payload, plant_payloads, run_sweep

SMALL_EXPORT = ["retrain_iter=2", "eval_samples=2", "export_samples=1"]


def resume(tmp: Path, name: str = "t", timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "sweeps/run.py", f"name={name}", f"results_dir={tmp / 'results'}",
                          f"export_dir={tmp / 'exports'}", "num_cpus=2", "resume=true"],
                         cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(out.stdout[-3000:], out.stderr[-3000:])
    return out


@pytest.mark.ray
def test_a_sweep_killed_while_exporting_resumes_from_its_study_and_loads_no_tune_state(npz, tmp_path):
    out = run_sweep(npz, tmp_path, "name=t", "num_samples=2", *SMALL_EXPORT)
    assert out.returncode == 0, out.stderr[-3000:]
    paths = SweepPaths(str(tmp_path / "results"), "t", tmp_path / "exports")

    # As a driver killed while exporting leaves it: every configuration told, the exports not
    # written (a finished sweep resumes to nothing, test_sweeps.py). And every file Tune would
    # load on a restore is one that runs code.
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload works: unpickled, it runs
    assert marker.exists()
    marker.unlink()
    planted = plant_payloads(Path(paths.sweep), marker)
    TuneFunctionDecoder(allow_cloudpickle=True).decode(planted[-1].read_text())  # as Tune reads its JSON state
    assert marker.exists()
    marker.unlink()
    study = optuna.load_study(study_name="t", storage=paths.storage)
    study.set_user_attr(EXPORTED, None)
    paths.summary_csv.unlink()
    tune_runs = sorted(Path(paths.sweep).glob("train_trial_*"))

    out = resume(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not marker.exists()  # nothing of Tune's was loaded
    assert sorted(Path(paths.sweep).glob("train_trial_*")) == tune_runs  # every batch is done: nothing trained
    assert paths.summary_csv.is_file() and optuna.load_study(
        study_name="t", storage=paths.storage).user_attrs[EXPORTED] == str(paths.exports)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def test_resume_trains_the_batches_with_configurations_running_or_unasked():
    study = optuna.create_study(direction="maximize")
    for batch, states in enumerate([[TrialState.COMPLETE, TrialState.PRUNED], [TrialState.COMPLETE, None],
                                    [TrialState.FAIL]]):  # batch 3 never asked anything
        for state in states:
            trial = study.ask()
            trial.set_user_attr(BATCH, batch)
            if state is not None:
                study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    assert unfinished_batches(study, batches(7, 2)) == [1, 2, 3]  # sizes 2, 2, 2, 1: batch 2 lacks one
    assert unfinished_batches(study, batches(5, 2)) == [1]  # sizes 2, 2, 1


def test_a_batch_continues_from_the_newest_checkpoint_its_members_record(tmp_path):
    paths = SweepPaths(str(tmp_path / "results"), "t", tmp_path / "exports")
    study = optuna.create_study(direction="maximize")
    first = f"{paths.sweep}/train_trial_a1b2c_00000_0_batch=0_2026-12-06_12-00-00/checkpoint_000002"
    again = f"{paths.sweep}/train_trial_d3e4f_00000_0_batch=0_2026-12-06_13-00-00/checkpoint_000000"
    for stages, path in [(3, first), (4, again)]:  # the second from a Tune run that resumed it
        trial = study.ask()
        trial.set_user_attr(BATCH, 0)
        trial.set_user_attr(CHECKPOINT, {"path": checkpoint_name(path), "stages_done": stages})
    assert recorded_checkpoint(study, 0, paths).path == again
    assert recorded_checkpoint(study, 1, paths) is None


@pytest.mark.parametrize("recorded", ["../../elsewhere/checkpoint_000001", "/etc/checkpoint_000001",
                                      "train_trial_x/../../checkpoint_000001", "train_trial_x/params.pkl"])
def test_the_study_can_name_no_checkpoint_outside_the_sweep_folder(tmp_path, recorded, capsys):
    paths = SweepPaths(str(tmp_path / "results"), "t", tmp_path / "exports")
    with pytest.raises(ValueError, match="not a checkpoint folder of a Ray trial"):
        paths.checkpoint(recorded)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.set_user_attr(BATCH, 0)
    trial.set_user_attr(CHECKPOINT, {"path": recorded, "stages_done": 1})
    assert recorded_checkpoint(study, 0, paths) is None  # the batch starts again from scratch, and says so
    assert "starts again from scratch" in capsys.readouterr().err


def test_saved_arguments_that_are_not_a_list_of_strings_are_one_line(tmp_path):
    for text in ("{not json", '{"address": "ray://elsewhere"}', '["name=t", 3]'):
        (tmp_path / ARGS).write_text(text)
        with pytest.raises(ConfigError, match=f"{tmp_path / ARGS}: not a sweep's saved arguments"):
            saved_args(tmp_path / ARGS)
    (tmp_path / ARGS).write_text('["name=t", "num_samples=2"]')
    assert saved_args(tmp_path / ARGS) == ["name=t", "num_samples=2"]
