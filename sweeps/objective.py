"""What a sweep maximises, built from the original's quality metrics.

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
separately and keeps the Pareto front.
"""
from __future__ import annotations

import math

DIVERSITY_CAP = 2.0
PARETO_METRICS = ("coverage", "global_diversity")


def score(metrics: dict, rec_weight: float = 1.0) -> float:
    diversity = (metrics["global_diversity"] + metrics["local_diversity"]) / 2
    value = metrics["coverage"] * min(diversity, DIVERSITY_CAP) / DIVERSITY_CAP - rec_weight * metrics["rec_error"]
    return value if math.isfinite(value) else -math.inf


def pareto_front(rows: list[dict], keys=PARETO_METRICS) -> list[int]:
    """Indices of rows that no other row beats on every key (all maximised)."""
    def dominated(a, b):
        return all(b[k] >= a[k] for k in keys) and any(b[k] > a[k] for k in keys)

    return [i for i, a in enumerate(rows) if not any(dominated(a, b) for j, b in enumerate(rows) if j != i)]
