"""Faults on a real local multi-node Ray cluster (cluster/devcluster: a head without CPUs and two
1-CPU worker nodes on 127.0.0.1), each injected from outside into a real sweep run as users run
it. The scenarios are cluster/faults.py's; here their outcomes are checked. The driver killed
and resumed, and a diverging trial, are tested in test_sweeps.py. About 3.5 minutes on 2 cores.
"""
import optuna
import pytest

from cluster import faults
from sweeps.results import TUNE_ID

from conftest import assert_accounted_for

pytestmark = pytest.mark.ray


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
    assert outcome.failed[0].startswith("failed: its Ray trial ended with an error")
    assert "worker process has died" in outcome.failed[0]
    failed = next(r["trial_id"] for r in outcome.rows if r["status"].startswith("failed"))
    tune_id = failed.rpartition("-")[0]
    assert outcome.log.count(f"Trial train_trial_{tune_id} errored after") == 3  # tried 1 + max_failures times
    [state] = [t.state for t in outcome.study if t.user_attrs[TUNE_ID] == tune_id]
    assert state == optuna.trial.TrialState.FAIL


def test_a_truncated_checkpoint_is_named_and_the_trial_continues_from_the_one_before(npz, tmp_path):
    # The trial's process is killed, its newest checkpoint truncated: Tune's retry must skip it.
    outcome = faults.run_fault("corrupt-checkpoint", npz, tmp_path)
    assert_accounted_for(outcome, 4)
    assert outcome.finished == 4
    assert "not a readable ganimator checkpoint" in outcome.log and "trying the one before it" in outcome.log
    [trial] = outcome.restored()
    results = outcome.results[trial]
    restart = next(i for i, r in enumerate(results) if r["iterations_since_restore"] < r["training_iteration"])
    # The newest checkpoint was of stage 2; the trial restored stage 1's and trained stage 2 again
    # (a Ray trial reports at stage ends: from scratch its first report would be stage 1's, from
    # stage 2's checkpoint stage 3's).
    assert max(r["stages_done"] for r in results[:restart]) == 2
    assert results[restart]["stages_done"] == 2


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
