"""Motion <-> the GAN's per-frame feature channels, in the original GANimator's layout.

The channels are 6-wide nodes, J + C + 1 of them, first to last:
- each joint: its 6D rotation, the first two ROWS of its local rotation matrix (the original's
  `quat2repr6d`);
- each contact joint: a node holding its contact label and 5 zeros;
- the root: x velocity, y position (height), z velocity and 3 zeros.
The root block is in the clip's units (metres after the BVH scale), as in the original, unless
`RootUnits` says otherwise (data.root_scale: a measured deviation, README).
The zero channels are not waste: noise amplitudes are an RMS over all channels and the L1
reconstruction loss a mean over them, so they set the effective noise and lambda_rec exactly as
in the original; and every node owning 6 channels is what the skeleton-aware convolutions need.
Tensors are channels-first, (..., channels, frames), as the 1-D convolutions want them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .conversions import matrix_to_rot6d, rot6d_to_matrix
from .kinematics import contact_labels
from .motion import Motion
from .skeleton import Skeleton

NODE = 6  # channels per node: a 6D rotation, a contact label and 5 zeros, or the root block


@dataclass(frozen=True)
class RootUnits:
    """How the root block's channels read: the height as (y - offset) * scale, the velocities as
    v * scale. The original's (0, 1) keeps them raw, a height of ~1 m or more beside rotation
    channels whose motion is a few hundredths: a generator error that is small in feature space
    (noise it has not yet learnt to cancel) is then a large error in metres, feet through the
    floor and sliding. Centred and scaled up, the same error costs `scale` times less."""

    offset: float = 0.0
    scale: float = 1.0

    def encode(self, root: torch.Tensor) -> torch.Tensor:
        """(..., 3, T) raw root channels (x velocity, height, z velocity) in these units."""
        shift = root.new_tensor([0.0, self.offset, 0.0])[:, None]
        return (root - shift) * self.scale

    def decode(self, root: torch.Tensor) -> torch.Tensor:
        shift = root.new_tensor([0.0, self.offset, 0.0])[:, None]
        return root / self.scale + shift


RAW = RootUnits()  # the original's


@dataclass(frozen=True)
class FeatureLayout:
    num_joints: int
    num_contacts: int
    root_units: RootUnits = RAW

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


def encode(motion: Motion, skeleton: Skeleton, contacts: torch.Tensor | None = None,
           units: RootUnits = RAW) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (channels, T), their root block in `units`, and the root's first x/z position,
    which velocities lose."""
    T, J = motion.rotations.shape[:2]
    if contacts is None:
        contacts = contact_labels(motion, skeleton)
    rot6d = matrix_to_rot6d(motion.rotations).reshape(T, NODE * J)
    contact_nodes = rot6d.new_zeros(T, contacts.shape[1], NODE)
    contact_nodes[..., 0] = contacts
    xz = motion.root_positions[:, [0, 2]]
    velocity = torch.cat([xz[1:2] - xz[:1], xz[1:] - xz[:-1]]) if T > 1 else torch.zeros_like(xz)
    root = units.encode(torch.stack([velocity[:, 0], motion.root_positions[:, 1], velocity[:, 1]])).T  # (T, 3)
    features = torch.cat([rot6d, contact_nodes.flatten(1), root, root.new_zeros(T, NODE - 3)], dim=1)
    return features.T.contiguous(), xz[0].clone()


def decode(features: torch.Tensor, layout: FeatureLayout, begin_xz: torch.Tensor,
           fps: float) -> tuple[Motion, torch.Tensor]:
    """Features (..., channels, T) at `fps` back to a Motion and the raw contact channels (..., T, C)."""
    x = features.transpose(-1, -2)  # (..., T, channels)
    rotations = rot6d_to_matrix(x[..., layout.rotations].unflatten(-1, (layout.num_joints, NODE)))
    root = layout.root_units.decode(features[..., layout.root, :]).transpose(-1, -2)
    velocity = torch.stack([root[..., 0], root[..., 2]], dim=-1)
    velocity = torch.cat([torch.zeros_like(velocity[..., :1, :]), velocity[..., 1:, :]], dim=-2)
    xz = velocity.cumsum(dim=-2) + begin_xz.to(features)
    root_positions = torch.stack([xz[..., 0], root[..., 1], xz[..., 1]], dim=-1)
    return Motion(rotations, root_positions, fps), x[..., layout.contacts]


def convert(features: torch.Tensor, layout: FeatureLayout, units: RootUnits) -> torch.Tensor:
    """Features of `layout` with their root block in `units` instead."""
    out = features.clone()
    out[..., layout.root, :] = units.encode(layout.root_units.decode(features[..., layout.root, :]))
    return out


def retime(features: torch.Tensor, layout: FeatureLayout, factor: float) -> torch.Tensor:
    """Features with the root's velocities (per frame) multiplied by `factor`: a pyramid level's
    frames stand `factor` training frames apart, but its velocity channels, resampled from the
    clip's, are per training frame; retime(level, factor) reads them per level frame."""
    out = features.clone()
    out[..., [layout.root.start, layout.root.start + 2], :] *= factor
    return out
