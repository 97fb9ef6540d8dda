"""The sweep engine's parts without a Ray cluster: the objective, the study as the record of every
configuration (asks, restarts, ranking, failures), the search space and the sweep's settings."""
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import optuna
import pytest
import torch
from optuna.trial import TrialState
from ray import tune

from ganimator.config import ConfigError, load_config
from ganimator.dataset import MotionDataset
from ganimator.metrics import PUBLISHED, Quality, pose_frames, quality
from ganimator.naturalness import Naturalness
from ganimator.pyramid import resample
from ganimator.run_hooks import RunOutputs, train
from ganimator.trainer import OnEvent, Trainer
from sweeps.config import load_sweep_config
from sweeps.objective import BandObjective, ParetoObjective, ScoreObjective, pareto_front
from sweeps.results import (METRICS, STAGE_SCORES, TUNE_ID, Status, close_orphans, importances, learned_lines,
                            rung_correlations, study_rows)
from sweeps.space import load_space
from sweeps.trainable import batches, member_trials, restore_run

from conftest import ROOT, TINY, run_sweep

SPACE = load_space(ROOT / "sweeps" / "space.yaml")
SCORE = ScoreObjective()


# ---- the objective -------------------------------------------------------------------------------

def judged(features, data, rec_error=0.0) -> Quality:
    """The quality of (C, T) motion features against the clip, as validation measures it."""
    natural = {k: v.item() for k, v in Naturalness(data)(features[None]).items()}
    real = pose_frames(data.clips[0].features, data.layout)
    return Quality.from_dict({**quality(pose_frames(features, data.layout)[None], real), **natural,
                              "rec_error": rec_error})


def test_score_rewards_new_motion_that_covers_the_clip_and_moves_like_it(clip):
    data = MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))
    real = data.clips[0].features
    half = real.shape[-1] // 2
    chunks = torch.split(real, 40, dim=-1)
    order = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(0))
    shuffled = torch.cat([chunks[i] for i in order], dim=-1)
    noisy = shuffled + 0.05 * torch.randn(shuffled.shape, generator=torch.Generator().manual_seed(1))
    candidates = {  # from the clip replayed, through patchworks of it, to new motion
        "copy": real,
        "spliced": torch.cat([real[:, half:], real[:, :half]], dim=-1),
        "shuffled": shuffled,
        "noisy": noisy,  # the patchwork, jittering: more diverse, moves worse
        "slower": resample(real[None], round(real.shape[-1] * 1.3))[0],
        "noise": torch.randn_like(real) * real.std(), "frozen": real[:, :1].expand_as(real)}
    q = {k: judged(v, data) for k, v in candidates.items()}
    s = {k: SCORE.score(v) for k, v in q.items()}
    assert s["slower"] > s["shuffled"] > s["spliced"] > 0.001 > s["copy"] == pytest.approx(0.0, abs=1e-6)
    assert s["noise"] == s["frozen"] == 0.0  # they cover nothing
    assert q["slower"].jitter == pytest.approx(1.3 ** -3, rel=0.2) and q["shuffled"].jitter > 2  # its cuts jerk
    # Noise cannot win: it adds diversity, and costs more in naturalness than the diversity earns.
    assert q["noisy"].global_diversity > q["shuffled"].global_diversity and q["noisy"].jitter > 2 * q["shuffled"].jitter
    assert s["noisy"] < s["shuffled"] / 2
    assert SCORE.score(judged(real, data, rec_error=0.1)) == pytest.approx(-0.1)


def test_naturalness_costs_by_the_factor_motion_is_off():
    q = Quality(1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0)
    assert SCORE.score(replace(q, jitter=2.0)) == pytest.approx(SCORE.score(q) / 2)
    assert SCORE.score(replace(q, jitter=0.5)) == pytest.approx(SCORE.score(q) / 2)  # blurred or slowed
    assert SCORE.score(replace(q, jitter=0.0)) == 0.0  # a frozen pose
    assert SCORE.score(replace(q, foot_skating=40.0)) == SCORE.score(q)  # reported, not scored: see objective.py


def test_the_band_objective_asks_for_the_quality_band_by_the_factor_each_bound_is_missed(clip):
    band = BandObjective(rec_weight=2.0)
    inside = Quality(0.97, 1.3, 1.2, 0.01, 1.0, 1.0, 0.1, 0.9, 1.1)
    assert PUBLISHED.contains(inside) and band.score(inside) == pytest.approx(-0.02)  # only the reconstruction term
    assert PUBLISHED.distance(replace(inside, jitter=2.5)) == pytest.approx(math.log(2))  # twice the bound
    assert PUBLISHED.distance(replace(inside, coverage=0.475)) == pytest.approx(math.log(2))  # half of it
    two_misses = replace(inside, jitter=2.5, foot_skating=6.0)
    assert PUBLISHED.distance(two_misses) == pytest.approx(math.log(2) + math.log(4))
    assert PUBLISHED.distance(replace(inside, coverage=0.0)) == pytest.approx(math.log(1000))  # finite: still ranks
    assert band.score(replace(inside, penetration=math.nan)) == -math.inf
    assert PUBLISHED.distance(replace(inside, ground_contact=0.335)) == pytest.approx(math.log(2))  # feet that hover
    assert PUBLISHED.distance(replace(inside, foot_motion=0.067)) == pytest.approx(math.log(10))  # feet that stand
    # What the score does not count, the band does: feet sliding 40 times as much as the clip's.
    assert band.score(replace(inside, foot_skating=40.0)) < band.score(inside)
    assert SCORE.score(replace(inside, foot_skating=40.0)) == SCORE.score(inside)
    # and where the score asks for more diversity than the band allows, the band does not.
    wild = replace(inside, global_diversity=1.95, local_diversity=1.95)
    assert SCORE.score(wild) > SCORE.score(inside) and band.score(wild) < band.score(inside)

    # On real motion: a patchwork of the clip is nearer the band than noise or a frozen pose.
    data = MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))
    real = data.clips[0].features
    chunks = torch.split(real, 40, dim=-1)
    order = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(0))
    shuffled = torch.cat([chunks[i] for i in order], dim=-1)
    scores = {name: band.score(judged(motion, data)) for name, motion in {
        "shuffled": shuffled, "noise": torch.randn_like(real) * real.std(), "frozen": real[:, :1].expand_as(real)}.items()}
    assert scores["shuffled"] > max(scores["noise"], scores["frozen"]) + 1


def test_pareto_front_keeps_the_undominated_trials():
    q = [Quality(1.0, 0.2, 0, 0, 1, 1, 0.0), Quality(0.5, 1.5, 0, 0, 2, 1, 0.0), Quality(0.4, 1.0, 0, 0, 1, 1, 0.0),
         Quality(1.0, 0.1, 0, 0, 1, 1, 0.0)]
    assert pareto_front(q) == [0, 1, 2]  # 2 is behind 1 on coverage and diversity, but moves like the clip
    pareto = ParetoObjective()
    assert pareto.directions == ["maximize"] * 3 and pareto.values(q[1]) == [0.5, 1.5, 0.5]
    assert SCORE.directions == ["maximize"] and SCORE.values(q[1]) == [SCORE.score(q[1])]


# ---- the study: asks, restarts, outcomes, ranking ------------------------------------------------

def told(study, trial, q: Quality, stages_done: int, state=TrialState.COMPLETE):
    trial.set_user_attr(METRICS, {**q.as_dict(), "score": SCORE.score(q), "stages_done": stages_done,
                                  "step": 4 * stages_done})
    if state == TrialState.COMPLETE:
        study.tell(trial, SCORE.values(q))
    else:
        study.tell(trial, state=state)


def in_memory() -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    backend = optuna.storages.InMemoryStorage()
    return optuna.create_study(storage=backend, direction="maximize"), backend


def test_ranking_reads_every_configuration_from_the_study():
    assert [b["members"] for b in batches(10, 4)] == [4, 4, 2] and [b["members"] for b in batches(3, 1)] == [1] * 3
    study, backend = in_memory()
    study.enqueue_trial(SPACE.defaults())
    trials = member_trials(study, backend, 0, "a", 4, SPACE, going_on=None)
    assert trials[0].params == pytest.approx(SPACE.defaults())  # the defaults are tried first
    told(study, trials[0], Quality(1.0, 0.4, 0.4, 0.0, 1.0, 1.0, 0.0), 4)
    told(study, trials[1], Quality(1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0), 4)
    told(study, trials[2], Quality(1.0, 1.9, 1.9, 0.0, 1.0, 1.0, 0.0), 1, TrialState.PRUNED)  # best score, but stopped at stage 1
    trials[3].set_user_attr("failure", "loss '0/critic' is nan")
    study.tell(trials[3], state=TrialState.FAIL)
    rows = study_rows(study, list(SPACE), SCORE)
    assert [r.status for r in rows] == [Status.FINISHED, Status.FINISHED, Status.STOPPED, Status.FAILED]
    assert [r.status_text for r in rows[2:]] == ["stopped after stage 1", "failed: loss '0/critic' is nan"]
    assert [r.score for r in rows[:3]] == pytest.approx([0.5, 0.2, 0.95]) and [r.rank for r in rows] == [1, 2, 3, 4]
    assert rows[0].trial_id == f"a-{trials[1].number}" and rows[2].steps == 4


def test_a_restarted_trial_takes_back_its_own_configurations_and_asks_nothing_twice():
    study, backend = in_memory()
    study.enqueue_trial(SPACE.defaults())
    asked = member_trials(study, backend, 0, "a", 3, SPACE, going_on=None)
    assert len(asked) == 3 and asked[0].params == pytest.approx(SPACE.defaults())
    member_trials(study, backend, 1, "b", 2, SPACE, going_on=None)  # another batch's configurations are not ours

    # Killed before its first checkpoint (or resumed by a new Ray trial, whose id differs): the
    # same trials again, nothing new asked.
    again = member_trials(study, backend, 0, "c", 3, SPACE, going_on=None)
    assert [t.number for t in again] == [t.number for t in asked] and len(study.trials) == 5

    # Restarted from a checkpoint after one member was pruned and another told after it: the
    # checkpoint's members that still run, and the freed slot is not refilled.
    study.tell(asked[1], state=TrialState.PRUNED)
    restored = member_trials(study, backend, 0, "a", 3, SPACE, going_on=[t.number for t in asked])
    assert [t.number for t in restored] == [asked[0].number, asked[2].number] and len(study.trials) == 5


ASKER = r"""
import json, sys, time
from omegaconf import OmegaConf
from sweeps.config import SweepConfig
from sweeps.search import StudySpec
from sweeps.space import load_space
from sweeps.trainable import member_trials

storage, tune_id, start, locked = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
space = load_space("sweeps/space.yaml")
spec = StudySpec("race", storage, OmegaConf.structured(SweepConfig), space)
backend = spec.backend()
study = spec.load(backend=backend)
time.sleep(max(0.0, start - time.time()))  # every asker at once
trials = member_trials(study, backend, int(tune_id[1:]), tune_id, 3, space, None,
                       spec.asking if locked else __import__("contextlib").nullcontext)
print(json.dumps([t.number for t in trials]))
"""


def test_concurrent_trials_never_claim_the_same_enqueued_configuration(tmp_path):
    # SQLite ignores Optuna's SELECT ... FOR UPDATE: without StudySpec.asking, two askers may pop
    # one WAITING trial (a configuration trained twice, another never asked).
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(storage=storage, study_name="race", direction="maximize")
    for _ in range(8):  # what every asker tries to pop first
        study.enqueue_trial(SPACE.defaults())
    start = time.time() + 6  # after every asker has imported optuna
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, storage, f"t{k}", str(start), "1"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for k in range(4)]
    claimed = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    owners = {t.number: t.user_attrs.get(TUNE_ID) for t in study.get_trials(deepcopy=False) if t.user_attrs}
    numbers = [n for c in claimed for n in c]
    assert len(numbers) == 12 and len(set(numbers)) == 12, claimed
    assert all(owners[n] == f"t{k}" for k, c in enumerate(claimed) for n in c)


def test_only_configurations_of_errored_ray_trials_are_closed_as_failed():
    study, backend = in_memory()
    for batch, tune_id in enumerate("ab"):  # a errored past its retries; b was interrupted (Ctrl-C)
        member_trials(study, backend, batch, tune_id, 2, SPACE, going_on=None)
    assert close_orphans(study, backend, {0: RuntimeError("Traceback (most recent call last):\n  ...\nRuntimeError: boom")}) == 2
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL] * 2 + [TrialState.RUNNING] * 2
    rows = study_rows(study, list(SPACE), SCORE)
    assert sorted(r.status_text for r in rows) == ["failed: its Ray trial ended with an error: RuntimeError: boom"] * 2 \
        + ["unfinished (resume=true continues it)"] * 2


def test_a_restarted_trial_skips_a_truncated_checkpoint_for_the_one_before(npz, tmp_path, capsys):
    run_dir = tmp_path / "first"
    trial = tmp_path / "trial"  # laid out as Tune keeps a trial's last two checkpoints, one a stage end

    def keep(event):
        if event.kind == "stage_end":
            kept = trial / f"checkpoint_{event.stage:06d}"
            kept.mkdir(parents=True)
            for name in ("config.yaml", "data.npz", "history.jsonl"):
                shutil.copyfile(run_dir / name, kept / name)
            shutil.copyfile(event.checkpoint, kept / "checkpoint.pt")
        return event.kind == "stage_end" and event.stage == 1

    cfg = load_config([f"npz_filename={npz}", f"run_dir={run_dir}", "progress=false", *TINY])
    train(cfg, hooks=[OnEvent(keep)])
    assert sorted(p.name for p in run_dir.glob("stage-*.pt")) == ["stage-2.pt"]  # the last stage end's only
    newest = trial / "checkpoint_000001" / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:2000])

    assert restore_run(tune.Checkpoint.from_directory(trial / "checkpoint_000001"), tmp_path / "restored")
    assert f"{newest}: not a readable ganimator checkpoint" in capsys.readouterr().err
    restored = Trainer(load_config([f"npz_filename={npz}", f"run_dir={tmp_path / 'restored'}", "resume=true",
                                    "progress=false", *TINY]))
    result = restored.fit([RunOutputs()])
    assert result.finished and [e.stage for e in result.events if e.kind == "stage_end"] == [1, 2, 3]

    newest.parent.parent.joinpath("checkpoint_000000", "checkpoint.pt").write_bytes(b"")
    assert not restore_run(tune.Checkpoint.from_directory(trial / "checkpoint_000001"), tmp_path / "fresh")
    assert "starts again from scratch" in capsys.readouterr().err


# ---- what the sweep learned ----------------------------------------------------------------------

def test_importances_and_rung_correlations_say_what_decided_the_score():
    study = optuna.create_study(direction="maximize")
    rng = torch.Generator().manual_seed(0)
    for k in range(24):
        lr, noise = float(torch.rand(1, generator=rng)), float(torch.rand(1, generator=rng))
        final = lr + 0.01 * noise  # the learning rate decides; stage 1 ranks alike, stage 2 reversed, stage 3 at random
        stage_scores = [final / 2, -final, float(torch.rand(1, generator=rng)), final]
        study.add_trial(optuna.trial.create_trial(
            params={"lr_g": lr, "noise_amp_scale": noise}, values=[final],
            distributions={"lr_g": optuna.distributions.FloatDistribution(0, 1),
                           "noise_amp_scale": optuna.distributions.FloatDistribution(0, 1)},
            user_attrs={METRICS: {"score": final, "stages_done": 4}, STAGE_SCORES: stage_scores}))
    rows = study_rows(study, ["lr_g", "noise_amp_scale"], SCORE)
    rungs = rung_correlations(rows, 4)
    assert [c.stage for c in rungs] == [1, 2, 3] and all(c.configurations == 24 for c in rungs)
    assert rungs[0].rho == pytest.approx(1.0) and rungs[1].rho == pytest.approx(-1.0) and abs(rungs[2].rho) < 0.5
    weights = importances(study, SCORE)
    assert list(weights) == ["lr_g", "noise_amp_scale"] and weights["lr_g"] > 0.8
    text = "\n".join(learned_lines(rungs, weights))
    assert "| lr_g |" in text and "| 1 | 1.00 |" in text and "| 2 | -1.00 |" in text

    few = rung_correlations(rows[:2], 4)  # two configurations rank nothing
    assert all(math.isnan(c.rho) for c in few)
    assert "needs at least three" in "\n".join(learned_lines(few, {}))
    assert importances(optuna.create_study(direction="maximize"), SCORE) == {}


# ---- the search space and the sweep's settings, checked before Ray starts -------------------------

def test_impossible_search_space_fails_before_any_trial(npz, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lambda_gp: {type: log, low: 0.1, high: 10}\nlambda_rec: {type: log, low: 50, high: 5}\n")
    out = run_sweep(npz, tmp_path, f"space={space}", timeout=120)
    assert out.returncode == 2
    assert "lambda_rec" in out.stderr and "empty range" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()  # nothing started


@pytest.mark.parametrize("entry, message", [
    ("lamda_rec: {type: log, low: 1, high: 10}", "unknown config key 'lamda_rec'"),
    ("critic_steps: {type: uniform, low: 1, high: 8}", "critic_steps"),
    ("lambda_rec: {type: log, low: 0, high: 10}", "log range needs low > 0"),
    ("lambda_rec: {type: uniform, low: -5, high: 10, default: 1}", "must not be negative"),
    ("lambda_rec: {type: log, low: 1, high: 10, default: 50}", "outside"),
    ("stage_noise_amp_scale.4: {type: log, low: 0.5, high: 2}", "stage_noise_amp_scale"),
    ("full_noise: {type: categorical, choices: []}", "non-empty list"),
    ("lambda_rec: {type: normal, low: 1, high: 10}", "type must be one of"),
])
def test_bad_search_space_entries_name_the_key(tmp_path, entry, message):
    space = tmp_path / "space.yaml"
    space.write_text(entry + "\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        load_space(space, ["npz_filename=x.npz"])
    assert entry.split(":")[0] in str(e.value)


@pytest.mark.parametrize("args, message", [
    (["reduction_factor=2.5"], "'reduction_factor' must be a whole number"),
    (["population=0"], "'population' must be positive"),
])
def test_impossible_sweep_settings_name_the_key(npz, args, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep_config([f"npz_filename={npz}", *args])


def test_a_space_that_members_cannot_differ_in_fails_before_any_trial(npz, tmp_path):
    space = tmp_path / "space.yaml"
    unfusable = "kernel_size: {type: int, low: 3, high: 7, default: 5}\n"  # the networks' shape
    space.write_text((ROOT / "sweeps" / "space.yaml").read_text() + unfusable)
    out = run_sweep(npz, tmp_path, "name=unfusable", "population=2", f"space={space}")
    assert out.returncode == 2 and "'kernel_size' cannot vary within a population" in out.stderr
    assert not (tmp_path / "results" / "unfusable").exists()
