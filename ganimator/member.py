"""A member of the stage loop: exactly what one training step touches, and nothing of where it is saved.

Its networks (the generator pyramid and a critic per level), their optimisers, the critics' fake
pools, its noise generator, the tensors of every training clip, its optimiser settings, the
contact consistency loss and, for a conditional run, the trajectories it learns to follow.
`step.train_iteration` runs members; `trainer.Trainer` gives one a run folder and a schedule.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from .losses import ContactConsistency
from .networks import GeneratorPyramid, build_models, clip_pyramids


@dataclass(frozen=True)
class OptimSettings:
    """What a sweep may vary per member of one step (config section `optim`)."""

    lr_g: float
    lr_d: float
    lambda_rec: float
    lambda_gp: float
    lambda_consistency: float
    critic_steps: int
    fake_pool_size: int
    lr_warmup: float = 0.0  # the learning rates' schedule within a stage (schedule.lr_factor)
    lr_final: float = 1.0
    ema: float = 0.0  # decay of the trained generators' running average (Member.average); 0: none
    lambda_floor: float = 0.0  # weight of the contact joints' distance off the clip's floor; 0: none, the original
    lambda_jerk: float = 0.0  # weight of the joints' jerk beyond the clip's; 0: none, the original
    lambda_jerk_rec: float = 0.0  # the same, of the reconstruction from z*

    @classmethod
    def of(cls, optim: DictConfig) -> "OptimSettings":
        return cls(optim.lr_g, optim.lr_d, optim.lambda_rec, optim.lambda_gp, optim.lambda_consistency,
                   optim.critic_steps, optim.fake_pool_size, optim.lr_warmup, optim.lr_final, optim.ema,
                   optim.lambda_floor, optim.lambda_jerk, optim.lambda_jerk_rec)


@dataclass
class ClipTensors:
    """One training clip (a multi-clip run has several), on the device."""

    lengths: list[int]
    reals: list[torch.Tensor]  # (1, C, length) per level
    pyramid: GeneratorPyramid  # the run's generators with this clip's noise amplitudes and z*
    jerks: list[torch.Tensor]  # the clip's own jerk at each level (ContactConsistency.jerk), (1,) each
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


@dataclass
class Member:
    pyramid: GeneratorPyramid
    critics: nn.ModuleList
    opt_g: list[torch.optim.Optimizer]  # one per level
    opt_d: list[torch.optim.Optimizer]
    pools: list[FakePool]  # one per level, for every clip: the original's GAN_model holds one
    rng: torch.Generator
    clips: list[ClipTensors]
    optim: OptimSettings
    consistency: ContactConsistency
    device: torch.device
    trajectories: object | None = None  # edit.TrajectorySource: a conditional run's trajectories
    # optim.ema: the running average of each trained level's generator parameters, and how many
    # iterations it has seen. Empty without ema, and between stages.
    averages: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    averaged: int = 0

    @classmethod
    def build(cls, cfg: DictConfig, dataset, device: torch.device, trajectories=None) -> "Member":
        """A new member of `cfg` on `dataset`, its networks initialised from `cfg.util.seed`."""
        pyramid, critics = build_models(cfg, dataset)
        pyramid.to(device)
        critics.to(device)
        body = ContactConsistency(dataset.skeleton, dataset.layout, *dataset.ground_and_body()).to(device)
        clips = []
        for clip, clip_pyramid in zip(dataset.clips, clip_pyramids(cfg, dataset, pyramid)):
            reals = [lvl[None].to(device) for lvl in clip.levels()]
            clips.append(ClipTensors(clip.level_lengths, reals, clip_pyramid, [body.jerk(r) for r in reals]))
        o = OptimSettings.of(cfg.optim)
        # One fused kernel per optimiser step: 14 steps an iteration, each over a few small tensors.
        return cls(pyramid, critics,
                   [torch.optim.Adam(g.parameters(), lr=o.lr_g, fused=True) for g in pyramid.generators],
                   [torch.optim.Adam(c.parameters(), lr=o.lr_d, fused=True) for c in critics],
                   [FakePool(o.fake_pool_size) for _ in critics], torch.Generator(device).manual_seed(cfg.util.seed),
                   clips, o, body, device, trajectories)

    def double(self) -> "Member":
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
            clip.jerks = [j.double() for j in clip.jerks]
        return self

    def scale_learning_rates(self, factor: float) -> None:
        """Every optimiser's learning rate at `factor` times the configured one."""
        for opts, lr in ((self.opt_g, self.optim.lr_g), (self.opt_d, self.optim.lr_d)):
            for group in (g for opt in opts for g in opt.param_groups):
                group["lr"] = lr * factor

    def given(self, levels: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """`levels` as a conditional run's conditions (None for an unconditional run)."""
        return levels if self.trajectories is not None else None

    def begin_stage(self, levels: list[int]) -> None:
        """Freeze the levels below `levels`, and reconstruct each clip through them once."""
        for l, g in enumerate(self.pyramid.generators):
            g.train(l >= levels[0])
            g.requires_grad_(l >= levels[0])
        with torch.no_grad():
            for clip in self.clips:
                rec = clip.pyramid.reconstruct(clip.lengths, range(levels[0]), conds=self.given(clip.reals))
                clip.frozen_rec = rec[-1] if levels[0] else None
        if self.optim.ema and sorted(self.averages) != list(levels):  # a resumed stage keeps its own
            self.averages = {l: [p.detach().clone() for p in self.pyramid.generators[l].parameters()] for l in levels}
            self.averaged = 0

    # ---- the generators' running average (optim.ema) ------------------------------------------
    # An exponential moving average of the weights (as in Progressive GAN and StyleGAN) smooths
    # out the noise of the adversarial updates that shows in samples as jitter. Training goes on
    # with the raw weights; validation sees the average, and a stage ends by keeping it, so the
    # frozen levels, the checkpoints at stage ends and every exported model are the average.

    def average(self) -> None:
        """Fold this iteration's weights into the average. The decay ramps up as (1 + t) / (10 + t)
        (TensorFlow's ExponentialMovingAverage with num_updates) so that the untrained initial
        weights fade within the first iterations of a stage whatever its length."""
        if not self.averages:
            return
        decay = min(self.optim.ema, (1 + self.averaged) / (10 + self.averaged))
        with torch.no_grad():
            for l, average in self.averages.items():
                torch._foreach_lerp_(average, [p.detach() for p in self.pyramid.generators[l].parameters()], 1 - decay)
        self.averaged += 1

    @contextmanager
    def averaged_weights(self):
        """The trained levels' generators hold the average inside (validation), their own weights after."""
        if not self.averages:
            yield
            return
        own = {l: [p.detach().clone() for p in self.pyramid.generators[l].parameters()] for l in self.averages}
        self._load(self.averages)
        try:
            yield
        finally:
            self._load(own)

    def end_stage(self) -> None:
        """The stage's generators keep their average, frozen from now on."""
        self._load(self.averages)
        self.averages, self.averaged = {}, 0

    def _load(self, weights: dict[int, list[torch.Tensor]]) -> None:
        with torch.no_grad():
            for l, values in weights.items():
                torch._foreach_copy_(list(self.pyramid.generators[l].parameters()), values)

    # ---- state ------------------------------------------------------------------------------

    def state_dict(self, first_trained: int) -> dict:
        """Everything a step reads. Levels below `first_trained` are frozen and keep only their
        generator: their critics, optimiser states and fake pools are never used again, and are
        most of the bytes."""
        keep = lambda items: [item if l >= first_trained else None for l, item in enumerate(items)]  # noqa: E731
        return {
            "pyramid": self.pyramid.state_dict(),
            "critics": keep([c.state_dict() for c in self.critics]),
            "opt_g": keep([o.state_dict() for o in self.opt_g]), "opt_d": keep([o.state_dict() for o in self.opt_d]),
            "pools": keep([p.items for p in self.pools]), "rng": self.rng.get_state(),
            "averages": self.averages, "averaged": self.averaged,
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
        # Checkpoints before optim.ema have no average, one of a finished stage an empty one; a run
        # resumed with ema=0 drops what it had.
        saved = state.get("averages", {}) if self.optim.ema else {}
        self.averages = {l: [t.to(self.device) for t in ts] for l, ts in saved.items()}
        self.averaged = state.get("averaged", 0)
        self.scale_learning_rates(1.0)  # the config, not the checkpoint, is the truth on resume (and the schedule)
        self.rng.set_state(state["rng"])
