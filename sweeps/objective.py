"""What a sweep maximises, built from the original's quality metrics (a `ganimator.metrics.Quality`).

    score = coverage * min(diversity, 2) / 2 - rec_weight * rec_error
    diversity = (global_diversity + local_diversity) / 2

Coverage (0..1) asks that every 30-frame window of the clip appears in the samples; diversity
asks that the samples are not the clip replayed. Each alone is fooled: a copy of the clip has
coverage 1 and diversity 0, noise has diversity far above 2 and coverage 0. Their product is
high only for new motion that still covers the clip. Diversity is capped at 2.0, the per-frame
cost above which the original counts a window as not covered, so that diversity beyond what
coverage can vouch for earns nothing. The reconstruction error (L1 of the features from z*)
keeps the chain anchored to the clip; at a typical 0.005-0.05 it only separates close calls
at the default weight 1.

The multi-objective mode (`objective=pareto`) maximises coverage and global diversity
separately and keeps the Pareto front. Optuna prunes single-objective studies only, so a Pareto
sweep trains every configuration to the end.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import optuna

from ganimator.metrics import Quality

DIVERSITY_CAP = 2.0
PARETO_METRICS = ("coverage", "global_diversity")
KINDS = ("score", "pareto")


def score(quality: Quality, rec_weight: float = 1.0) -> float:
    diversity = (quality.global_diversity + quality.local_diversity) / 2
    value = quality.coverage * min(diversity, DIVERSITY_CAP) / DIVERSITY_CAP - rec_weight * quality.rec_error
    return value if math.isfinite(value) else -math.inf


@dataclass(frozen=True)
class Objective:
    """The sweep's objective: what the study's trials are told, in which directions, and how
    trials rank. `kind` is 'score' (one number) or 'pareto' (coverage against global diversity)."""

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
        return "coverage vs global diversity (Pareto front)" if self.pareto else "score"

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
        return [getattr(quality, name) for name in PARETO_METRICS]

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


def pareto_front(qualities: list[Quality], keys=PARETO_METRICS) -> list[int]:
    """Indices of the records that no other beats on every key (all maximised)."""
    def dominated(a, b):
        return all(getattr(b, k) >= getattr(a, k) for k in keys) and any(getattr(b, k) > getattr(a, k) for k in keys)

    return [i for i, a in enumerate(qualities) if not any(dominated(a, b) for j, b in enumerate(qualities) if j != i)]
