"""Naturalness of generated motion, from forward kinematics alone (no learned model).

Coverage and diversity compare poses with the clip's and cannot see how motion moves between
frames: jittery samples from an under-trained model score as diverse. These two measures can:

- **jitter**: the mean magnitude of the joints' jerk (the third time derivative of their global
  positions, m/s^3), of the samples divided by the clip's own. The clip scores 1; noise in the
  rotations raises it fast (jerk amplifies frame-to-frame noise by about 20 x fps^3), and smoother
  or slower motion than the clip's lowers it.
- **foot_skating**: the mean horizontal speed (m/s) of contact joints in the frames where they are
  labelled in contact (the samples' own contact channels, > 0.5, at both ends of the step), of the
  samples divided by the clip's. A planted foot that slides raises it; the clip scores 1 (motion
  capture skates a little too, which the ratio cancels).

Both are ratios to the clip measured the same way, so they need no unit or frame-rate choice and
read alike on every clip: near 1 is as natural as the input.
"""
from __future__ import annotations

import torch

from .dataset import MotionDataset

CONTACT = 0.5  # a contact channel above this is a foot on the ground


def kinematics(features: torch.Tensor, dataset: MotionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., C, T) features -> global joint positions (..., T, J, 3) in metres and contacts (..., T, K)."""
    motion, contacts = dataset.decode(features.double())
    return motion.joint_positions(dataset.skeleton), contacts > CONTACT


def jerk(positions: torch.Tensor, fps: float) -> torch.Tensor:
    """Mean jerk magnitude (m/s^3) of (..., T, J, 3) positions, one value per leading index."""
    third = positions.diff(n=3, dim=-3) * fps ** 3
    return third.norm(dim=-1).mean(dim=(-1, -2))


def skating(positions: torch.Tensor, contacts: torch.Tensor, contact_joints: list[int], fps: float) -> torch.Tensor:
    """Mean horizontal speed (m/s) of the contact joints over steps where both ends are in contact
    (0 when a sample never plants a foot), one value per leading index."""
    feet = positions[..., contact_joints, :]  # (..., T, K, 3)
    step = feet.diff(dim=-3)[..., [0, 2]].norm(dim=-1) * fps  # x and z: y is up
    planted = (contacts[..., 1:, :] & contacts[..., :-1, :]).to(step.dtype)
    return (step * planted).sum(dim=(-1, -2)) / planted.sum(dim=(-1, -2)).clamp(min=1)


class Naturalness:
    """Samples' jitter and foot skating relative to one clip's, whose own are measured once.

    `reference`: the features of the dataset's clip `clip` at one pyramid level (default: the
    finest, the clip itself); samples are then compared at that level, whose frame rate is the
    clip's scaled by its length."""

    def __init__(self, dataset: MotionDataset, reference: torch.Tensor | None = None, clip: int = 0):
        full = dataset.clips[clip].features
        reference = full if reference is None else reference
        self.dataset, self.joints = dataset, dataset.skeleton.contacts
        self.fps = dataset.motion.fps * reference.shape[-1] / full.shape[-1]
        positions, contacts = kinematics(reference.cpu(), dataset)
        self.jerk = jerk(positions, self.fps)
        self.skating = skating(positions, contacts, self.joints, self.fps).clamp(min=1e-6)

    def __call__(self, samples: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each (N, C, T) sample's jitter and foot skating: (N,) each."""
        positions, contacts = kinematics(samples.cpu(), self.dataset)
        return {"jitter": jerk(positions, self.fps) / self.jerk,
                "foot_skating": skating(positions, contacts, self.joints, self.fps) / self.skating}


def naturalness(samples: torch.Tensor, dataset: MotionDataset) -> dict[str, torch.Tensor]:
    """Each (N, C, T) sample's jitter and foot skating, relative to the clip's own: (N,) each."""
    return Naturalness(dataset)(samples)
