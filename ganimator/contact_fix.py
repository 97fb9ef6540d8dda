"""Foot-contact clean-up of generated motion: the original GANimator's fix_contact, in our terms.

A generated sample predicts, besides its poses, which contact joints touch the ground. Where it
says a foot is planted, the foot should stand still; the network's poses let it slide. The fix:

1. targets: each run of consecutive contact frames of a contact joint is pinned to the joint's
   mean position over the run, and the `BLEND_FRAMES` frames before and after a run are eased
   towards the pinned position with alpha(t) = 2t^3 - 3t^2 + 1 (the original's
   constrain_from_contact). Every other joint, and every contact joint away from its runs, keeps
   its own position as the target, which holds the rest of the body where it was;
2. inverse kinematics: Adam moves the 6D rotations and the root's path, stored as velocities,
   for a fixed number of steps towards the targets, with penalties for moving away from the
   input (the original's InverseKinematicsJoint2 with use_velo=True and weights 0.1 and 0.01).

Units: the IK runs in the source file's units (metres / skeleton.scale, centimetres for Mixamo),
as the original runs it on the generated BVH read back unscaled. Adam moves each parameter by at
most about lr a step, and the weights balance squared positions against 6D rotations, so both
the step sizes and the balance depend on the unit: in metres the same settings would move the
root a hundred times further and weight the rotation penalty ten thousand times more.

Precision: float64 throughout, as naturalness measures. float32 would save about a third of the
time (8 s against 11 s for 1296 Mixamo frames on one thread) for the same skating to three
digits; float64 keeps the clean-up exact where it has nothing to do (with nothing planted the
motion comes back equal to the input to 1e-15 m). No randomness is involved: on one device and
thread count the result is the same on every run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .conversions import matrix_to_rot6d, rot6d_to_matrix
from .dataset import MotionDataset
from .errors import UserError
from .features import decode
from .kinematics import forward_kinematics
from .motion import Motion
from .naturalness import CONTACT
from .progress import progress_bar
from .skeleton import Skeleton

BLEND_FRAMES = 5  # the original's L: frames before and after a contact run eased towards it
ITERATIONS = 500
LEARNING_RATE = 1e-3
ROTATION_WEIGHT = 0.1  # MSE of the 6D rotations against the input's
VELOCITY_WEIGHT = 0.01  # MSE of the root's velocity representation against the input's


def skating(positions: torch.Tensor, contacts: torch.Tensor, contact_joints: list[int], fps: float) -> torch.Tensor:
    """Mean horizontal speed (m/s) of the contact joints over steps where both ends are labelled in
    contact (0 when none is), one value per leading index: what the fix pins, so its report. Not a
    quality measure: the labels are the model's own (evaluation uses naturalness.Ground.sliding)."""
    feet = positions[..., contact_joints, :]  # (..., T, K, 3)
    step = feet.diff(dim=-3)[..., [0, 2]].norm(dim=-1) * fps  # x and z: y is up
    planted = (contacts[..., 1:, :] & contacts[..., :-1, :]).to(step.dtype)
    return (step * planted).sum(dim=(-1, -2)) / planted.sum(dim=(-1, -2)).clamp(min=1)


class ContactFixError(UserError, ValueError):
    """Motion whose feet cannot be pinned; the message says why."""


@dataclass
class ContactFix:
    """Fixed samples and their foot skating before and after (m/s, `skating`: in the frames the fix
    pinned)."""

    motions: list[Motion]
    skating_before: list[float]
    skating_after: list[float]

    def summary(self) -> str:
        """One line for a CLI: the mean foot skating over the samples, before -> after."""
        before = sum(self.skating_before) / max(len(self.skating_before), 1)
        after = sum(self.skating_after) / max(len(self.skating_after), 1)
        return f"foot skating {before:.2f} -> {after:.2f} m/s"


def _alpha(t: torch.Tensor) -> torch.Tensor:
    """Weight of the pinned position at relative distance t: 1 at t = 0, 0 at t = 1, flat at both."""
    return 2 * t**3 - 3 * t**2 + 1


def _lerp(weight: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    return (1 - weight) * start + weight * end


def contact_targets(positions: torch.Tensor, planted: torch.Tensor, joints: list[int],
                    blend: int = BLEND_FRAMES) -> torch.Tensor:
    """Target global positions (T, J, 3): `positions` (T, J, 3) with each contact joint pinned
    during its runs of planted frames and eased towards them within `blend` frames.

    planted: (T, C) bool, column c for joint joints[c]. Frame s near a run reads the nearest
    planted frame l before it and r after it, each only within `blend` frames, and moves towards
    the pinned position with weight alpha((s - l + 1) / (blend + 1)) (resp. (r - s + 1)); with
    both near, the two eased positions are mixed with weight alpha((s - l + 1) / (r - l + 1)) on
    the left one. The +1s and this mix are the original's, kept so that targets match it.
    """
    T, C = planted.shape
    feet = positions[:, joints]  # (T, C, 3)
    # Each run's mean: runs numbered per joint from their first frame, sums gathered by number.
    starts = planted & ~torch.cat([planted.new_zeros(1, C), planted[:-1]])
    run = starts.long().cumsum(0) - 1  # (T, C): the run a planted frame belongs to
    ids = (run * C + torch.arange(C))[planted]  # unique per (run, joint)
    sums = feet.new_zeros(T * C, 3).index_add_(0, ids, feet[planted])
    counts = feet.new_zeros(T * C).index_add_(0, ids, feet.new_ones(ids.shape))
    pinned = feet.clone()
    pinned[planted] = sums[ids] / counts[ids, None]

    # Nearest planted frame at or before / at or after each frame (itself when planted).
    frame = torch.arange(T)[:, None].expand(T, C)
    left = torch.where(planted, frame, -1).cummax(0).values
    right = torch.where(planted, frame, T).flip(0).cummin(0).values.flip(0)
    near_left = ~planted & (left >= 0) & (frame - left <= blend)
    near_right = ~planted & (right < T) & (right - frame <= blend)
    # Off-range indices only feed entries that near_left/near_right discard.
    left, right = left.clamp(0, T - 1), right.clamp(0, T - 1)

    def gather(index: torch.Tensor) -> torch.Tensor:
        return pinned.gather(0, index[..., None].expand(T, C, 3))

    eased_left = _lerp(_alpha((frame - left + 1) / (blend + 1))[..., None], feet, gather(left))
    eased_right = _lerp(_alpha((right - frame + 1) / (blend + 1))[..., None], feet, gather(right))
    mix = _alpha((frame - left + 1) / (right - left + 1).clamp(min=1))[..., None]
    eased = torch.where((near_left & near_right)[..., None], _lerp(mix, eased_right, eased_left),
                        torch.where(near_left[..., None], eased_left,
                                    torch.where(near_right[..., None], eased_right, pinned)))
    targets = positions.clone()
    targets[:, joints] = eased
    return targets


def fix_contact(motion: Motion, contacts: torch.Tensor, skeleton: Skeleton, iterations: int = ITERATIONS,
                progress: str | None = None) -> Motion:
    """`motion` with its planted feet held still by inverse kinematics (see the module docstring).

    contacts: (T, C) the sample's predicted contact channels (dataset.decode's second output); a
    joint is planted where its channel exceeds 0.5. Returns a new float64 Motion on the CPU, same fps.
    `progress`: a progress bar's label (a long motion takes minutes: each step runs its whole
    forward kinematics), none when None.
    """
    if motion.rotations.dim() != 4:
        raise ValueError(f"fix_contact takes one motion, rotations (T, J, 3, 3); got shape {tuple(motion.rotations.shape)}")
    T, J = motion.rotations.shape[:2]
    C = len(skeleton.contacts)
    if T < 1:
        raise ValueError("fix_contact: the motion has no frames")
    if J != skeleton.num_joints:
        raise ValueError(f"fix_contact: the motion has {J} joints, the skeleton {skeleton.num_joints}")
    if tuple(contacts.shape) != (T, C):
        raise ValueError(f"fix_contact: contacts have shape {tuple(contacts.shape)}, expected ({T}, {C}) "
                         f"for {T} frames and the skeleton's {C} contact joints")
    if iterations < 0:
        raise ValueError(f"fix_contact: iterations must not be negative, got {iterations}")

    scale = skeleton.scale  # metres per file unit: the IK works in file units (module docstring)
    offsets = torch.as_tensor(skeleton.offsets / scale, dtype=torch.float64)
    rotations = motion.rotations.detach().cpu().double()
    root = motion.root_positions.detach().cpu().double() / scale

    def positions(rows6d: torch.Tensor, root_velocity: torch.Tensor) -> torch.Tensor:
        """(T, J, 3) global positions; root_velocity: first row absolute, then per-frame steps."""
        translations = torch.cat([root_velocity.cumsum(0)[:, None], offsets[1:].expand(T, J - 1, 3)], dim=1)
        return forward_kinematics(rot6d_to_matrix(rows6d), translations, skeleton.parents)

    rows0 = matrix_to_rot6d(rotations)
    velocity0 = torch.cat([root[:1], root.diff(dim=0)])
    targets = contact_targets(positions(rows0, velocity0), contacts.detach().cpu() > CONTACT, skeleton.contacts)

    rows6d, velocity = rows0.clone().requires_grad_(True), velocity0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([rows6d, velocity], lr=LEARNING_RATE, betas=(0.9, 0.999))
    mse = torch.nn.functional.mse_loss
    bar = progress_bar(iterations, progress or "", enabled=progress is not None, unit="step")
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = (mse(positions(rows6d, velocity), targets) + ROTATION_WEIGHT * mse(rows6d, rows0)
                + VELOCITY_WEIGHT * mse(velocity, velocity0))
        loss.backward()
        optimizer.step()
        bar.update()
    bar.close()

    with torch.no_grad():
        return Motion(rot6d_to_matrix(rows6d), velocity.cumsum(0) * scale, fps=motion.fps)


def fix_samples(dataset: MotionDataset, features: torch.Tensor, iterations: int = ITERATIONS,
                begin_xz: torch.Tensor | None = None, progress: bool = False) -> ContactFix:
    """Decode each (C, T) sample of a (N, C, T) batch (its root starting at `begin_xz`, default
    the first clip's start), pin its feet where its contact channels say planted, and measure its foot
    skating before and after in those frames (`skating`), at the clip's fps."""
    if features.dim() != 3:
        raise ValueError(f"fix_samples takes a batch (N, channels, T), got shape {tuple(features.shape)}")
    skeleton, fps = dataset.skeleton, dataset.fps
    result = ContactFix([], [], [])
    if not skeleton.contacts:
        raise ContactFixError(f"{dataset.source or 'the data'}'s rig ({skeleton.rig}) has no contact joints: there "
                              "are no feet to pin")
    for k, sample in enumerate(features.detach().cpu()):
        start = dataset.clips[0].begin_xz if begin_xz is None else begin_xz
        motion, contacts = decode(sample.double(), dataset.layout, start, fps)  # float64, as naturalness measures
        label = f"pinning feet, motion {k + 1}/{len(features)}" if progress else None
        fixed = fix_contact(motion, contacts, skeleton, iterations, label)
        planted = contacts > CONTACT
        for out, m in ((result.skating_before, motion), (result.skating_after, fixed)):
            out.append(skating(m.joint_positions(skeleton), planted, skeleton.contacts, fps).item())
        result.motions.append(fixed)
    return result
