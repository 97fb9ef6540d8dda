"""Naturalness of generated motion, from forward kinematics alone (no learned model).

Coverage and diversity compare poses with the clip's and cannot see how motion moves between
frames: jittery samples from an under-trained model score as diverse. These two measures can:

- **jitter**: the mean magnitude of the joints' jerk (the third time derivative of their global
  positions, m/s^3), of the samples divided by the clip's own. The clip scores 1; noise in the
  rotations raises it fast (jerk amplifies frame-to-frame noise by about 20 x fps^3), and smoother
  or slower motion than the clip's lowers it.
- **foot_skating**: how fast contact joints slide while near the ground, from positions alone:
  each contact joint's horizontal speed (m/s), weighted by 2 - 2^(h/H) (Zhang et al. 2018,
  clamped to [0, 1]) where h is its height above where it stands in the clip and H the band of
  heights it keeps while the clip holds it still, of the samples divided by the clip's. A planted
  foot that slides raises it; a foot in the air does not; the clip scores 1 (motion capture
  skates a little too, which the ratio cancels). The samples' own contact channels are not read:
  a model that never labels a foot planted used to score 0 here. A clip whose feet barely slide
  is measured against SLIDING_FLOOR instead, and scores below 1: its own sliding is no yardstick.
- **penetration**: how deep contact joints go below the clip's floor (where its lowest contact
  joint stands), averaged over frames and joints, in units of the clip's contact band H: how
  deep and how often at once. The clip scores about 0; the clip lowered by 10 cm, 2.7-6.9 on
  the shared clips.
- **ground_contact**: how often contact joints stand within 1.5 contact bands H of where they
  rest (or below), of the samples over the clip's. A model whose feet hover above the floor
  scores 0 on foot skating and penetration both, and looks as good as the clip there; this sees
  it: the clip scores 1, the clip raised by 2% of a leg 0-0.35 on the shared clips, by 3% at
  most 0.12 (CONTACT_BANDS: why 1.5).
- **foot_motion**: how fast contact joints move over the ground (their mean horizontal speed),
  of the samples over the clip's. Feet that stand still while the body moves neither slide, sink
  nor hover, and the body jerks no less: only this sees that nothing walks. A loss on sliding
  taught proud's model exactly that (feet at 3-4% of the clip's speed, lifted a sixth as high)
  at foot skating 3.1 and jitter 1.17 (README). The clip scores 1; played 1.5x slower, 0.67-0.70
  (speeds are compared above TRAVEL_FLOOR, which error alone reaches on clips whose feet barely
  travel).

Jitter, foot skating, ground contact and foot motion are ratios to the clip measured the same way,
so they need no unit or frame-rate choice and read alike on every clip: near 1 is as natural as
the input.
"""
from __future__ import annotations

import torch

from .dataset import MotionDataset

CONTACT = 0.5  # a contact channel above this is a foot on the ground


def kinematics(features: torch.Tensor, dataset: MotionDataset, clip: int) -> torch.Tensor:
    """(..., C, T) features -> global joint positions (..., T, J, 3) in metres, starting where the
    dataset's clip `clip` starts. The contact channels are not read: they are the model's guess,
    not a measurement."""
    motion, _ = dataset.clips[clip].decode(features.double())
    return motion.joint_positions(dataset.skeleton)


def jerk(positions: torch.Tensor, fps: float) -> torch.Tensor:
    """Mean jerk magnitude (m/s^3) of (..., T, J, 3) positions, one value per leading index."""
    third = positions.diff(n=3, dim=-3) * fps ** 3
    return third.norm(dim=-1).mean(dim=(-1, -2))


MIN_BAND = 0.01  # m: a contact band narrower than this is measurement noise

# The least sliding foot skating is measured against, in reaches (Skeleton.reach: a leg's length)
# a second. Smooth rotation error of 1 degree, which nobody sees, adds 0.027-0.035 of sliding to
# each of proud, normal, Walk-In-Circle, Salsa-Dancing-6 and Crab-dance-long (a rotation moves a
# foot by its angle times the leg), while proud's, normal's and the crab's own feet slide
# 0.003-0.007: against that alone, an error of a quarter of a degree read 1.6-2.5x, outside the
# band, and one of 2 degrees 8-30x. Against the floor, 1 degree reads 1.0-1.35 on all five and 2
# degrees 1.1-3.1. Clips that slide more (Salsa 0.36, Walk-In-Circle 0.12) are measured as before.
SLIDING_FLOOR = 0.03

# Ground contact counts a foot within this many contact bands of its rest. The band is the 90th
# percentile of the clip's still heights, and some clips hold their feet at its top: the crab's
# stand at 0.96-1.0 of it in 20-80% of frames, so at one band a quarter of a degree of error (a
# foot moved 0.5% of a leg) read 0.70, outside the band, and 1 degree 0.66-0.92 across the five
# clips. At 1.5 bands a quarter of a degree reads 0.99-1.0 and 1 degree 0.78-0.96, while feet
# raised by 2% of a leg read 0-0.35 and by 3% 0-0.12 on all five, outside the band.
CONTACT_BANDS = 1.5

# Foot motion compares the contact joints' speeds above this, in reaches a second (both the
# samples' and the clip's gain it): 1 degree of smooth error moves feet by 0.045-0.08 of a leg a
# second, which doubled the crab's (its feet travel 0.096: foot motion 1.85, outside the band)
# and nobody else's (0.85-0.94: 1.05-1.08). Above it, 1 degree reads 1.42 on the crab, 2 degrees
# 1.89; feet that stand still read 0.1 on a walk or a dance and 0.51 on the crab, still outside.
TRAVEL_FLOOR = 0.1


class Ground:
    """Where the clip's contact joints stand, measured once from the clip's own positions at its
    full frame rate (heights do not depend on it, and the coarse levels are too few frames to
    find a still foot in): the floor (the 1st percentile of each frame's lowest contact joint, so
    that one glitched frame does not lower it), each joint's rest height above it (its 5th
    percentile: a heel rests higher than a toe tip) and its contact band H (the 90th percentile
    of its height above rest while the clip holds it still, by the rig's contact threshold; at
    least MIN_BAND). A rig without contact joints has none of these, and scores 0."""

    def __init__(self, positions: torch.Tensor, joints: list[int], still_step: float):
        self.joints = joints
        heights = positions[:, joints, 1]  # (T, K)
        if not joints:
            self.floor, self.rest, self.band = heights.new_tensor(0.0), heights.new_zeros(0), heights.new_zeros(0)
            return
        self.floor = heights.amin(dim=1).quantile(0.01)
        above = heights - self.floor
        self.rest = above.quantile(0.05, dim=0).clamp(min=0)
        still = positions[:, joints].diff(dim=0).norm(dim=-1) < still_step  # (T-1, K)
        lifted = (above[1:] - self.rest).clamp(min=0)
        band = [lifted[still[:, k], k].quantile(0.9) if still[:, k].any() else lifted.new_tensor(MIN_BAND)
                for k in range(len(joints))]
        self.band = torch.stack(band).clamp(min=MIN_BAND)

    def steps(self, positions: torch.Tensor, fps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The contact joints of (..., T, J, 3) positions, (..., T, K, 3), and their horizontal speed
        (m/s) from each frame to the next, (..., T-1, K)."""
        feet = positions[..., self.joints, :]
        return feet, feet.diff(dim=-3)[..., [0, 2]].norm(dim=-1) * fps  # x and z: y is up

    def sliding(self, positions: torch.Tensor, fps: float) -> torch.Tensor:
        """Mean height-weighted horizontal speed (m/s) of the contact joints of (..., T, J, 3)
        positions, one value per leading index (0 on a rig without contact joints)."""
        feet, speed = self.steps(positions, fps)
        height = (feet[..., 1:, :, 1] + feet[..., :-1, :, 1]) / 2 - self.floor - self.rest  # mid-step, above rest
        weight = (2 - 2 ** (height.clamp(min=0) / self.band)).clamp(min=0)  # 1 at rest or below, 0 a band above
        return (speed * weight).mean(dim=(-1, -2)) if self.joints else speed.new_zeros(speed.shape[:-2])

    def travel(self, positions: torch.Tensor, fps: float) -> torch.Tensor:
        """Mean horizontal speed (m/s) of the contact joints of (..., T, J, 3) positions, near the
        ground or not, one value per leading index (0 on a rig without contact joints)."""
        _, speed = self.steps(positions, fps)
        return speed.mean(dim=(-1, -2)) if self.joints else speed.new_zeros(speed.shape[:-2])

    def contact(self, positions: torch.Tensor) -> torch.Tensor:
        """Share of frames the contact joints stand within CONTACT_BANDS of their band of rest or
        below, one value per leading index (1 on a rig without contact joints: nothing to see)."""
        if not self.joints:
            return positions.new_ones(positions.shape[:-3])
        height = positions[..., self.joints, 1] - self.floor - self.rest  # (..., T, K)
        return (height <= CONTACT_BANDS * self.band).to(positions.dtype).mean(dim=(-1, -2))

    def penetration(self, positions: torch.Tensor) -> torch.Tensor:
        """Mean depth of the contact joints below the floor, in contact bands (0 on a rig without)."""
        depth = (self.floor - positions[..., self.joints, 1]).clamp(min=0) / self.band.mean().clamp(min=MIN_BAND)
        return depth.mean(dim=(-1, -2)) if self.joints else depth.new_zeros(depth.shape[:-2])


class Naturalness:
    """Samples' jitter, foot skating and penetration relative to one clip's, whose own are
    measured once.

    `reference`: the features of the dataset's clip `clip` at one pyramid level (default: the
    finest, the clip itself); samples are then compared at that level, whose frame rate is the
    clip's scaled by its length."""

    def __init__(self, dataset: MotionDataset, reference: torch.Tensor | None = None, clip: int = 0):
        full = dataset.clips[clip].features
        reference = full if reference is None else reference
        self.dataset, self.clip = dataset, clip
        self.fps = dataset.fps * reference.shape[-1] / full.shape[-1]
        skeleton = dataset.skeleton
        self.ground = Ground(kinematics(full.cpu(), dataset, clip), skeleton.contacts, skeleton.contact_threshold)
        positions = kinematics(reference.cpu(), dataset, clip)
        self.jerk = jerk(positions, self.fps)
        reach = max(skeleton.reach(), 1e-6)
        self.skating = self.ground.sliding(positions, self.fps).clamp(min=SLIDING_FLOOR * reach)
        self.contact = self.ground.contact(positions).clamp(min=1e-6)
        self.travel_floor = TRAVEL_FLOOR * reach
        self.travel = self.ground.travel(positions, self.fps) + self.travel_floor

    def __call__(self, samples: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each (N, C, T) sample's jitter, foot skating, penetration, ground contact and foot motion:
        (N,) each. A rig without contact joints has no feet to see: 0, 0, 1 and 1 for the last four."""
        positions = kinematics(samples.cpu(), self.dataset, self.clip)
        travel = (self.ground.travel(positions, self.fps) + self.travel_floor) / self.travel
        return {"jitter": jerk(positions, self.fps) / self.jerk,
                "foot_skating": self.ground.sliding(positions, self.fps) / self.skating,
                "penetration": self.ground.penetration(positions),
                "ground_contact": self.ground.contact(positions) / self.contact,
                "foot_motion": travel if self.ground.joints else torch.ones_like(travel)}


def naturalness(samples: torch.Tensor, dataset: MotionDataset) -> dict[str, torch.Tensor]:
    """Each (N, C, T) sample's jitter, foot skating, penetration, ground contact and foot motion
    (relative to the clip's own but penetration): (N,) each."""
    return Naturalness(dataset)(samples)
