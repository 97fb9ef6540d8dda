"""Training a run: all stages of the pyramid, each frozen once trained, for one run or several at once.

    result = Trainer(cfg).fit()                     # one run
    outcomes = fit([Trainer(a), Trainer(b)])       # several, fused (ganimator/population.py)

`fit` is the one stage loop. A `Trainer` holds a `member.Member` (what one step touches) with its
config, its schedule (stages, iterations, validation) and its run folder (`rundir.RunDir`); the
iteration itself is `step.train_iteration`. What a command adds (a Rerun recording, the samples
of a finished run, ClearML, a sweep's judge) it attaches as `Hooks` (ganimator/run_hooks.py).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from .config import check_device, npz_filename, resolve_device, resolve_precision
from .dataset import MotionDataset
from .errors import UserError
from .losses import reconstruction_loss
from .member import Member
from .metrics import Quality, Scorer
from .networks import check_fits
from .progress import progress_bar
from .rundir import RunDir, checkpoint_fits, make_checkpoint
from .schedule import Schedule, lr_factor
from .step import train_iteration


# The losses the progress bar shows, by short name and level (`adv5`); the rest (gp, contact, floor)
# are in the history, ClearML and the Rerun recording.
BAR_NAMES = {"critic": "cri", "adversarial": "adv", "reconstruction": "rec", "jerk": "jrk", "jerk_rec": "jrec"}


class TrainingDiverged(UserError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class EventKind(str, Enum):
    VALIDATION = "validation"
    STAGE_END = "stage_end"


@dataclass
class TrainEvent:
    """What hooks receive (`Hooks.on_event`) after each validation and each finished stage."""

    kind: EventKind
    stage: int  # 0-based index into the stages
    levels: list[int]
    iteration: int  # iterations done in this stage
    step: int  # iterations done in all stages
    metrics: dict[str, float]  # the losses averaged since the last event (`<level>/<loss>`), then quality
    checkpoint: Path | None  # a checkpoint holding exactly this state, when one was written
    samples: torch.Tensor | None = field(default=None, repr=False)  # validation motions (N, C, T) at levels[-1]

    @property
    def stages_done(self) -> int:
        return self.stage + (self.kind == EventKind.STAGE_END)

    @property
    def quality(self) -> Quality | None:
        """The validation samples' quality at the stage's top level (None without samples, or in
        a history written before a metric of the record existed)."""
        if "coverage" not in self.metrics:
            return None
        return Quality.of({**self.metrics, "rec_error": self.metrics[f"{self.levels[-1]}/rec_error"]})

    def record(self) -> dict:
        """The event as a history line holds it."""
        return {**{k: v for k, v in asdict(self).items() if k != "samples"},
                "kind": self.kind.value, "checkpoint": str(self.checkpoint) if self.checkpoint else None}

    @classmethod
    def from_record(cls, record: dict) -> "TrainEvent":
        return cls(**{**record, "kind": EventKind(record["kind"]),
                      "checkpoint": Path(record["checkpoint"]) if record["checkpoint"] else None})


@dataclass
class TrainResult:
    run_dir: Path
    finished: bool  # all stages trained (False: a hook stopped the run)
    events: list[TrainEvent] = field(default_factory=list)


Outcome = TrainResult | TrainingDiverged  # how a member left the stage loop
Losses = list[dict[str, float]]  # an iteration's, per member: `<level>/<loss>`


class Hooks:
    """What a caller attaches to `fit`. Each method is called when its moment comes and does
    nothing here: a hook overrides the ones it needs."""

    def on_event(self, trainer: "Trainer", event: TrainEvent) -> bool:
        """After each validation and each finished stage of `trainer` (its state and history
        written); True stops that member, its state saved."""
        return False

    def on_leave(self, trainer: "Trainer", outcome: Outcome) -> None:
        """`trainer` stopped or diverged, while any others train on."""

    def after_stage(self, stage: int, active: list["Trainer"]) -> None:
        """Every member ended 0-based `stage`; `active` go on."""

    def first_iteration(self, active: list["Trainer"], iterate: Callable[[], Losses]) -> Losses:
        """A stage's first iteration: `iterate()` runs it (the population measures memory here)."""
        return iterate()


class OnEvent(Hooks):
    """Hooks from a function of the event alone (a truthy return stops the member)."""

    def __init__(self, function: Callable[[TrainEvent], "bool | None"]):
        self.function = function

    def on_event(self, trainer: "Trainer", event: TrainEvent) -> bool:
        return bool(self.function(event))


def training_data(cfg: DictConfig, dataset: MotionDataset | None = None) -> MotionDataset:
    """A run's data: `dataset`, else the config's npz or a resumed run's own copy; its root block
    in the config's units (data.root_scale)."""
    if dataset is None:
        own = RunDir(cfg.util.run_dir).data
        dataset = MotionDataset.load(own if cfg.util.resume and own.exists() else npz_filename(cfg))
    return dataset.with_root_scale(cfg.data.root_scale)


def precision_autocast(device: torch.device, precision: str) -> torch.autocast:
    """Training arithmetic on `device`: bfloat16 autocast for util.precision=bf16, else as it is."""
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


class Trainer:
    """One run: a Member, its config and schedule, and its run folder. A conditional run
    (model.trajectory_run) is given its trajectories (run_hooks.load_trajectories)."""

    def __init__(self, cfg: DictConfig, dataset: MotionDataset | None = None, trajectories=None):
        if bool(cfg.model.trajectory_run) != (trajectories is not None):
            raise ValueError("a Trainer is given trajectories exactly when its config names a model.trajectory_run")
        self.cfg = cfg
        self.run = RunDir(cfg.util.run_dir)
        self.run_dir = self.run.path
        self._held = None  # the run folder's lock file while fit runs (RunDir.hold)
        self.dataset = training_data(cfg, dataset)
        device = resolve_device(cfg.util.device)
        check_device(device)
        self.device = torch.device(device)
        self.precision = resolve_precision(cfg.util.precision, self.device)
        self.schedule = Schedule.of(cfg, self.dataset.num_levels, npz_filename(cfg))
        self.stages = [list(levels) for levels in self.schedule.stages]
        self._scorers: dict[int, Scorer] = {}  # per validated level
        check_fits(cfg, self.dataset, self.device)
        self.member = Member.build(cfg, self.dataset, self.device, trajectories)
        self.stage, self.iteration, self.step = 0, 0, 0
        self.seconds = 0.0  # training time so far, validation left out: a time budget's clock

    def double(self) -> "Trainer":
        """The member in float64 (Member.double), before training starts."""
        self.member.double()
        return self

    def fit(self, hooks: Sequence[Hooks] = ()) -> TrainResult:
        """Train every stage; a diverged loss raises TrainingDiverged."""
        [outcome] = fit([self], hooks)
        if isinstance(outcome, TrainingDiverged):
            raise outcome
        return outcome

    # ---- what the stage loop asks of each member ---------------------------------------------

    def begin(self) -> None:
        if self.cfg.util.num_threads > 0:
            torch.set_num_threads(self.cfg.util.num_threads)
        if self.cfg.util.resume:
            if self.run.checkpoint.exists():  # else newest_state says there is nothing to resume
                self._held = self.run.hold()
            path, state = self.run.newest_state()
            with checkpoint_fits(path):
                self.load_state(state)
            self.run.keep_history_until(self.step)  # events after the checkpoint will happen again
        else:
            self._held = self.run.create(self.cfg, self.dataset)
            if self.member.trajectories is not None:
                self.run.keep_trajectory_run(self.member.trajectories.run.run_dir)
        self.result = TrainResult(self.run_dir, finished=False)

    def release(self) -> None:
        """Let another process train in the run folder (fit's end, whatever ended it)."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def begin_stage(self) -> list[int]:
        levels = self.stages[self.stage]
        self.member.begin_stage(levels)
        self._running: dict[str, list[float]] = {}
        return levels

    def autocast(self) -> torch.autocast:
        """Where training iterations run (util.precision)."""
        return precision_autocast(self.device, self.precision)

    def stage_over(self) -> bool:
        return self.schedule.over(self.stage, self.iteration, self.seconds)

    def set_learning_rates(self) -> None:
        """The stage's learning rates where the schedule has them now (optim.lr_warmup, lr_final)."""
        o = self.member.optim
        if o.lr_warmup or o.lr_final != 1.0:
            progress = self.schedule.progress(self.stage, self.iteration, self.seconds)
            self.member.scale_learning_rates(lr_factor(progress, o.lr_warmup, o.lr_final))

    def after_iteration(self, losses: dict[str, float], seconds: float, hooks: Sequence[Hooks]) -> bool:
        """Count an iteration of the current stage (`seconds` of training), validate and checkpoint
        when due. True when a hook stopped the run (its state is saved); TrainingDiverged on a
        non-finite loss."""
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"loss {bad[0]!r} is {losses[bad[0]]} at stage {self.stage + 1}, iteration {self.iteration + 1}; "
                f"the last good checkpoint in {self.run_dir} is kept (lower the learning rates or lambda_gp)")
        sched = self.cfg.scheduling
        self.iteration += 1
        self.step += 1
        self.seconds += seconds
        for k, v in losses.items():
            self._running.setdefault(k, []).append(v)
        last = self.stage_over()
        checkpoint = self.iteration % sched.checkpoint_every == 0 and not last
        if self.iteration % sched.validate_every == 0 and not last:
            path = self.run.save(self.state_dict()) if checkpoint else None
            with self.member.averaged_weights():  # what the stage would keep if it ended here (optim.ema)
                metrics, samples = self.validate(self.stages[self.stage])
                stop = self._emit(hooks, EventKind.VALIDATION, self._averages(metrics), samples, path)
            if stop:
                self.run.save(self.state_dict())  # stopping keeps everything done so far
                return True
        elif checkpoint:
            self.run.save(self.state_dict())
        return False

    def end_stage(self, hooks: Sequence[Hooks]) -> bool:
        """Validate and checkpoint the finished stage; True when a hook stopped the run."""
        self.member.end_stage()
        metrics, samples = self.validate(self.stages[self.stage])
        metrics, iteration = self._averages(metrics), self.iteration
        self.stage, self.iteration = self.stage + 1, 0
        path = self.run.save(self.state_dict(), stage=self.stage)
        return self._emit(hooks, EventKind.STAGE_END, metrics, samples, path, self.stage - 1, iteration)

    def _averages(self, metrics: dict[str, float]) -> dict[str, float]:
        """The losses averaged since the last report, then the validation metrics."""
        out = {**{k: sum(v) / len(v) for k, v in self._running.items()}, **metrics}
        self._running = {}
        return out

    def _emit(self, hooks: Sequence[Hooks], kind: EventKind, metrics: dict, samples, path, stage: int | None = None,
              iteration: int | None = None) -> bool:
        stage = self.stage if stage is None else stage
        event = TrainEvent(kind, stage, self.stages[stage], self.iteration if iteration is None else iteration,
                           self.step, metrics, path, samples)
        self.result.events.append(replace(event, samples=None))  # a long run would keep every sample otherwise
        self.run.append_event(event.record())
        stop = False
        for hook in hooks:
            stop = bool(hook.on_event(self, event)) or stop
        return stop

    @torch.no_grad()
    def validate(self, levels: list[int]) -> tuple[dict[str, float], torch.Tensor]:
        """Reconstruction error per level (the clips' mean), and random samples at the stage's top
        level with their quality against every clip, drawn as the final evaluation draws them
        (scheduling.validation_*)."""
        top = levels[-1]
        out = {}
        for clip in self.member.clips:
            recs = clip.pyramid.reconstruct(clip.lengths, range(top + 1), conds=self.member.given(clip.reals))
            for l, rec in enumerate(recs):
                if l >= levels[0]:
                    error = reconstruction_loss(rec, clip.reals[l]).item() / len(self.member.clips)
                    out[f"{l}/rec_error"] = out.get(f"{l}/rec_error", 0.0) + error
        sched = self.cfg.scheduling
        lengths = self.dataset.generation_lengths(round(self.dataset.num_frames * sched.validation_length))
        # Its own generator, seeded by the step, so validating never shifts the training noise.
        rng = torch.Generator(self.device).manual_seed(self.cfg.util.seed * 1_000_003 + self.step)
        trajectories = self.member.trajectories
        conds = trajectories(lengths, sched.validation_samples, rng) if trajectories else None
        samples = self.member.pyramid.sample(lengths, sched.validation_samples, rng, range(top + 1),
                                             detail_noise=sched.validation_detail_noise, conds=conds).cpu()
        if samples.shape[0]:
            if top not in self._scorers:  # the clips at this level measured once
                self._scorers[top] = Scorer(self.dataset, top)
            out.update({k: v.mean().item() for k, v in self._scorers[top](samples).items()})
        return out, samples

    # ---- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything resuming needs: the member's state and where the schedule stands."""
        first = self.stages[self.stage][0] if self.stage < len(self.stages) else len(self.member.critics)
        return make_checkpoint(self.stage, self.iteration, self.step, self.member.state_dict(first), self.seconds)

    def load_state(self, state: dict) -> None:
        self.member.load_state(state)
        self.stage, self.iteration, self.step = state["stage"], state["iteration"], state["step"]
        self.seconds = state.get("seconds", 0.0)  # checkpoints before time budgets have none


# ---- the stage loop -------------------------------------------------------------------------

def fit(members: list[Trainer], hooks: Sequence[Hooks] = ()) -> list[Outcome]:
    """Train `members` through every stage, one fused iteration for all of them at a time.

    A member that a hook stops, or whose losses diverge, leaves (`Hooks.on_leave`), and the others
    go on. Returns each member's TrainResult, or the TrainingDiverged error that ended it."""
    try:
        return _fit(members, list(hooks))
    finally:
        for m in members:
            m.release()


def _fit(members: list[Trainer], hooks: list[Hooks]) -> list[Outcome]:
    for m in members:
        m.begin()
    positions = {(m.stage, m.iteration) for m in members}
    if len(positions) > 1:
        raise ValueError(f"members resume from different points (stage, iteration): {positions}")
    outcomes: dict[int, Outcome] = {}

    def leave(m: Trainer, outcome: Outcome) -> None:
        active.remove(m)
        outcomes[members.index(m)] = outcome
        for hook in hooks:
            hook.on_leave(m, outcome)

    def iterate() -> Losses:
        for m in active:
            m.set_learning_rates()
        with active[0].autocast():  # members share util.precision (population.check_fusable)
            losses = train_iteration([m.member for m in active], levels)
        for m in active:
            m.member.average()
        return losses

    active = list(members)
    # Members share the schedule (population.check_fusable) and one clock: each is charged the fused
    # iteration's time, so active[0] speaks for all.
    num_stages = len(members[0].stages)
    while active and active[0].stage < num_stages:
        stage = active[0].stage
        for m in active:
            levels = m.begin_stage()
        bar, shown = _stage_bar(active[0], len(members)), _shown(active[0])
        first = True
        while active and not active[0].stage_over():
            run = iterate
            if first:
                for hook in hooks:
                    run = partial(hook.first_iteration, active, run)
                first = False
            start = time.perf_counter()
            losses = run()
            seconds = time.perf_counter() - start
            for m, member_losses in zip(list(active), losses):
                try:
                    if m.after_iteration(member_losses, seconds, hooks):
                        leave(m, m.result)
                except TrainingDiverged as e:
                    if len(members) > 1:
                        tqdm.write(f"member {members.index(m)} ({m.run_dir}) leaves: {e}", file=sys.stderr)
                    leave(m, e)
            if active:  # whole seconds of a time budget: tqdm would print every fraction
                bar.update(_shown(active[0]) - shown)
                shown = _shown(active[0])
            if len(members) == 1 and active and hasattr(bar, "set_postfix"):
                bar.set_postfix({BAR_NAMES[name] + level: f"{v:.3g}" for level, name, v in
                                 ((*k.split("/"), v) for k, v in losses[0].items()) if name in BAR_NAMES},
                                refresh=False)
        bar.close()
        for m in list(active):
            if m.end_stage(hooks):
                leave(m, m.result)
        for hook in hooks:
            hook.after_stage(stage, list(active))
    for m in active:
        m.result.finished = True
        outcomes[members.index(m)] = m.result
    return [outcomes[k] for k in range(len(members))]


def _shown(trainer: Trainer) -> int:
    """What the stage's bar counts: iterations, or whole seconds of a time budget."""
    if trainer.schedule.timed:
        return round(max(0.0, trainer.seconds - trainer.schedule.start(trainer.stage)))
    return trainer.iteration


def _stage_bar(trainer: Trainer, members: int):
    """The stage's progress: in iterations, or in seconds of a time budget."""
    schedule, stage = trainer.schedule, trainer.stage
    crowd = f", {members} members" if members > 1 else ""
    desc = f"stage {stage + 1}/{len(schedule.stages)} levels {list(schedule.stages[stage])}{crowd}"
    if schedule.timed:
        return progress_bar(round(schedule.ends[stage] - schedule.start(stage)), desc, _shown(trainer), trainer.cfg.util.progress,
                            unit="s")
    return progress_bar(schedule.iterations[stage], desc, trainer.iteration, trainer.cfg.util.progress)
