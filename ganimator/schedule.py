"""How long each stage trains, and how its learning rates move: the schedule as data.

The original trains every stage `train_data_iter` iterations at constant learning rates. A budget
instead fixes what the whole run costs, `budget_iters` iterations or `budget_minutes` of training
time, and `stage_weights` split it across the stages (coarsest first; a list of another length is
stretched over them), so configurations compete at equal cost and
a sweep can search how a budget is best spent (the coarse stages may need far fewer iterations
than the fine ones). Without a budget the run costs `train_data_iter` a stage, split the same way:
the default weights (all 1) give the original's schedule.

Within a stage, each level's learning rates warm up linearly over the first `lr_warmup` of the
stage, then follow a cosine down to `lr_final` times their value at its end (the defaults, 0 and
1, keep them constant, as the original does). A stage's progress is its share of iterations done,
or of its minutes spent, so both budgets shape the rates alike.

    schedule = Schedule.of(cfg, dataset.num_levels)
    schedule.over(stage, iteration, seconds)   # has the stage spent its share?
    schedule.progress(stage, iteration, seconds)  # 0..1 within the stage
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig

from .config import stage_levels, stage_weights


@dataclass(frozen=True)
class Schedule:
    stages: tuple[tuple[int, ...], ...]  # each stage's levels
    iterations: tuple[int, ...] | None  # each stage's iterations; None when the budget is time
    ends: tuple[float, ...] | None  # seconds of training by which each stage ends (a time budget)

    @classmethod
    def of(cls, cfg: DictConfig, num_levels: int, source: str = "the data") -> "Schedule":
        s = cfg.scheduling
        stages = tuple(tuple(levels) for levels in stage_levels(cfg.model, num_levels, source))
        weights = stage_weights(cfg.scheduling, len(stages))
        shares = [sum(weights[:k + 1]) / sum(weights) for k in range(len(stages))]
        if s.budget_minutes:
            return cls(stages, None, tuple(s.budget_minutes * 60 * share for share in shares))
        total = s.budget_iters or s.train_data_iter * len(stages)
        bounds = [round(total * share) for share in shares]  # iterations done when each stage ends
        # Every stage trains at least one iteration: a level never trained would add its initial noise.
        return cls(stages, tuple(max(1, end - start) for start, end in zip([0, *bounds], bounds)), None)

    @property
    def timed(self) -> bool:
        return self.ends is not None

    def over(self, stage: int, iteration: int, seconds: float) -> bool:
        """Whether `stage` has spent its share, `iteration` iterations into it and `seconds` of
        training into the run. A timed stage trains at least one iteration, however late it starts."""
        if self.timed:
            return iteration > 0 and seconds >= self.ends[stage]
        return iteration >= self.iterations[stage]

    def start(self, stage: int) -> float:
        """Seconds of training at which timed `stage` begins."""
        return self.ends[stage - 1] if stage else 0.0

    def progress(self, stage: int, iteration: int, seconds: float) -> float:
        """How far into its share `stage` is, 0 to 1, as the next iteration runs: its midpoint of n
        iterations, so the first and last of a warm-up and decay are as far from 0 and 1 as each other."""
        if self.timed:
            start = self.start(stage)
            return min(1.0, max(0.0, (seconds - start) / max(self.ends[stage] - start, 1e-9)))
        return min(1.0, (iteration + 0.5) / self.iterations[stage])

    def describe(self) -> str:
        if self.timed:
            return ", ".join(f"{(end - self.start(k)) / 60:.3g} min" for k, end in enumerate(self.ends))
        return ", ".join(f"{n} it" for n in self.iterations)


def lr_factor(progress: float, warmup: float, final: float) -> float:
    """The learning rate's multiple at `progress` (0..1) through a stage: a linear warm-up over the
    first `warmup`, then a cosine from 1 down to `final` at the stage's end."""
    if progress < warmup:
        return (progress + 1e-3) / (warmup + 1e-3)  # never 0: Adam's first steps would be lost
    if final == 1.0:
        return 1.0
    rest = (progress - warmup) / (1.0 - warmup) if warmup < 1.0 else 1.0
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * rest))

