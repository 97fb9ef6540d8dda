"""The temporal pyramid: level lengths, resampling between levels, per-level noise amplitudes."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COARSEST_RATIO = 1 / 5
LEVEL_SCALE = 1 / 0.75


# The networks' 5-frame kernels pad 2 frames on each side by reflection, which needs 3 frames.
MIN_LEVEL_FRAMES = 3


def min_clip_frames(coarsest_ratio: float = COARSEST_RATIO) -> int:
    """The shortest clip whose coarsest level has MIN_LEVEL_FRAMES frames (15 at the default 1/5)."""
    n = math.ceil(MIN_LEVEL_FRAMES / coarsest_ratio) - 1  # one below: 3 / (1/30) rounds up past 90
    while int(n * coarsest_ratio) < MIN_LEVEL_FRAMES:
        n += 1
    return n


def pyramid_lengths(num_frames: int, coarsest_ratio: float = COARSEST_RATIO, scale: float = LEVEL_SCALE) -> list[int]:
    """Frames per level, coarsest first; the original's rule (floor, +1 when a level would repeat)."""
    lengths = [int(num_frames * coarsest_ratio)]
    if lengths[0] < MIN_LEVEL_FRAMES:
        raise ValueError(f"{num_frames} frames are too few: the shortest clip the pyramid supports at ratio "
                         f"{coarsest_ratio:.4g} has {min_clip_frames(coarsest_ratio)} frames (a coarsest level "
                         f"of {MIN_LEVEL_FRAMES})")
    while lengths[-1] < num_frames:
        nxt = int(lengths[-1] * scale)
        lengths.append(nxt + 1 if nxt == lengths[-1] else nxt)
    lengths[-1] = num_frames
    return lengths


def scaled_lengths(lengths: list[int], target: int) -> list[int]:
    """The training pyramid stretched so that its last level has `target` frames."""
    ratio = target / lengths[-1]
    return [max(1, round(n * ratio)) for n in lengths[:-1]] + [target]


def resample(x: torch.Tensor, length: int) -> torch.Tensor:
    """Linear resampling along time of (B, C, T)."""
    if x.shape[-1] == length:
        return x
    return F.interpolate(x, size=length, mode="linear", align_corners=False)


def build_pyramid(features: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """(..., C, T) features -> one (..., C, length) tensor per level."""
    batch = features.reshape(-1, *features.shape[-2:])
    return [resample(batch, n).reshape(*features.shape[:-1], n) for n in lengths]


def noise_amplitudes(levels: list[torch.Tensor]) -> torch.Tensor:
    """RMS of what each level adds to the upsampled level below it (level 0: to nothing)."""
    amps = [levels[0].pow(2).mean().sqrt()]
    for prev, cur in zip(levels, levels[1:]):
        amps.append((cur - resample(prev[None], cur.shape[-1])[0]).pow(2).mean().sqrt())
    return torch.stack(amps)
