"""The original's quality metrics (coverage, global and local diversity), vectorised in torch.

All three compare windows of one clip to windows of another along diagonals of the per-frame
cost matrix: L2 distance between frames' pose features (every channel but the root block: the
joints' 6D rotations and the contact nodes, as the original's evaluation keeps them). The original fills an L x L x L'
table with a C++ kernel; here a prefix sum along each diagonal gives any window's cost in O(1),
and the segmentation DP of global diversity runs over a per-segment minimum computed in bulk.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields

import torch

from .naturalness import Naturalness

COVERAGE_WINDOW, COVERAGE_THRESHOLD = 30, 2.0
GLOBAL_MIN_SEGMENT = 30
LOCAL_WINDOW = 15


def pose_frames(features: torch.Tensor, layout) -> torch.Tensor:
    """(..., channels, T) features -> (..., T, 6(J + C)): the per-frame features the metrics compare."""
    return features[..., layout.pose, :].transpose(-1, -2)


def diagonal_prefix(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """P (..., L1+1, L2+1) with P[i, k] = sum_{t<min(i,k)} cost[i-1-t, k-1-t], cost = cdist(src, tgt).

    The cost of matching src[i:i+w] to tgt[k:k+w] frame by frame is P[i+w, k+w] - P[i, k].
    """
    cost = torch.cdist(src.double(), tgt.double())
    *batch, L1, L2 = cost.shape
    i = torch.arange(L1, device=cost.device)[:, None]
    k = torch.arange(L2, device=cost.device)[None, :]
    diag = (k - i + L1 - 1).expand(*batch, L1, L2)  # column = which diagonal
    skewed = cost.new_zeros(*batch, L1, L1 + L2 - 1).scatter_(-1, diag, cost).cumsum(-2)
    prefix = cost.new_zeros(*batch, L1 + 1, L2 + 1)
    prefix[..., 1:, 1:] = skewed.gather(-1, diag)
    return prefix


def best_window_costs(src: torch.Tensor, tgt: torch.Tensor, window: int, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """For each src window start (the original's range: all but the last), the mean per-frame cost
    of its best diagonal match in tgt: (..., L1 - window). `prefix`: diagonal_prefix(src, tgt), if known."""
    L1, L2 = src.shape[-2], tgt.shape[-2]
    if L1 <= window or L2 < window:
        return src.new_full((*src.shape[:-2], max(L1 - window, 1)), float("nan"), dtype=torch.float64)
    P = diagonal_prefix(src, tgt) if prefix is None else prefix
    sums = P[..., window:, window:] - P[..., :L1 + 1 - window, :L2 + 1 - window]
    return sums[..., :L1 - window, :].amin(-1) / window


def coverage(generated: torch.Tensor, real: torch.Tensor, window: int = COVERAGE_WINDOW,
             threshold: float = COVERAGE_THRESHOLD, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Share of the real clip's windows that the generated clip reproduces (cost under threshold).
    `prefix`: diagonal_prefix(generated, real), if known (the real clip's is its transpose)."""
    real = real.expand(*generated.shape[:-2], *real.shape[-2:])
    costs = best_window_costs(real, generated, window, None if prefix is None else prefix.transpose(-1, -2))
    return (costs < threshold).double().mean(-1).where(~costs.isnan().any(-1), costs.new_tensor(float("nan")))


def local_diversity(generated: torch.Tensor, real: torch.Tensor, window: int = LOCAL_WINDOW,
                    prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the generated clip's short windows of the cost of their best match in the real clip."""
    real = real.expand(*generated.shape[:-2], *real.shape[-2:])
    return best_window_costs(generated, real, window, prefix).mean(-1)


def global_diversity(generated: torch.Tensor, real: torch.Tensor, min_segment: int = GLOBAL_MIN_SEGMENT,
                     prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Cost per frame of the cheapest cut of the generated clip into segments of >= min_segment
    frames, each copied from a contiguous stretch of the real clip (0: a patchwork of the input).

    Only segments shorter than 2 x min_segment are tried: a longer one splits into two of at least
    min_segment frames that each match at most as dearly (the whole's match, cut in two, is one
    option for each), so the cheapest cut never needs it. That gives the original's minimum
    exactly, with min_segment segment lengths tried instead of the clip's length (25x fewer on
    Salsa at twice the clip's length)."""
    real = real.expand(*generated.shape[:-2], *real.shape[-2:])
    L1, L2 = generated.shape[-2], real.shape[-2]
    batch = generated.shape[:-2]
    if L1 < min_segment or L2 < min_segment:
        return generated.new_full(batch, float("nan"), dtype=torch.float64)
    P = diagonal_prefix(generated, real) if prefix is None else prefix
    lengths = torch.arange(min_segment, min(2 * min_segment - 1, L1, L2) + 1)
    # ending[..., i, j]: best cost of the segment of lengths[j] frames that ends at frame i, as one copied stretch
    ending = P.new_full((*batch, L1 + 1, len(lengths)), float("inf"))
    for j, n in enumerate(lengths.tolist()):
        ending[..., n:, j] = (P[..., n:, n:] - P[..., :L1 + 1 - n, :L2 + 1 - n]).amin(-1)
    best = P.new_full((*batch, L1 + 1), float("inf"))
    best[..., 0] = 0
    for i in range(min_segment, L1 + 1):
        best[..., i] = (best[..., (i - lengths).clamp(min=0)] + ending[..., i, :]).amin(-1)
    return best[..., L1] / L1


@dataclass(frozen=True)
class Quality:
    """How good a model's motion is: the one record that validation, evaluation, the sweep's
    objective, ClearML and the summaries read and write, under these names."""

    coverage: float  # share of the clip's 30-frame windows that the samples reproduce (0..1)
    global_diversity: float  # per-frame cost of the samples as a patchwork of the clip (0: a copy)
    local_diversity: float  # mean cost of the samples' 15-frame windows against their best match
    rec_error: float  # L1 of the features reconstructed from z* against the clip's
    jitter: float  # the samples' mean joint jerk over the clip's (naturalness.py): 1 moves like the clip
    foot_skating: float  # feet's height-weighted sliding over the clip's (or the least measured), from positions
    # Contact joints' mean depth below the clip's floor, in its contact bands (the clip: about 0);
    # NaN in records written before it was measured (a resumed older sweep's stage ends).
    penetration: float = math.nan
    # How often contact joints stand on the ground, over the clip's (naturalness.py): 0 is feet that
    # hover. NaN in records written before it was measured.
    ground_contact: float = math.nan
    # How fast contact joints move over the ground, over the clip's (naturalness.py): 0 is feet
    # that stand still while the body moves. NaN in records written before it was measured.
    foot_motion: float = math.nan

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Quality":
        """From any mapping holding every name (a history event, a study's record, a ClearML task);
        a record older than a defaulted field gets its default."""
        return cls(**{name: float(values[name]) for name in cls.NAMES if name in values})

    @classmethod
    def of(cls, values: dict) -> "Quality | None":
        """From a record that may lack it (a configuration stopped before its first stage end): None then."""
        return cls.from_dict(values) if all(name in values for name in cls.REQUIRED) else None


Quality.NAMES = tuple(f.name for f in fields(Quality))  # the record's names, in order
Quality.REQUIRED = tuple(f.name for f in fields(Quality) if f.default is MISSING)  # what every record has


MIN_FACTOR = 1e-3  # a lower bound missed by more counts as missed by this much (coverage 0)


@dataclass(frozen=True)
class QualityBand:
    """Motion of published quality, by the original's evaluation and our naturalness measures:
    the paper's GANimator covers 97.2% of Gangnam Style at global diversity 1.29. Bounds are
    (low, high) of a Quality field, None where open.

    Foot skating is over the clip's own sliding or naturalness.SLIDING_FLOOR, whichever is more:
    against their own alone, clips whose feet barely slide read a quarter of a degree of rotation
    error as 1.6-2.5x. Penetration is in the clip's contact bands (the clip: 0). Rotation noise that multiplies
    the clip's jitter 8-30x keeps it under 0.08 on Salsa, Walk-In-Circle, proud and
    Crab-dance-long, while the clip lowered by 10 cm reads 2.7-6.9: 0.25 lets any noise through and
    stops sinking feet. Ground contact below 0.67 (a factor 1.5, as foot skating's) is feet that
    hover: the clip raised by 2% of a leg reads 0-0.35 on the five shared clips, and 1 degree of
    smooth rotation error 0.78-0.96 (naturalness.CONTACT_BANDS); it has no upper bound: feet on
    the ground all the time read 1 over the clip's share, 1.84 on proud and 1.14 on Salsa. Foot
    motion is what sees feet that stand still: a skating loss made proud's model stop walking
    at ground contact 2.0, foot skating 3.1 and jitter 1.17, where foot motion reads 0.034; the
    preset without the loss reads 0.97 (README; both at one band and without the floor). It is
    two-sided, by the factor 1.5 of the others: the clip played 1.5x slower reads 0.67-0.70, and
    feet that travel 1.5x as far as the clip's slide or race; speeds are compared above what 1
    degree of error adds (naturalness.TRAVEL_FLOOR), which read 1.85 on the crab, whose feet barely
    travel, and now reads 1.42."""

    coverage: tuple[float | None, float | None] = (0.95, None)
    global_diversity: tuple[float | None, float | None] = (1.0, 1.6)
    jitter: tuple[float | None, float | None] = (0.8, 1.25)
    foot_skating: tuple[float | None, float | None] = (None, 1.5)
    penetration: tuple[float | None, float | None] = (None, 0.25)
    ground_contact: tuple[float | None, float | None] = (0.67, None)
    foot_motion: tuple[float | None, float | None] = (0.67, 1.5)

    def misses(self, quality: Quality) -> list[str]:
        """The fields of `quality` outside the band (none: it is in)."""
        out = []
        for f in fields(self):
            low, high = getattr(self, f.name)
            value = getattr(quality, f.name)
            if not (low is None or value >= low) or not (high is None or value <= high) or value != value:
                out.append(f.name)
        return out

    def contains(self, quality: Quality) -> bool:
        return not self.misses(quality)

    def distance(self, quality: Quality) -> float:
        """How far `quality` lies outside the band: for each bound it misses, the log of the factor
        it misses it by, summed (0 inside; inf where a field is NaN). Factors, not differences, so
        that a field counts alike on every clip and in every unit: jitter twice the bound costs
        what coverage at half of its bound does. A value of 0 is read as MIN_FACTOR of a lower bound."""
        total = 0.0
        for f in fields(self):
            low, high = getattr(self, f.name)
            value = getattr(quality, f.name)
            if value != value:
                return math.inf
            if low is not None and value < low:
                total += math.log(low / max(value, low * MIN_FACTOR))
            if high is not None and value > high:
                total += math.log(value / high)
        return total

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            low, high = getattr(self, f.name)
            parts.append(f"{f.name} {'>= ' + format(low, 'g') if high is None else '<= ' + format(high, 'g') if low is None else f'{low:g}-{high:g}'}")
        return ", ".join(parts)


PUBLISHED = QualityBand()


def pose_scores(generated: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each of the (B, T, D) samples' coverage, global and local diversity against a (T0, D) clip:
    (B,) each, from one cost matrix.

    Coarse pyramid levels of a short clip can be shorter than the original's windows; there
    the windows shrink to fit, so that every level of every clip gets a score (the original
    scores only the finest level, where the windows are as defined)."""
    shortest = min(generated.shape[-2], real.shape[-2])
    P = diagonal_prefix(generated, real.expand(*generated.shape[:-2], *real.shape[-2:]))
    return {"coverage": coverage(generated, real, min(COVERAGE_WINDOW, shortest - 1), prefix=P),
            "global_diversity": global_diversity(generated, real, min(GLOBAL_MIN_SEGMENT, shortest), prefix=P),
            "local_diversity": local_diversity(generated, real, min(LOCAL_WINDOW, shortest - 1), prefix=P)}


def quality(generated: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """The samples' mean coverage, global and local diversity (pose_scores)."""
    return {k: v.mean().item() for k, v in pose_scores(generated, real).items()}


class Scorer:
    """Samples scored against every training clip at one pyramid level (None: the clips
    themselves): pose scores and naturalness (naturalness.py), one value per clip and sample.
    Their means pool the clips, as the original evaluates a multi-clip run (coverage of each)."""

    def __init__(self, dataset, level: int | None = None):
        self.layout = dataset.layout
        references = [clip.features if level is None else clip.levels()[level] for clip in dataset.clips]
        self.clips = [(pose_frames(real, self.layout), Naturalness(dataset, real, clip=k))
                      for k, real in enumerate(references)]

    def __call__(self, samples: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, C, T) samples -> each Quality name but rec_error: (clips * N,) values."""
        frames, scores = pose_frames(samples, self.layout), {}
        for real, natural in self.clips:
            for name, values in {**pose_scores(frames, real), **natural(samples)}.items():
                scores.setdefault(name, []).append(values)
        return {name: torch.cat(values) for name, values in scores.items()}
