"""Training: all stages of the pyramid, each frozen once trained, for one run or several at once.

    result = Trainer(cfg).fit()                     # one run
    outcomes = fit([Trainer(a), Trainer(b)])       # several, fused (ganimator/population.py)

`fit` is the one stage loop. Each `Trainer` is a member: its networks, optimisers, fake pools,
noise generator and run folder. One iteration of a stage (its levels: groups of
`model.group_size`, or `model.stages`) is, as in the original, `critic_steps` critic updates with
WGAN-GP, one adversarial generator update (with the contact consistency loss) and one
reconstruction update. Every random sub-step sees a fresh output of the frozen stages below, as in
the original; they are drawn for all sub-steps of an iteration in one batched call without
autograd, and their (deterministic) reconstruction once per stage. The original recomputed both,
with autograd, for each of the seven sub-steps.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from .config import ConfigError, check_device, npz_filename, resolve_device, stage_levels
from .dataset import MotionDataset
from .errors import UserError
from .losses import ContactConsistency, critic_loss, generator_adversarial_loss, reconstruction_loss
from .metrics import Quality, Scorer
from .networks import FusedPyramid, FusedStack, GeneratorPyramid, build_models, check_fits, clip_pyramids
from .progress import progress_bar
from .rundir import CHECKPOINT_VERSION, RunDir, checkpoint_fits


class TrainingDiverged(UserError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class EventKind(str, Enum):
    VALIDATION = "validation"
    STAGE_END = "stage_end"


@dataclass
class TrainEvent:
    """What callbacks receive after each validation and each finished stage."""

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


Callback = Callable[[TrainEvent], "bool | None"]  # a truthy return stops training


@dataclass
class TrainResult:
    run_dir: Path
    finished: bool  # all stages trained (False: a callback stopped the run)
    events: list[TrainEvent] = field(default_factory=list)


Outcome = TrainResult | TrainingDiverged  # how a member left the stage loop


@dataclass
class ClipData:
    """What the stage loop needs of one training clip (a multi-clip run has several), on the device."""

    lengths: list[int]
    reals: list[torch.Tensor]  # (1, C, length) per level
    pyramid: GeneratorPyramid  # the run's generators with this clip's noise amplitudes and z*
    frozen_rec: torch.Tensor | None = None  # the frozen levels' reconstruction, once per stage


class FakePool:
    """The original's history of generated motions: half the time the critic sees an older fake.
    One per level, shared by the clips of a multi-clip run as in the original, so the critic may
    see another clip's fake (of another length)."""

    def __init__(self, size: int):
        self.size, self.items = size, []

    def query(self, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return fake
        if len(self.items) < self.size:
            self.items.append(fake.detach().clone())
            return fake
        if torch.rand((), generator=rng, device=fake.device) > 0.5:
            k = int(torch.randint(self.size, (), generator=rng, device=fake.device))
            older, self.items[k] = self.items[k], fake.detach().clone()
            return older
        return fake


class Trainer:
    """One run: its networks, optimisers, fake pools and noise generator, and its run folder."""

    def __init__(self, cfg: DictConfig, dataset: MotionDataset | None = None, callbacks: Sequence[Callback] = ()):
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.run = RunDir(cfg.util.run_dir)
        self.run_dir = self.run.path
        self._held = None  # the run folder's lock file while fit runs (RunDir.hold)
        if dataset is None:  # a resumed run trains on its own copy of the data
            own = self.run.data
            dataset = MotionDataset.load(own if cfg.util.resume and own.exists() else npz_filename(cfg))
        self.dataset = dataset
        device = resolve_device(cfg.util.device)
        check_device(device)
        self.device = torch.device(device)
        self.stages = stage_levels(cfg.model, self.dataset.num_levels, npz_filename(cfg))
        self._scorers: dict[int, Scorer] = {}  # per validated level

        check_fits(cfg, self.dataset, self.device)
        self.pyramid, self.critics = build_models(cfg, self.dataset)
        self.pyramid.to(self.device)
        self.critics.to(self.device)
        self.clips = [ClipData(clip.level_lengths, [lvl[None].to(self.device) for lvl in clip.levels()], pyramid)
                      for clip, pyramid in zip(self.dataset.clips, clip_pyramids(cfg, self.dataset, self.pyramid))]
        o = cfg.optim
        # One fused kernel per optimiser step: 14 steps an iteration, each over a few small tensors.
        self.opt_g = [torch.optim.Adam(g.parameters(), lr=o.lr_g, fused=True) for g in self.pyramid.generators]
        self.opt_d = [torch.optim.Adam(c.parameters(), lr=o.lr_d, fused=True) for c in self.critics]
        # One per level, for every clip: the original's GAN_model holds one fake pool.
        self.pools = [FakePool(o.fake_pool_size) for _ in self.critics]
        # A conditional run draws the trajectories it learns to follow from a trained run's samples.
        self.trajectories = None
        if cfg.model.trajectory_run:
            from .edit import TrajectorySource

            if len(self.clips) > 1:
                raise ConfigError("config key 'model.trajectory_run': a conditional run trains on one clip, and "
                                  f"{npz_filename(cfg)} holds {len(self.clips)}")
            own = self.run.trajectory_run  # a resumed run's own copy
            self.trajectories = TrajectorySource.load(own if own.is_dir() else cfg.model.trajectory_run, self.dataset,
                                                      self.device)
            cfg.model.trajectory_run = str(Path(cfg.model.trajectory_run).resolve())  # config.yaml outlives the cwd
        self.consistency = ContactConsistency(self.dataset.skeleton, self.dataset.layout).to(self.device)
        self.rng = torch.Generator(self.device).manual_seed(cfg.util.seed)
        self.stage, self.iteration, self.step = 0, 0, 0
        if cfg.tracking.rerun:
            from .recording import ValidationRecording

            self.callbacks.append(ValidationRecording(self.dataset, self.run_dir))

    def double(self) -> "Trainer":
        """Networks, data and losses in float64, before training starts: for checks of exactness
        (the original's iteration replayed, fused members against lone runs), where float32
        rounding, which Adam's normalised steps amplify wherever a gradient is near zero, would
        hide what is computed."""
        self.pyramid.double()
        self.critics.double()
        self.consistency.double()
        for clip in self.clips:
            clip.pyramid.double()  # clips after the first have their own amplitudes and z*
            clip.reals = [r.double() for r in clip.reals]
        return self

    @property
    def lengths(self) -> list[int]:  # the first clip's
        return self.clips[0].lengths

    @property
    def reals(self) -> list[torch.Tensor]:
        return self.clips[0].reals

    def fit(self) -> TrainResult:
        """Train every stage; a diverged loss raises TrainingDiverged."""
        [outcome] = fit([self])
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
            if self.trajectories is not None:
                self.run.keep_trajectory_run(self.trajectories.run.run_dir)
        self.result = TrainResult(self.run_dir, finished=False)

    def release(self) -> None:
        """Let another process train in the run folder (fit's end, whatever ended it)."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def begin_stage(self) -> list[int]:
        levels = self.stages[self.stage]
        for l, g in enumerate(self.pyramid.generators):  # the stages below are frozen
            g.train(l >= levels[0])
            g.requires_grad_(l >= levels[0])
        with torch.no_grad():
            for clip in self.clips:
                rec = clip.pyramid.reconstruct(clip.lengths, range(levels[0]), conds=self.given(clip.reals))
                clip.frozen_rec = rec[-1] if levels[0] else None
        self._running: dict[str, list[float]] = {}
        return levels

    def after_iteration(self, losses: dict[str, float]) -> bool:
        """Count an iteration of the current stage, validate and checkpoint when due. True when a
        callback stopped the run (its state is saved); TrainingDiverged on a non-finite loss."""
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"loss {bad[0]!r} is {losses[bad[0]]} at stage {self.stage + 1}, iteration {self.iteration + 1}; "
                f"the last good checkpoint in {self.run_dir} is kept (lower the learning rates or lambda_gp)")
        sched = self.cfg.scheduling
        self.iteration += 1
        self.step += 1
        for k, v in losses.items():
            self._running.setdefault(k, []).append(v)
        last = self.iteration == sched.train_data_iter
        checkpoint = self.iteration % sched.checkpoint_every == 0 and not last
        if self.iteration % sched.validate_every == 0 and not last:
            metrics, samples = self.validate(self.stages[self.stage])
            path = self.run.save(self.state_dict()) if checkpoint else None
            if self._emit(EventKind.VALIDATION, self._averages(metrics), samples, path):
                self.run.save(self.state_dict())  # stopping keeps everything done so far
                return True
        elif checkpoint:
            self.run.save(self.state_dict())
        return False

    def end_stage(self) -> bool:
        """Validate and checkpoint the finished stage (and write a finished run's samples and
        review); True when a callback stopped the run."""
        metrics, samples = self.validate(self.stages[self.stage])
        metrics, iteration = self._averages(metrics), self.iteration
        self.stage, self.iteration = self.stage + 1, 0
        path = self.run.save(self.state_dict(), stage=self.stage)
        if self.stage == len(self.stages):
            self.write_results()
        return self._emit(EventKind.STAGE_END, metrics, samples, path, self.stage - 1, iteration)

    def write_results(self) -> None:
        """A finished run's samples and review.rrd, whatever the tracking: every run folder looks alike."""
        from .artifacts import write_run_results

        write_run_results(self.run_dir, self.cfg.tracking.artifact_samples)

    def _averages(self, metrics: dict[str, float]) -> dict[str, float]:
        """The losses averaged since the last report, then the validation metrics."""
        out = {**{k: sum(v) / len(v) for k, v in self._running.items()}, **metrics}
        self._running = {}
        return out

    def _emit(self, kind: EventKind, metrics: dict, samples, path, stage: int | None = None,
              iteration: int | None = None) -> bool:
        stage = self.stage if stage is None else stage
        event = TrainEvent(kind, stage, self.stages[stage], self.iteration if iteration is None else iteration,
                           self.step, metrics, path, samples)
        self.result.events.append(replace(event, samples=None))  # a long run would keep every sample otherwise
        self.run.append_event(event.record())
        stop = False
        for callback in self.callbacks:
            stop = bool(callback(event)) or stop
        return stop

    def given(self, levels: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """`levels` as a conditional run's conditions (None for an unconditional run)."""
        return levels if self.trajectories is not None else None

    @torch.no_grad()
    def validate(self, levels: list[int]) -> tuple[dict[str, float], torch.Tensor]:
        """Reconstruction error per level (the clips' mean), and random samples at the stage's top
        level with their quality against every clip, drawn as the final evaluation draws them
        (scheduling.validation_*)."""
        top = levels[-1]
        out = {}
        for clip in self.clips:
            for l, rec in enumerate(clip.pyramid.reconstruct(clip.lengths, range(top + 1), conds=self.given(clip.reals))):
                if l >= levels[0]:
                    error = reconstruction_loss(rec, clip.reals[l]).item() / len(self.clips)
                    out[f"{l}/rec_error"] = out.get(f"{l}/rec_error", 0.0) + error
        sched = self.cfg.scheduling
        lengths = self.dataset.generation_lengths(round(self.dataset.num_frames * sched.validation_length))
        # Its own generator, seeded by the step, so validating never shifts the training noise.
        rng = torch.Generator(self.device).manual_seed(self.cfg.util.seed * 1_000_003 + self.step)
        conds = self.trajectories(lengths, sched.validation_samples, rng) if self.trajectories else None
        samples = self.pyramid.sample(lengths, sched.validation_samples, rng, range(top + 1),
                                      detail_noise=sched.validation_detail_noise, conds=conds).cpu()
        if samples.shape[0]:
            if top not in self._scorers:  # the clips at this level measured once
                self._scorers[top] = Scorer(self.dataset, top)
            out.update({k: v.mean().item() for k, v in self._scorers[top](samples).items()})
        return out, samples

    # ---- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything resuming needs. Frozen levels keep only their generator: their critics,
        optimiser states and fake pools are never used again, and are most of the bytes."""
        first = self.stages[self.stage][0] if self.stage < len(self.stages) else len(self.critics)
        keep = lambda items: [item if l >= first else None for l, item in enumerate(items)]  # noqa: E731
        return {
            "version": CHECKPOINT_VERSION,
            "stage": self.stage, "iteration": self.iteration, "step": self.step,
            "pyramid": self.pyramid.state_dict(),
            "critics": keep([c.state_dict() for c in self.critics]),
            "opt_g": keep([o.state_dict() for o in self.opt_g]), "opt_d": keep([o.state_dict() for o in self.opt_d]),
            "pools": keep([p.items for p in self.pools]), "rng": self.rng.get_state(),
        }

    def load_state(self, state: dict) -> None:
        self.pyramid.load_state_dict(state["pyramid"])
        for l, (critic, opt_g, opt_d, pool) in enumerate(zip(self.critics, self.opt_g, self.opt_d, self.pools)):
            if state["critics"][l] is not None:
                critic.load_state_dict(state["critics"][l])
                opt_g.load_state_dict(state["opt_g"][l])
                opt_d.load_state_dict(state["opt_d"][l])
                saved = state["pools"][l]
                if saved and not torch.is_tensor(saved[0]):  # a checkpoint that kept a pool per clip
                    saved = [t for per_clip in saved for t in per_clip][:pool.size]
                pool.items = [t.to(self.device) for t in saved]
        for opts, lr in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in (g for opt in opts for g in opt.param_groups):
                group["lr"] = lr  # the config, not the checkpoint, is the truth on resume
        self.rng.set_state(state["rng"])
        self.stage, self.iteration, self.step = state["stage"], state["iteration"], state["step"]


# ---- the stage loop -------------------------------------------------------------------------

Iteration = Callable[[list[Trainer], list[int]], list[dict[str, float]]]


def fit(members: list[Trainer], after_stage: Callable[[int, list[Trainer]], None] | None = None,
        on_leave: Callable[[Trainer, Outcome], None] | None = None,
        first_iteration: Iteration | None = None) -> list[Outcome]:
    """Train `members` through every stage, one fused iteration for all of them at a time.

    A member whose callback stops it, or whose losses diverge, leaves (`on_leave`), and the others
    go on. `after_stage(stage, active)` runs once every member has ended a stage, with those that
    go on; `first_iteration` runs each stage's first iteration in place of `train_iteration` (the
    population measures memory there). Returns each member's TrainResult, or the TrainingDiverged
    error that ended it."""
    try:
        return _fit(members, after_stage, on_leave, first_iteration)
    finally:
        for m in members:
            m.release()


def _fit(members: list[Trainer], after_stage, on_leave, first_iteration) -> list[Outcome]:
    for m in members:
        m.begin()
    positions = {(m.stage, m.iteration) for m in members}
    if len(positions) > 1:
        raise ValueError(f"members resume from different points (stage, iteration): {positions}")
    outcomes: dict[int, Outcome] = {}

    def leave(m: Trainer, outcome: Outcome) -> None:
        active.remove(m)
        outcomes[members.index(m)] = outcome
        if on_leave is not None:
            on_leave(m, outcome)

    active = list(members)
    cfg, num_stages = members[0].cfg, len(members[0].stages)
    while active and active[0].stage < num_stages:
        stage = active[0].stage
        for m in active:
            levels = m.begin_stage()
        crowd = f", {len(members)} members" if len(members) > 1 else ""
        bar = progress_bar(cfg.scheduling.train_data_iter, f"stage {stage + 1}/{num_stages} levels {levels}{crowd}",
                           active[0].iteration, cfg.util.progress)
        iteration = first_iteration or train_iteration
        while active and active[0].iteration < cfg.scheduling.train_data_iter:
            losses = iteration(active, levels)
            iteration = train_iteration
            for m, member_losses in zip(list(active), losses):
                try:
                    if m.after_iteration(member_losses):
                        leave(m, m.result)
                except TrainingDiverged as e:
                    if len(members) > 1:
                        tqdm.write(f"member {members.index(m)} ({m.run_dir}) leaves: {e}", file=sys.stderr)
                    leave(m, e)
            bar.update()
            if len(members) == 1 and active and hasattr(bar, "set_postfix"):
                bar.set_postfix({k.split("/")[1][:3] + k.split("/")[0]: f"{v:.3g}" for k, v in losses[0].items()
                                 if not k.endswith(("gp", "contact"))}, refresh=False)
        bar.close()
        for m in list(active):
            if m.end_stage():
                leave(m, m.result)
        if after_stage is not None:
            after_stage(stage, list(active))
    for m in active:
        m.result.finished = True
        outcomes[members.index(m)] = m.result
    return [outcomes[k] for k in range(len(members))]


# ---- one iteration, fused over members ---------------------------------------------------------

def train_iteration(members: list[Trainer], levels: list[int]) -> list[dict[str, float]]:
    """One iteration of the stage `levels` for each member, fused: every network call runs all K
    members at once, side by side on the channel axis (grouped convolutions).

    Each member draws noise from its own generator in the order a lone run does and steps only
    its own optimisers, so training K members together is training each alone. A lone trainer is
    a population of one. A multi-clip run mixes as the original's joint_train does: each of the
    seven sub-steps runs every clip in turn (critic step 1 on every clip, then step 2, ..., the
    adversarial step on every clip, the reconstruction step on every clip), and the critics
    share one fake pool a level; its losses are the clips' mean. Every clip's chains are drawn
    first: the generators do not change during the critic steps, and the adversarial and
    reconstruction steps recompute the trained levels, so the draws are the ones the original's
    order would see (taken from the generator in another order)."""
    clips = range(len(members[0].clips))
    pyramids = [FusedPyramid([m.clips[k].pyramid for m in members]) for k in clips]
    draws = [_draw(members, k, levels, pyramids[k]) for k in clips]
    clip_losses: list[list[dict[str, float]]] = [[{} for _ in members] for _ in clips]
    for step in range(max(m.cfg.optim.critic_steps for m in members)):
        for k in clips:
            _critic_step(members, k, levels, draws[k][1], step, clip_losses[k])
    for k in clips:
        base, _, noise, conds = draws[k]
        _adversarial_phase(members, k, levels, pyramids[k], base, noise, conds, clip_losses[k])
    for k in clips:
        _reconstruction_phase(members, k, levels, pyramids[k], clip_losses[k])
    losses: list[dict[str, float]] = [{} for _ in members]
    for per_clip in clip_losses:
        for total, part in zip(losses, per_clip):
            for key, value in part.items():
                total[key] = total.get(key, 0.0) + value / len(clips)
    return losses


def _per_member(members: list[Trainer], key: str) -> torch.Tensor:
    return torch.tensor([m.cfg.optim[key] for m in members], device=members[0].device)


def _draw(members: list[Trainer], clip: int, levels: list[int], pyramid: FusedPyramid):
    """Every random sub-step (n critic steps, then the adversarial one) draws a fresh chain, as the
    original does: the frozen levels run once for all of them, batched, without autograd. Rows of a
    member with fewer critic steps are zero padding, run but never used. Returns the frozen
    levels' output (None at stage 1), the critic steps' fakes at each level of the stage, and the
    noise of every level (members side by side), and a conditional run's conditions of every
    level (None otherwise): trajectories drawn from its trained run, one for each chain."""
    lo, top, lengths = levels[0], levels[-1], members[0].clips[clip].lengths
    steps = [m.cfg.optim.critic_steps for m in members]
    n = max(steps)

    def padded(z, n_m):  # rows n_m..n-1 are the padding of a member with fewer critic steps
        return torch.cat([z[:n_m], z.new_zeros(n - n_m, *z.shape[1:]), z[n_m:]])

    noise = [[padded(m.clips[clip].pyramid.noise(l, n_m + 1, lengths[l], m.rng), n_m) for l in range(top + 1)]
             for m, n_m in zip(members, steps)]
    noise = [torch.cat(level, dim=1) for level in zip(*noise)]
    conds = None
    with torch.no_grad():
        if members[0].trajectories is not None:
            conds = [[padded(c, n_m) for c in m.trajectories(lengths, n_m + 1, m.rng)[:top + 1]]
                     for m, n_m in zip(members, steps)]
            conds = [torch.cat(level, dim=1) for level in zip(*conds)]
        base = pyramid.run(range(lo), lengths, None, noise[:lo], conds and conds[:lo])[-1] if lo else None
        fakes = pyramid.run(range(lo, top + 1), lengths, base[:n] if lo else None, [z[:n] for z in noise[lo:]],
                            conds and [c[:n] for c in conds[lo:]])
    return base, fakes, noise, conds


def _critic_step(members: list[Trainer], clip: int, levels: list[int], fakes: list[torch.Tensor], k: int,
                 losses) -> None:
    """Critic step `k` (0-based) on `clip`: one WGAN-GP update of every level's critic, against
    the k-th drawn fakes; members with fewer critic steps leave the fused calls once theirs are done."""
    K, first = len(members), members[0]
    channels, steps = first.pyramid.channels, [m.cfg.optim.critic_steps for m in members]
    lambda_gp = _per_member(members, "lambda_gp")
    active = [i for i, n_m in enumerate(steps) if k < n_m]
    total = 0.0
    for j, l in enumerate(levels):
        fresh = fakes[j][k:k + 1]
        if len(active) < K:
            fresh = torch.cat([fresh[:, i * channels:(i + 1) * channels] for i in active], dim=1)
        alphas = [torch.rand((), generator=members[i].rng, device=first.device) for i in active]
        shown = [members[i].pools[l].query(fresh[:, a * channels:(a + 1) * channels], members[i].rng)
                 for a, i in enumerate(active)]
        critic = FusedStack([members[i].critics[l].net for i in active])
        loss, w, gp = critic_loss(critic, first.clips[clip].reals[l], _side_by_side(shown), fresh,
                                  torch.stack(alphas), lambda_gp[active], len(active))
        total = total + loss.sum()
        for i, w_i, gp_i in zip(active, w.detach().tolist(), gp.detach().tolist()):
            losses[i][f"{l}/critic"], losses[i][f"{l}/gp"] = w_i, gp_i
    _step([members[i].opt_d[l] for i in active for l in levels], total)


def _side_by_side(fakes: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """The members' shown fakes on the channel axis; a list when a shared pool handed some member
    another clip's fake, of another length (critic_loss then scores each member's on its own)."""
    if len({f.shape[-1] for f in fakes}) == 1:
        return torch.cat(fakes, dim=1)
    return fakes


def _adversarial_phase(members: list[Trainer], clip: int, levels: list[int], pyramid: FusedPyramid, base, noise,
                       conds, losses) -> None:
    """One generator update against the critics, with the contact consistency loss; each level
    learns only from its own losses, as in the original."""
    K, n = len(members), max(m.cfg.optim.critic_steps for m in members)
    lo, lengths = levels[0], members[0].clips[clip].lengths
    for m in members:
        m.critics.requires_grad_(False)
    lambda_consistency = _per_member(members, "lambda_consistency")
    prev, total = base[n:] if lo else None, 0.0
    for l, z in zip(levels, (z[n:] for z in noise[lo:])):
        fake = pyramid.run(range(l, l + 1), lengths, prev, [z], conds and [conds[l][n:]])[0]
        adversarial = generator_adversarial_loss(FusedStack([m.critics[l].net for m in members]), fake, K)
        contact = members[0].consistency(fake, K)
        total = total + (adversarial + lambda_consistency * contact).sum()
        for i, (a_i, c_i) in enumerate(zip(adversarial.detach().tolist(), contact.detach().tolist())):
            losses[i][f"{l}/adversarial"], losses[i][f"{l}/contact"] = a_i, c_i
        prev = fake.detach()
    _step([m.opt_g[l] for m in members for l in levels], total)
    for m in members:
        m.critics.requires_grad_(True)


def _reconstruction_phase(members: list[Trainer], clip: int, levels: list[int], pyramid: FusedPyramid,
                          losses) -> None:
    """One generator update towards the clip from z*, on top of the frozen levels' reconstruction."""
    K, first = len(members), members[0].clips[clip]
    lambda_rec = _per_member(members, "lambda_rec")
    prev, total = torch.cat([m.clips[clip].frozen_rec for m in members], dim=1) if levels[0] else None, 0.0
    for l in levels:
        given = members[0].given([first.reals[l].repeat(1, K, 1)])
        rec = pyramid.reconstruct(first.lengths, range(l, l + 1), prev, given)[0]
        loss = reconstruction_loss(rec, first.reals[l], K)
        total = total + (lambda_rec * loss).sum()
        for i, r_i in enumerate(loss.detach().tolist()):
            losses[i][f"{l}/reconstruction"] = r_i
        prev = rec.detach()
    _step([m.opt_g[l] for m in members for l in levels], total)


def _step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()
