"""Motion <-> the GAN's per-frame feature channels, in the original GANimator's layout.

The channels are 6-wide nodes, J + C + 1 of them, first to last:
- each joint: its 6D rotation, the first two ROWS of its local rotation matrix (the original's
  `quat2repr6d`);
- each contact joint: a node holding its contact label and 5 zeros;
- the root: x velocity, y position (height), z velocity and 3 zeros.
The zero channels are not waste: noise amplitudes are an RMS over all channels and the L1
reconstruction loss a mean over them, so they set the effective noise and lambda_rec exactly as
in the original; and every node owning 6 channels is what the skeleton-aware convolutions need.
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


def motion_from_bvh(bvh: BVH, rig: Rig | None = None, fps: float | None = TARGET_FPS) -> tuple[Skeleton, Motion]:
    """The rig's joints of a BVH clip, in metres, subsampled to about `fps` frames a second (None:
    every frame)."""
    skeleton, index = select_joints(bvh, rig)
    stride = 1 if fps is None else max(1, round(1.0 / (fps * bvh.frame_time)))
    rotations = bvh.local_rotations()[::stride][:, index]
    root = torch.from_numpy(bvh.local_translations()[::stride, index[0]] * skeleton.scale)
    return skeleton, Motion(rotations, root, fps=1.0 / (bvh.frame_time * stride))


def load_motion(path, rig: Rig | None = None, fps: float | None = TARGET_FPS) -> tuple[Skeleton, Motion]:
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
    labels = (speed < skeleton.contact_threshold).to(motion.rotations.dtype)
    return torch.cat([torch.zeros_like(labels[:1]), labels])  # frame 0 has no velocity: 0, as the original


NODE = 6  # channels per node: a 6D rotation, a contact label and 5 zeros, or the root block


@dataclass(frozen=True)
class FeatureLayout:
    num_joints: int
    num_contacts: int

    @property
    def num_nodes(self) -> int:
        return self.num_joints + self.num_contacts + 1

    @property
    def channels(self) -> int:
        return NODE * self.num_nodes

    @property
    def rotations(self) -> slice:
        return slice(0, NODE * self.num_joints)

    @property
    def contacts(self) -> slice:  # the label channel of each contact node
        return slice(NODE * self.num_joints, NODE * (self.num_joints + self.num_contacts), NODE)

    @property
    def root(self) -> slice:  # x velocity, y position, z velocity
        start = NODE * (self.num_joints + self.num_contacts)
        return slice(start, start + 3)

    @property
    def trajectory(self) -> list[int]:
        """The root's rotation and its root block (velocities and height): what a conditional
        generator is given (the original's conditional mode 'locrot')."""
        return [*range(NODE), self.root.start, self.root.start + 1, self.root.start + 2]

    @property
    def pose(self) -> slice:
        """Everything but the root block: what the original's evaluation compares."""
        return slice(0, NODE * (self.num_joints + self.num_contacts))


def encode(motion: Motion, skeleton: Skeleton, contacts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (channels, T) and the root's first x/z position, which velocities lose."""
    T, J = motion.rotations.shape[:2]
    if contacts is None:
        contacts = contact_labels(motion, skeleton)
    rot6d = motion.rotations[..., :2, :].reshape(T, NODE * J)
    contact_nodes = rot6d.new_zeros(T, contacts.shape[1], NODE)
    contact_nodes[..., 0] = contacts
    xz = motion.root_positions[:, [0, 2]]
    velocity = torch.cat([xz[1:2] - xz[:1], xz[1:] - xz[:-1]]) if T > 1 else torch.zeros_like(xz)
    root = torch.stack([velocity[:, 0], motion.root_positions[:, 1], velocity[:, 1]], dim=1)
    features = torch.cat([rot6d, contact_nodes.flatten(1), root, root.new_zeros(T, NODE - 3)], dim=1)
    return features.T.contiguous(), xz[0].clone()


def decode(features: torch.Tensor, layout: FeatureLayout, begin_xz: torch.Tensor) -> tuple[Motion, torch.Tensor]:
    """Features (..., channels, T) back to a Motion and the raw contact channels (..., T, C)."""
    x = features.transpose(-1, -2)  # (..., T, channels)
    rows = x[..., layout.rotations].unflatten(-1, (layout.num_joints, 2, 3))
    # Gram-Schmidt on the two rows (as the original's repr6d2mat), done by roma on columns.
    rotations = roma.special_gramschmidt(rows.transpose(-1, -2)).transpose(-1, -2)
    root = x[..., layout.root]
    velocity = torch.stack([root[..., 0], root[..., 2]], dim=-1)
    velocity = torch.cat([torch.zeros_like(velocity[..., :1, :]), velocity[..., 1:, :]], dim=-2)
    xz = velocity.cumsum(dim=-2) + begin_xz.to(features)
    root_positions = torch.stack([xz[..., 0], root[..., 1], xz[..., 1]], dim=-1)
    return Motion(rotations, root_positions), x[..., layout.contacts]


def retime(features: torch.Tensor, layout: FeatureLayout, factor: float) -> torch.Tensor:
    """Features with the root's velocities (per frame) multiplied by `factor`: a pyramid level's
    frames stand `factor` training frames apart, but its velocity channels, resampled from the
    clip's, are per training frame; retime(level, factor) reads them per level frame."""
    out = features.clone()
    out[..., [layout.root.start, layout.root.start + 2], :] *= factor
    return out


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
