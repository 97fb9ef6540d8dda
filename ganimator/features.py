"""Motion <-> the GAN's per-frame feature channels (the seed's layout).

Channels, first to last: 6D rotation of each joint (the first two columns of its local rotation
matrix), one label per contact joint, root x velocity, root z velocity, root height (y).
Tensors are channels-first, (..., channels, frames), as the 1-D convolutions want them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import torch

from .bvh import BVH, BVHError, read_bvh
from .kinematics import forward_kinematics
from .skeleton import Rig, Skeleton, select_joints

TARGET_FPS = 30


@dataclass
class Motion:
    """A clip on a Skeleton: local rotations and the root's path, in metres."""

    rotations: torch.Tensor  # (..., T, J, 3, 3)
    root_positions: torch.Tensor  # (..., T, 3)
    fps: float = TARGET_FPS

    @property
    def num_frames(self) -> int:
        return self.rotations.shape[-4]

    def joint_positions(self, skeleton: Skeleton) -> torch.Tensor:
        """(..., T, J, 3) global joint positions."""
        offsets = torch.as_tensor(skeleton.offsets, dtype=self.rotations.dtype, device=self.rotations.device)
        translations = offsets.expand(*self.rotations.shape[:-2], 3).clone()
        translations[..., 0, :] = self.root_positions
        return forward_kinematics(self.rotations, translations, skeleton.parents)


def motion_from_bvh(bvh: BVH, rig: Rig | None = None, fps: float = TARGET_FPS) -> tuple[Skeleton, Motion]:
    """The rig's joints of a BVH clip, in metres, subsampled to about `fps` frames a second."""
    skeleton, index = select_joints(bvh, rig)
    stride = max(1, round(1.0 / (fps * bvh.frame_time)))
    rotations = bvh.local_rotations()[::stride][:, index]
    root = torch.from_numpy(bvh.local_translations()[::stride, index[0]] * skeleton.scale)
    return skeleton, Motion(rotations, root, fps=1.0 / (bvh.frame_time * stride))


def load_motion(path, rig: Rig | None = None, fps: float = TARGET_FPS) -> tuple[Skeleton, Motion]:
    try:
        return motion_from_bvh(read_bvh(path), rig, fps)
    except ValueError as e:
        if isinstance(e, BVHError):
            raise
        raise BVHError(path, None, str(e)) from None


def contact_labels(motion: Motion, skeleton: Skeleton) -> torch.Tensor:
    """(T, C) 1 where a contact joint moves less than the rig's threshold in a frame."""
    positions = motion.joint_positions(skeleton)[..., skeleton.contacts, :]
    speed = (positions[1:] - positions[:-1]).norm(dim=-1)
    speed = torch.cat([speed[:1], speed])  # frame 0 takes frame 1's label
    return (speed < skeleton.contact_threshold).to(motion.rotations.dtype)


@dataclass(frozen=True)
class FeatureLayout:
    num_joints: int
    num_contacts: int

    @property
    def channels(self) -> int:
        return 6 * self.num_joints + self.num_contacts + 3

    @property
    def rotations(self) -> slice:
        return slice(0, 6 * self.num_joints)

    @property
    def contacts(self) -> slice:
        return slice(6 * self.num_joints, 6 * self.num_joints + self.num_contacts)

    @property
    def root(self) -> slice:  # x velocity, z velocity, y position
        return slice(self.channels - 3, self.channels)

    def channel_joints(self) -> np.ndarray:
        """The joint each channel belongs to (root channels to the root), for skeleton-aware convs."""
        return np.concatenate([np.repeat(np.arange(self.num_joints), 6), np.zeros(self.num_contacts + 3, int)])


def encode(motion: Motion, skeleton: Skeleton, contacts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (channels, T) and the root's first x/z position, which velocities lose."""
    T, J = motion.rotations.shape[:2]
    if contacts is None:
        contacts = contact_labels(motion, skeleton)
    rot6d = motion.rotations[..., :2].reshape(T, 6 * J)
    xz = motion.root_positions[:, [0, 2]]
    velocity = torch.cat([xz[1:2] - xz[:1], xz[1:] - xz[:-1]]) if T > 1 else torch.zeros_like(xz)
    root = torch.cat([velocity, motion.root_positions[:, 1:2]], dim=1)
    features = torch.cat([rot6d, contacts.to(rot6d.dtype), root], dim=1).T.contiguous()
    return features, xz[0].clone()


def decode(features: torch.Tensor, layout: FeatureLayout, begin_xz: torch.Tensor) -> tuple[Motion, torch.Tensor]:
    """Features (..., channels, T) back to a Motion and the raw contact channels (..., T, C)."""
    x = features.transpose(-1, -2)  # (..., T, channels)
    rot = x[..., layout.rotations].unflatten(-1, (layout.num_joints, 3, 2))
    rotations = roma.special_gramschmidt(rot)
    root = x[..., layout.root]
    velocity = torch.cat([torch.zeros_like(root[..., :1, :2]), root[..., 1:, :2]], dim=-2)
    xz = velocity.cumsum(dim=-2) + begin_xz.to(features)
    root_positions = torch.stack([xz[..., 0], root[..., 2], xz[..., 1]], dim=-1)
    return Motion(rotations, root_positions), x[..., layout.contacts]


def motion_to_bvh(motion: Motion, skeleton: Skeleton) -> BVH:
    """A BVH of the skeleton in the source's units and rotation orders (Blender opens it)."""
    columns, channels = [motion.root_positions.double() / skeleton.scale], []
    for j, order in enumerate(skeleton.rotation_orders):
        rot_channels = tuple(f"{axis}rotation" for axis in order)
        channels.append((("Xposition", "Yposition", "Zposition") if j == 0 else ()) + rot_channels)
        columns.append(roma.rotmat_to_euler(order, motion.rotations[:, j].double(), degrees=True))
    end_sites = {j: s / skeleton.scale for j, s in enumerate(skeleton.end_sites) if np.isfinite(s).all()}
    return BVH(names=list(skeleton.names), parents=list(skeleton.parents), offsets=skeleton.offsets / skeleton.scale,
               channels=channels, frame_time=1.0 / motion.fps, motion=torch.cat(columns, dim=1).numpy(),
               end_sites=end_sites)
