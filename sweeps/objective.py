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
over the clip's, ganimator/naturalness.py) can: 1 moves like the clip. Too much is noise: a
model sampled with amplified noise, or a configuration with too much of it (Salsa-Dancing-6,
25 iterations a stage: noise_amp_scale 2.8-3.7 gave 2.6-4.8). Too little is motion blurred
towards a mean pose or slowed down: an under-trained model (0.3-0.6 on Salsa after 25-50
iterations a stage) or a frozen pose (0). Both directions cost alike, by the factor the jerk is
off: twice or half the clip's halves the score. The penalty is proportional, not a threshold,
because jerk is unbounded while diversity is capped.

Foot skating and floor penetration are reported beside it but not yet scored. Both are now
measured from positions alone (ganimator/naturalness.py: height-weighted sliding against the
clip's floor, depth below it), so a model can no longer zero them by never labelling a foot
planted, as the old label-based skating let it: 0 for such models, 47x the clip's for others
on Salsa, among configurations that all covered nothing (benchmarks/sweep_value.py). What they
add to jitter in ranking trained models has not been measured yet, and a factor in the score
waits for that measurement: an unmeasured penalty would move every sweep's ranking on a guess.

Measured on Salsa-Dancing-6 (the default configuration, 200 samples; README, "Does the sweep
find better motion?"): trained 400 iterations a stage it scores 0.43 (coverage 0.93, diversity
1.78, jitter 0.58), trained 40 it scores 0.29 (0.81, 2.05, 0.47), and the 400-iteration model
sampled with twice its noise 0.14 (0.20, 4.61, 0.95). The score without naturalness ranked them
alike but 400 over 40 by 8% (0.78 and 0.72), because the shorter training's extra diversity
counted in its favour; now by 48%. Noise moves an over-smooth model's jitter towards 1, which
this factor would reward, but coverage falls far faster (0.93 to 0.20): the product still
drops by two thirds.

The reconstruction error (L1 of the features from z*) keeps the chain anchored to the clip; at
a typical 0.005-0.05 it only separates close calls at the default weight 1, and it is what
ranks configurations that cover nothing yet (short sweeps on hard clips).

The multi-objective mode (`objective=pareto`) maximises coverage, global diversity and
naturalness separately and keeps the Pareto front. Optuna prunes single-objective studies
only, so a Pareto sweep trains every configuration to the end.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import optuna

from ganimator.metrics import Quality

DIVERSITY_CAP = 2.0
PARETO_METRICS = ("coverage", "global_diversity", "naturalness")
KINDS = ("score", "pareto")


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


@dataclass(frozen=True)
class Objective:
    """The sweep's objective: what the study's trials are told, in which directions, and how
    trials rank. `kind` is 'score' (one number) or 'pareto' (coverage, global diversity and
    naturalness)."""

    kind: str = "score"
    rec_weight: float = 1.0

    @property
    def pareto(self) -> bool:
        return self.kind == "pareto"

    @property
    def names(self) -> tuple[str, ...]:
        """The values told to Optuna, in order."""
        return PARETO_METRICS if self.pareto else ("score",)

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.names)

    @property
    def description(self) -> str:
        return "coverage vs global diversity vs naturalness (Pareto front)" if self.pareto else "score"

    def score(self, quality: Quality) -> float:
        return score(quality, self.rec_weight)

    def new_study(self, **kwargs) -> optuna.Study:
        """An Optuna study of this objective (`kwargs`: storage, name, sampler), its values named."""
        study = optuna.create_study(directions=self.directions, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(self.names))  # the dashboard's and the plots' axis names
        return study

    def values(self, quality: Quality) -> list[float]:
        if not self.pareto:
            return [self.score(quality)]
        return pareto_values(quality)

    def rank(self, rows: list) -> list:
        """Best first: finished trials by score (the Pareto front first in Pareto mode), then those
        stopped early by how far they got, then unfinished ones, then failures. Sets each row's
        `rank` and, in Pareto mode, `pareto`."""
        if self.pareto:
            finished = [r for r in rows if r.finished]
            for i in pareto_front([r.quality for r in finished]):
                finished[i].pareto = True
        rows.sort(key=lambda r: (not r.status.failed, r.stages_done, r.pareto,
                                 -math.inf if r.score is None else r.score), reverse=True)
        for position, row in enumerate(rows, 1):
            row.rank = position
        return rows


def pareto_front(qualities: list[Quality]) -> list[int]:
    """Indices of the records that no other beats on every Pareto value (all maximised)."""
    values = [pareto_values(q) for q in qualities]

    def dominated(a, b):
        return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))

    return [i for i, a in enumerate(values) if not any(dominated(a, b) for j, b in enumerate(values) if j != i)]
