"""Budgets and learning-rate schedules (ganimator/schedule.py), on the real trainer: a budget of
iterations or minutes split across the stages by weight, warm-up and decay within each stage, and
a time budget's clock carried across a resume."""
import subprocess
import sys
from pathlib import Path

import pytest

from ganimator.config import ConfigError, load_config
from ganimator.population import Population
from ganimator.rundir import load_checkpoint_file
from ganimator.schedule import Schedule, lr_factor
from ganimator.trainer import EventKind, Hooks, OnEvent, Trainer

TINY = ["hidden_channels=[16,32,32]", "validation_samples=0", "progress=false", "clearml=off"]


def config(npz, run_dir, *overrides):
    return load_config([f"npz_filename={npz}", f"run_dir={run_dir}", *TINY, *overrides])


def test_without_a_budget_every_stage_trains_train_data_iter_as_the_original():
    cfg = load_config(["npz_filename=x.npz"])
    assert Schedule.of(cfg, 7).iterations == (15000, 15000, 15000, 15000)
    assert Schedule.of(load_config(["npz_filename=x.npz", "train_data_iter=4"]), 9).iterations == (4,) * 5


@pytest.mark.parametrize("budget,weights", [(24, [1, 1, 2, 4]), (100, [0.25, 4, 4, 4]), (3, [1, 1, 1, 1]),
                                            (1001, [0.3, 0.7, 1.9, 3.1])])
def test_an_iteration_budget_is_split_by_weight_and_adds_up(budget, weights):
    cfg = load_config(["npz_filename=x.npz", f"budget_iters={budget}", f"stage_weights={weights}"])
    iterations = Schedule.of(cfg, 7).iterations
    assert min(iterations) >= 1 and sum(iterations) == max(budget, 4)
    shares = [w / sum(weights) for w in weights]
    assert all(abs(n - budget * s) <= 1 + 4 * s for n, s in zip(iterations, shares))  # the weights' split, give or take the one each stage is owed


def test_learning_rates_warm_up_then_decay_to_lr_final():
    values = [lr_factor(p / 100, 0.2, 0.1) for p in range(101)]
    peak = max(range(101), key=values.__getitem__)
    assert values[0] < 0.01 and 19 <= peak <= 21 and abs(values[-1] - 0.1) < 1e-9
    assert values[:peak + 1] == sorted(values[:peak + 1]) and values[peak:] == sorted(values[peak:], reverse=True)
    assert all(lr_factor(p / 10, 0.0, 1.0) == 1.0 for p in range(11))  # the original: constant


@pytest.mark.parametrize("overrides,message", [
    (["budget_iters=10", "budget_minutes=1"], "both set"),
    (["stage_weights=[1,0]"], "'scheduling.stage_weights.1' must be positive"),
    (["lr_warmup=1.5"], "'optim.lr_warmup' is a share of each stage"),
    (["budget_minutes=-1"], "'scheduling.budget_minutes' must not be negative"),
])
def test_bad_budgets_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["npz_filename=x.npz", *overrides])


def test_weights_of_another_length_are_stretched_over_the_clips_stages():
    rising = Schedule.of(load_config(["npz_filename=x.npz", "budget_iters=300", "stage_weights=[1,3]"]), 7)
    assert rising.iterations == (38, 62, 88, 112)  # weights 1, 5/3, 7/3, 3
    three = Schedule.of(load_config(["npz_filename=x.npz", "preset=fast", "group_size=3"]), 7)  # 3 stages, 4 weights
    lengths = [b - a for a, b in zip([0.0, *three.ends], three.ends)]
    assert len(lengths) == 3 and lengths == sorted(lengths) and abs(three.ends[-1] / 60 - 20) < 1e-9


class LearningRates(Hooks):
    """The generators' learning rate at every event of stage 2 (levels 2 and 3)."""

    def __init__(self):
        self.seen = []

    def on_event(self, trainer, event):
        if event.stage == 1:
            self.seen.append((event.kind, trainer.member.opt_g[2].param_groups[0]["lr"]))
        return False


def test_an_iteration_budget_trains_each_stage_its_share_with_its_learning_rates(npz, tmp_path):
    cfg = config(npz, tmp_path / "run", "budget_iters=48", "stage_weights=[1,1,3,3]", "validate_every=1",
                 "lr_g=1e-3", "lr_warmup=0.3", "lr_final=0.05")
    rates = LearningRates()
    result = Trainer(cfg).fit([rates])
    ends = [e for e in result.events if e.kind == EventKind.STAGE_END]
    assert [e.iteration for e in ends] == [6, 6, 18, 18] and ends[-1].step == 48
    lrs = [lr for _, lr in rates.seen]
    assert len(lrs) == 6 and max(lrs) > 0.9e-3 and lrs.index(max(lrs)) == 2  # warmed up over 30% of 6 iterations
    assert lrs[0] < 0.3e-3 and lrs[2:] == sorted(lrs[2:], reverse=True)
    assert lrs[-1] < 0.25e-3  # near lr_final at the stage's end
    plain = config(npz, tmp_path / "plain", "budget_iters=8", "validate_every=1", "lr_g=1e-3")
    rates = LearningRates()
    Trainer(plain).fit([rates])
    assert {lr for _, lr in rates.seen} == {1e-3}  # without a schedule: the configured rate throughout


def test_a_time_budget_ends_each_stage_on_the_clock_and_resumes_it(npz, tmp_path):
    budget = 0.06  # minutes: 3.6 s, a share of 0.6 / 0.6 / 1.2 / 1.2 s
    cfg = config(npz, tmp_path / "run", f"budget_minutes={budget}", "stage_weights=[1,1,2,2]", "validate_every=1",
                 "checkpoint_every=1")
    ends = []
    trainer = Trainer(cfg)

    def stop_in_stage_3(event):  # stop at stage 3's first event, to resume from there
        if event.kind == EventKind.STAGE_END:
            ends.append(trainer.seconds)
        return event.stage == 2

    first = trainer.fit([OnEvent(stop_in_stage_3)])
    assert not first.finished
    assert ends[0] >= 0.6 and ends[1] >= 1.2  # each stage ended once the clock passed its share
    stopped = load_checkpoint_file(tmp_path / "run" / "checkpoint.pt")
    assert stopped["stage"] in (2, 3) and stopped["seconds"] >= 1.2
    resumed_at = []
    resumed = Trainer(load_config([*_overrides(cfg), "resume=true"]))
    assert resumed.fit([OnEvent(lambda e: resumed_at.append(resumed.seconds))]).finished
    assert resumed_at[0] > stopped["seconds"]  # the clock goes on from the checkpoint's
    final = load_checkpoint_file(tmp_path / "run" / "checkpoint.pt")
    assert final["stage"] == 4 and final["seconds"] >= budget * 60


def _overrides(cfg) -> list[str]:
    return [f"npz_filename={cfg.data.npz_filename}", f"run_dir={cfg.util.run_dir}", *TINY,
            f"budget_minutes={cfg.scheduling.budget_minutes}", "stage_weights=[1,1,2,2]", "validate_every=1",
            "checkpoint_every=1"]


def test_population_members_share_a_budget_but_may_schedule_learning_rates_their_own_way(npz, tmp_path):
    same = [config(npz, tmp_path / f"a{k}", "budget_iters=8", f"seed={k}", f"lr_final={f}")
            for k, f in enumerate((1.0, 0.1))]
    population, rates = Population(same), {}

    class Last(Hooks):  # each member's generator learning rate at its last stage's end
        def on_event(self, trainer, event):
            rates[trainer.run_dir.name] = trainer.member.opt_g[-1].param_groups[0]["lr"]
            return False

    outcomes = population.fit([Last()])
    assert all(o.finished and o.events[-1].step == 8 for o in outcomes)
    assert rates["a0"] == 1e-4 and rates["a1"] < 0.5e-4  # one decayed, the other kept the original's
    split = [config(npz, tmp_path / f"b{k}", "budget_iters=8", f"stage_weights={w}")
             for k, w in enumerate(([1, 1, 1, 1], [1, 1, 1, 3]))]
    with pytest.raises(ConfigError, match="share config key 'scheduling.stage_weights"):
        Population(split)
