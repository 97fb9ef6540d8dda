"""Faults on a real local multi-node Ray cluster (cluster/local.py: a head without CPUs and two
1-CPU worker nodes on 127.0.0.1), each injected from outside into a real sweep run as users run
it. The scenarios are benchmarks/faults.py's; here their outcomes are checked. The driver killed
and resumed, and a diverging trial, are tested in test_sweeps.py. About 3.5 minutes on 2 cores.
"""
import importlib.util
import sys

import optuna
import pytest

from ganimator.dataset import MotionDataset

from conftest import ROOT


def load_faults():
    spec = importlib.util.spec_from_file_location("gs_faults", ROOT / "benchmarks" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


faults = load_faults()


@pytest.fixture(scope="module")
def npz(clip, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "proud.npz"
    MotionDataset.from_bvh(clip("proud.bvh")).save(path)
    return path


def assert_accounted_for(outcome, trials: int):
    """Every trial started is in the summary and in the Optuna study once, finished or failed."""
    assert outcome.started == trials and outcome.lost == 0, [r["status"] for r in outcome.rows]
    assert sorted(outcome.study_ids()) == sorted(r["trial_id"] for r in outcome.rows)
    assert all(t.state.is_finished() for t in outcome.study)


def test_trials_on_a_killed_worker_node_continue_on_the_other_from_their_stage_checkpoint(npz, tmp_path):
    outcome = faults.run_fault("worker-node", npz, tmp_path)
    assert_accounted_for(outcome, 4)
    assert outcome.finished == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in outcome.study)
    for trial in outcome.restored():  # continued, not started over: the first report after the restart
        results = outcome.results[trial]  # counts on from the stage checkpoint it restored
        first = next(r for r in results if r["iterations_since_restore"] < r["training_iteration"])
        assert first["stages_done"] >= 1 and len({r["pid"] for r in results}) == 2
    assert outcome.restored()


def test_a_killed_trial_is_retried_until_max_failures_then_fails_with_the_error(npz, tmp_path):
    # max_failures=2: the trial is killed, then each of its two retries as soon as it starts.
    outcome = faults.run_fault("trial-process", npz, tmp_path, trials=2, kills=3)
    assert_accounted_for(outcome, 2)
    assert outcome.finished == 1 and len(outcome.failed) == 1
    assert outcome.failed[0].startswith("error:") and "worker process has died" in outcome.failed[0]
    failed = next(r["trial_id"] for r in outcome.rows if r["status"].startswith("error"))
    assert outcome.log.count(f"Trial train_trial_{failed} errored after") == 3  # tried 1 + max_failures times
    states = {t.user_attrs["tune_trial_id"]: t.state for t in outcome.study}
    assert states[failed] == optuna.trial.TrialState.FAIL


def test_a_truncated_checkpoint_is_named_and_the_trial_continues_from_the_one_before(npz, tmp_path):
    # The trial's process is killed, its newest checkpoint truncated: Tune's retry must skip it.
    outcome = faults.run_fault("corrupt-checkpoint", npz, tmp_path)
    assert_accounted_for(outcome, 4)
    assert outcome.finished == 4
    assert "not a readable ganimator checkpoint" in outcome.log and "trying the one before it" in outcome.log
    [trial] = outcome.restored()
    results = outcome.results[trial]
    restart = next(i for i, r in enumerate(results) if r["iterations_since_restore"] < r["training_iteration"])
    # The newest checkpoint was of stage 2; the trial restored stage 1's and trained stage 2 again.
    assert max(r["stages_done"] for r in results[:restart]) == 2
    assert results[restart]["stages_done"] == 1
    assert [r["stages_done"] for r in results[restart:]].count(2) >= 1


def test_populations_on_a_killed_worker_node_continue_from_their_stage_checkpoint(npz, tmp_path):
    # Four configurations, two to a Tune trial: one population on each worker node.
    outcome = faults.run_fault("worker-node", npz, tmp_path, population=2)
    assert_accounted_for(outcome, 4)
    assert outcome.finished == 4 and len(outcome.study) == 4  # no configuration asked twice
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in outcome.study)
    [trial] = outcome.restored()
    results = outcome.results[trial]
    first = next(r for r in results if r["iterations_since_restore"] < r["training_iteration"])
    assert first["stages_done"] >= 2 and first["members"] == 2 and len({r["pid"] for r in results}) == 2
