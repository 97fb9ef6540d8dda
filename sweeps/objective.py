"""What a sweep maximises, built from the quality record (a `ganimator.metrics.Quality`).

    score = coverage * min(diversity, 2) / 2 * naturalness - rec_weight * rec_error
    diversity = (global_diversity + local_diversity) / 2
    naturalness = min(jitter, 1 / jitter)

Coverage (0..1) asks that every 30-frame window of the clip appears in the samples; diversity
asks that the samples are not the clip replayed. Each alone is fooled: a copy of the clip has
coverage 1 and diversity 0, noise has diversity far above 2 and coverage 0. Their product is
high only for new motion that still covers the clip. Diversity is capped at 2.0, the per-frame
cost above which the original counts a window as not covered.

Coverage and diversity compare poses, one frame at a time, so they cannot see how motion moves:
jittery motion and blurred, sluggish motion both read as diverse. Jitter (the joints' mean jerk
over the clip's, ganimator/naturalness.py) can: 1 moves like the clip. Too much is noise (a
model sampled with amplified noise, or a configuration with too much of it); too little is
motion blurred towards a mean pose or slowed down (an under-trained model) or a frozen pose (0).
Both directions cost alike, by the factor the jerk is off: twice or half the clip's halves the
score. The penalty is proportional, not a threshold, because jerk is unbounded while diversity
is capped. Without it a shorter training's extra diversity counts in its favour (README, "Does
the sweep find better motion?").

Foot skating, floor penetration, ground contact and foot motion are reported beside it but not
scored: what they add to jitter in ranking trained models is unmeasured, and an unmeasured
penalty would move every sweep's ranking on a guess.

The reconstruction error (L1 of the features from z*) keeps the chain anchored to the clip; at
a typical 0.005-0.05 it only separates close calls at the default weight 1, and it is what
ranks configurations that cover nothing yet (short sweeps on hard clips).

Three kinds, one class each: `ScoreObjective` (`objective=score`) tells Optuna the score;
`ParetoObjective` (`objective=pareto`) maximises coverage, global diversity and naturalness
separately and keeps the Pareto front; `BandObjective` (`objective=band`) asks for the quality band
itself (`ganimator.metrics.PUBLISHED`): its score is minus how far the model lies outside the band
(`QualityBand.distance`: the log of the factor each bound is missed by, summed), minus the same
reconstruction term. That is the question of a sweep at equal cost, which schedule reaches
published quality (README, "How long until published quality?"), and there foot skating,
penetration, ground contact and foot motion count, as the band defines them, while the score
proper would push global diversity towards 2, past the band's 1.6. Inside the band every model scores alike but for its
reconstruction error. Call sites ask the objective (its values and directions,
its default sampler, whether Optuna may prune, what plots and importances rank by, how trials
rank) rather than which kind it is.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import optuna

from ganimator.metrics import PUBLISHED, Quality

DIVERSITY_CAP = 2.0
PARETO_METRICS = ("coverage", "global_diversity", "naturalness")


def naturalness(quality: Quality) -> float:
    """1 for motion that jerks as the clip does, less by the factor its jerk is off."""
    return min(quality.jitter, 1.0 / quality.jitter) if quality.jitter > 0 else 0.0


def score(quality: Quality, rec_weight: float = 1.0) -> float:
    diversity = (quality.global_diversity + quality.local_diversity) / 2
    value = (quality.coverage * min(diversity, DIVERSITY_CAP) / DIVERSITY_CAP * naturalness(quality)
             - rec_weight * quality.rec_error)
    return value if math.isfinite(value) else -math.inf


def pareto_values(quality: Quality) -> list[float]:
    """What objective=pareto maximises, in PARETO_METRICS' order."""
    return [quality.coverage, quality.global_diversity, naturalness(quality)]


TrialScore = Callable[[optuna.trial.FrozenTrial], float]


@dataclass(frozen=True)
class Objective:
    """The sweep's objective: what the study's trials are told, in which directions, and how
    trials rank. `Objective.named(kind)` builds the kind a sweep config names."""

    rec_weight: float = 1.0

    kind: ClassVar[str]
    names: ClassVar[tuple[str, ...]]  # the values told to Optuna, in order
    description: ClassVar[str]
    sampler: ClassVar[str]  # the Optuna sampler a sweep uses unless it names one
    prunable: ClassVar[bool]  # Optuna prunes single-objective studies only
    columns: ClassVar[tuple[str, ...]] = ()  # the summary's columns of this kind

    @staticmethod
    def named(kind: str, rec_weight: float = 1.0) -> Objective:
        return {c.kind: c for c in KINDS}[kind](rec_weight)

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.names)

    def score(self, quality: Quality) -> float:
        return score(quality, self.rec_weight)

    def values(self, quality: Quality) -> list[float]:
        raise NotImplementedError

    def target(self, recorded: TrialScore) -> TrialScore | None:
        """What plots and importances rank trials by, given how to read the score recorded with a
        trial: None where the study's own value is the score."""
        raise NotImplementedError

    def figures(self, study: optuna.Study) -> dict:
        """Plots of this kind only, beside the ones every sweep has."""
        return {}

    def new_study(self, **kwargs) -> optuna.Study:
        """An Optuna study of this objective (`kwargs`: storage, name, sampler), its values named."""
        study = optuna.create_study(directions=self.directions, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(self.names))  # the dashboard's and the plots' axis names
        return study

    def rank(self, rows: list) -> list:
        """Best first: finished trials by score (the Pareto front first in Pareto mode), then those
        stopped early by how far they got, then unfinished ones, then failures. Sets each row's
        `rank` and, in Pareto mode, `pareto`."""
        rows.sort(key=lambda r: (not r.status.failed, r.stages_done, r.pareto,
                                 -math.inf if r.score is None else r.score), reverse=True)
        for position, row in enumerate(rows, 1):
            row.rank = position
        return rows


@dataclass(frozen=True)
class ScoreObjective(Objective):
    """One number, the score: Optuna ranks, prunes and plots by it."""

    kind: ClassVar[str] = "score"
    names: ClassVar[tuple[str, ...]] = ("score",)
    description: ClassVar[str] = "score"
    sampler: ClassVar[str] = "tpe"
    prunable: ClassVar[bool] = True

    def values(self, quality: Quality) -> list[float]:
        return [self.score(quality)]

    def target(self, recorded: TrialScore) -> None:
        return None


@dataclass(frozen=True)
class ParetoObjective(Objective):
    """Coverage, global diversity and naturalness, each maximised: the Pareto front. The score is
    no study value here, so plots and importances read it from each trial's record."""

    kind: ClassVar[str] = "pareto"
    names: ClassVar[tuple[str, ...]] = PARETO_METRICS
    description: ClassVar[str] = "coverage vs global diversity vs naturalness (Pareto front)"
    sampler: ClassVar[str] = "nsga2"
    prunable: ClassVar[bool] = False
    columns: ClassVar[tuple[str, ...]] = ("pareto",)

    def values(self, quality: Quality) -> list[float]:
        return pareto_values(quality)

    def target(self, recorded: TrialScore) -> TrialScore:
        return recorded

    def figures(self, study: optuna.Study) -> dict:
        import optuna.visualization as vis  # plotly: for the driver's plots, not in every trial

        return {"pareto front": vis.plot_pareto_front(study)}

    def rank(self, rows: list) -> list:
        finished = [r for r in rows if r.finished]
        for i in pareto_front([r.quality for r in finished]):
            finished[i].pareto = True
        return super().rank(rows)


@dataclass(frozen=True)
class BandObjective(ScoreObjective):
    """One number, how near the quality band: Optuna ranks, prunes and plots by it as by the score."""

    kind: ClassVar[str] = "band"
    names: ClassVar[tuple[str, ...]] = ("band",)
    description: ClassVar[str] = "minus the distance outside the quality band (ganimator.metrics.PUBLISHED)"

    def score(self, quality: Quality) -> float:
        return -PUBLISHED.distance(quality) - self.rec_weight * quality.rec_error


KINDS = (ScoreObjective, ParetoObjective, BandObjective)


def pareto_front(qualities: list[Quality]) -> list[int]:
    """Indices of the records that no other beats on every Pareto value (all maximised)."""
    values = [pareto_values(q) for q in qualities]

    def dominated(a, b):
        return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))

    return [i for i, a in enumerate(values) if not any(dominated(a, b) for j, b in enumerate(values) if j != i)]
