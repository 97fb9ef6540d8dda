"""The Motion type: a clip on a Skeleton (skeleton.py), tensor-first (fairmotion's core/motion
without per-frame Pose objects). Reading and writing it: bvh.py; operations: kinematics.py."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .kinematics import forward_kinematics
from .skeleton import Skeleton


@dataclass
class Motion:
    """Local rotations and the root's path, in metres, at `fps` frames a second."""

    rotations: torch.Tensor  # (..., T, J, 3, 3)
    root_positions: torch.Tensor  # (..., T, 3)
    fps: float

    @property
    def num_frames(self) -> int:
        return self.rotations.shape[-4]

    def joint_positions(self, skeleton: Skeleton) -> torch.Tensor:
        """(..., T, J, 3) global joint positions."""
        offsets = torch.as_tensor(skeleton.offsets, dtype=self.rotations.dtype, device=self.rotations.device)
        translations = offsets.expand(*self.rotations.shape[:-2], 3).clone()
        translations[..., 0, :] = self.root_positions
        return forward_kinematics(self.rotations, translations, skeleton.parents)
