"""Forward kinematics on batched torch tensors (differentiable: the contact loss uses it)."""
from __future__ import annotations

import torch


def forward_kinematics(rotations: torch.Tensor, translations: torch.Tensor, parents) -> torch.Tensor:
    """Global joint positions.

    rotations: (..., J, 3, 3) local rotations; translations: (..., J, 3) local translations, the
    root's being its global position. Parents must precede children (BVH order guarantees it).
    """
    global_rot = [rotations[..., 0, :, :]]
    global_pos = [translations[..., 0, :]]
    for j in range(1, len(parents)):
        p = parents[j]
        global_pos.append(global_pos[p] + (global_rot[p] @ translations[..., j, :, None])[..., 0])
        global_rot.append(global_rot[p] @ rotations[..., j, :, :])
    return torch.stack(global_pos, dim=-2)
