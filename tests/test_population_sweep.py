"""Population sweeps: Ray trials that train several Optuna suggestions fused, on a real local Ray."""
import json
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from ganimator.config import ConfigError
from sweeps.config import load_sweep_config
from sweeps.population import BATCH, batches, close_orphans, member_trials, study_rows
from sweeps.search import TUNE_ID
from sweeps.space import load_space

from conftest import ROOT, artifacts, clean_env, offline_sessions
from test_sweeps import EXPORT, npz, read_summary, run_sweep  # noqa: F401 (npz is a fixture)

SPACE = load_space(ROOT / "sweeps" / "space.yaml")


@pytest.fixture(scope="module")
def fused(npz, tmp_path_factory):  # noqa: F811
    """Five configurations, four to a Ray trial, one Ray trial at a time; ClearML offline."""
    tmp = tmp_path_factory.mktemp("fused")
    out = run_sweep(npz, tmp, "name=fused", "num_samples=5", "population=4", "max_concurrent=1",
                    "clearml=offline", *EXPORT, env=clean_env(tmp))
    assert out.returncode == 0, out.stderr[-3000:]
    storage = f"sqlite:///{tmp / 'results' / 'fused' / 'optuna.db'}"
    return tmp, out, optuna.load_study(study_name="fused", storage=storage).get_trials(deepcopy=False)


def test_each_member_is_its_own_optuna_trial_and_weak_members_stop_while_the_rest_train(fused):
    tmp, out, trials = fused
    assert len(trials) == 5 and len({tuple(sorted(t.params.items())) for t in trials}) == 5
    assert trials[0].params == pytest.approx(SPACE.defaults())
    tune_ids = [t.user_attrs[TUNE_ID] for t in trials]
    assert [tune_ids.count(i) for i in dict.fromkeys(tune_ids)] == [4, 1]  # batches of 4, then the rest
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}

    first_batch = [t for t in trials if t.user_attrs[TUNE_ID] == tune_ids[0]]
    pruned = [t for t in first_batch if t.state == TrialState.PRUNED]
    assert pruned and any(t.state == TrialState.COMPLETE for t in first_batch), \
        "the first population should lose a member to successive halving and finish with the others"
    for t in pruned:  # scores reported at stage ends, the last one where the member stopped
        stages = t.user_attrs["metrics"]["stages_done"]
        assert sorted(t.intermediate_values) == list(range(1, stages + 1)) and stages < 4
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(t.user_attrs["metrics"]["score"])

    rows = read_summary(tmp, "fused")
    assert len(rows) == 5
    for r in rows:  # an early stop falls on a stage boundary and saves that member's iterations
        if r["status"].startswith("stopped"):
            assert int(r["steps"]) == int(r["stages_done"]) * 4 < 16
    assert rows[0]["status"] == "finished" and (tmp / "exports" / "fused" / "1" / "checkpoint.pt").is_file()
    assert "configurations a Ray trial" in out.stdout and "population of 4" in out.stdout + out.stderr


def test_population_checkpoints_name_the_members_that_go_on(fused):
    tmp, _, trials = fused
    first = trials[0].user_attrs[TUNE_ID]
    trial_dir = next((tmp / "results" / "fused").glob(f"*{first}*"))
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["stages_done"] for r in results] == [1, 2, 3, 4]
    members = [r["members"] for r in results]
    assert members == sorted(members, reverse=True) and members[0] <= 4  # the batch shrinks
    for checkpoint in trial_dir.glob("checkpoint_*"):
        going_on = json.loads((checkpoint / "members.json").read_text())
        assert going_on and all((checkpoint / str(n) / "checkpoint.pt").is_file() for n in going_on)


def test_members_are_clearml_tasks_under_the_sweep(fused):
    tmp, _, trials = fused
    sessions = offline_sessions(tmp / "clearml")
    [sweep] = [s["task"] for s in sessions if s["task"]["type"] == "optimizer"]
    members = {s["task"]["name"].rpartition("-")[2]: s for s in sessions if "trial" in s["task"]["tags"]}
    assert sorted(members) == sorted(str(t.number) for t in trials)
    for t in trials:
        task = members[str(t.number)]["task"]
        assert task["parent"] == sweep["id"]
        searched = {k: float(v["value"]) for k, v in task["hyperparams"]["search"].items()}
        assert searched == pytest.approx({k: float(v) for k, v in t.params.items()})
        steps, score = members[str(t.number)]["scalars"]["objective", "score"][-1]
        assert steps == t.user_attrs["metrics"]["step"] and score == pytest.approx(t.user_attrs["metrics"]["score"])
        stages = members[str(t.number)]["scalars"]["progress", "stages done"]
        assert stages[-1][1] == t.user_attrs["metrics"]["stages_done"]
        # A finished member's task holds its generated motion; a pruned one's ends where it stopped.
        assert ("review.rrd" in artifacts(task)) == (t.state == TrialState.COMPLETE)


def test_compare_ranks_a_population_sweep_from_its_study(fused, tmp_path):
    tmp, _, trials = fused
    out = subprocess.run([sys.executable, "sweeps/compare.py", "fused", "--results-dir", str(tmp / "results"),
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=clean_env(tmp))
    assert out.returncode == 0, out.stderr
    summary = [r["trial_id"] for r in read_summary(tmp, "fused")]
    assert [line.split()[1] for line in out.stdout.splitlines()[2:2 + len(summary)]] == summary


def test_a_restarted_population_takes_back_its_own_trials_and_asks_nothing_twice():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(SPACE.defaults())
    asked = member_trials(study, "a", 3, SPACE, going_on=None)
    assert len(asked) == 3 and asked[0].params == pytest.approx(SPACE.defaults())
    member_trials(study, "b", 2, SPACE, going_on=None)  # another Ray trial's members are not ours

    # Killed before its first checkpoint: the same trials again, nothing new asked.
    again = member_trials(study, "a", 3, SPACE, going_on=None)
    assert [t.number for t in again] == [t.number for t in asked] and len(study.trials) == 5

    # Restarted from a checkpoint after one member was pruned and another told after it: the
    # checkpoint's members that still run, and the freed slot is not refilled.
    study.tell(asked[1], state=TrialState.PRUNED)
    restored = member_trials(study, "a", 3, SPACE, going_on=[t.number for t in asked])
    assert [t.number for t in restored] == [asked[0].number, asked[2].number] and len(study.trials) == 5


ASKER = r"""
import json, sys, time
from omegaconf import OmegaConf
from sweeps.config import SweepConfig
from sweeps.population import member_trials
from sweeps.search import StudySpec
from sweeps.space import load_space

storage, tune_id, start, locked = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
spec = StudySpec("race", storage, OmegaConf.structured(SweepConfig))
study = spec.load()
space = load_space("sweeps/space.yaml")
time.sleep(max(0.0, start - time.time()))  # every asker at once
trials = member_trials(study, tune_id, 3, space, None, spec.asking if locked else __import__("contextlib").nullcontext)
print(json.dumps([t.number for t in trials]))
"""


def concurrent_asks(tmp_path, locked: bool) -> tuple[list[list[int]], dict[int, str]]:
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(storage=storage, study_name="race", direction="maximize")
    for _ in range(8):  # what every asker tries to pop first
        study.enqueue_trial(SPACE.defaults())
    start = time.time() + 6  # after every asker has imported optuna
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, storage, f"t{k}", str(start), str(int(locked))], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for k in range(4)]
    claimed = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    owners = {t.number: t.user_attrs.get(TUNE_ID) for t in study.get_trials(deepcopy=False) if t.user_attrs}
    return claimed, owners


def test_concurrent_populations_never_claim_the_same_enqueued_trial(tmp_path):
    # SQLite ignores Optuna's SELECT ... FOR UPDATE: without StudySpec.asking, two askers may pop
    # one WAITING trial (a configuration trained twice, another never asked).
    claimed, owners = concurrent_asks(tmp_path, locked=True)
    numbers = [n for c in claimed for n in c]
    assert len(numbers) == 12 and len(set(numbers)) == 12, claimed
    assert all(owners[n] == f"t{k}" for k, c in enumerate(claimed) for n in c)


def test_only_members_of_errored_ray_trials_are_closed_as_failed():
    study = optuna.create_study(direction="maximize")
    for batch, tune_id in enumerate("ab"):  # a errored past its retries; b was interrupted (Ctrl-C)
        for t in member_trials(study, tune_id, 2, SPACE, going_on=None):
            t.set_user_attr(BATCH, batch)
    assert close_orphans(study, {0: RuntimeError("Traceback (most recent call last):\n  ...\nRuntimeError: boom")}) == 2
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL] * 2 + [TrialState.RUNNING] * 2
    rows = study_rows(study, list(SPACE), pareto=False)
    assert sorted(r.status for r in rows) == ["failed: its Ray trial ended with an error: RuntimeError: boom"] * 2 + \
        ["unfinished (resume=true continues it)"] * 2


def test_population_batches_and_ranking_cover_every_configuration():
    assert [b["members"] for b in batches(10, 4)] == [4, 4, 2]
    assert [b["members"] for b in batches(3, 8)] == [3]
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(SPACE.defaults())
    trials = member_trials(study, "a", 3, SPACE, going_on=None)
    for t, s in zip(trials, (0.2, 0.5)):
        t.set_user_attr("metrics", {"score": s, "stages_done": 4, "step": 16})
        study.tell(t, s)
    trials[2].set_user_attr("metrics", {"score": 0.9, "stages_done": 1, "step": 4})
    study.tell(trials[2], state=TrialState.PRUNED)
    rows = study_rows(study, list(SPACE), pareto=False)
    assert [r.status for r in rows] == ["finished", "finished", "stopped after stage 1"]
    assert [r.metrics["score"] for r in rows] == [0.5, 0.2, 0.9] and rows[0].trial_id == f"a-{trials[1].number}"


@pytest.mark.parametrize("args, message", [
    (["objective=pareto"], "Optuna prunes single-objective studies only"),
    (["reduction_factor=2.5"], "whole reduction_factor"),
    (["population=0"], "'population' must be positive"),
])
def test_impossible_population_settings_name_the_key(npz, args, message):  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        load_sweep_config([f"npz_filename={npz}", "population=4", *args])


def test_a_space_that_members_cannot_differ_in_fails_before_any_trial(npz, tmp_path):  # noqa: F811
    space = tmp_path / "space.yaml"
    unfusable = "kernel_size: {type: int, low: 3, high: 7, default: 5}\n"  # the networks' shape
    space.write_text((ROOT / "sweeps" / "space.yaml").read_text() + unfusable)
    out = run_sweep(npz, tmp_path, "name=unfusable", "population=2", f"space={space}")
    assert out.returncode == 2 and "'kernel_size' cannot vary within a population" in out.stderr
    assert not (tmp_path / "results" / "unfusable").exists()
