"""The foot-contact clean-up (ganimator/contact_fix.py) on a real clip made to skate: planted feet
stop sliding, the rest of the body stays where it was, the result writes as BVH; its contact
targets against a frame-by-frame reference, edge cases. Its kinematics are kinematics.py's
(tested in tests/test_features.py)."""
import dataclasses
import math

import pytest
import torch

from ganimator.bvh import motion_to_bvh, read_bvh, write_bvh
from ganimator.contact_fix import BLEND_FRAMES, ContactFix, contact_targets, fix_contact, fix_samples, skating
from ganimator.dataset import MotionDataset
from ganimator.motion import Motion
from ganimator.naturalness import CONTACT, kinematics

FRAMES = 240  # 8 s of Salsa: every foot plants several times; 500 IK steps take about 3 s


@pytest.fixture(scope="module")
def salsa(clip):
    return MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))


def decoded(data: MotionDataset, features: torch.Tensor) -> tuple[Motion, torch.Tensor]:
    return data.clips[0].decode(features.double())


def drifting(data: MotionDataset, frames: int = FRAMES, amplitude: float = 0.01) -> torch.Tensor:
    """The clip's first frames with the root swaying sideways by up to `amplitude` metres a frame
    (0.3 m/s): the body slides over the planted feet, which keep their contact labels."""
    features = data.clips[0].features[:, :frames].clone()
    features[data.layout.root.start] += amplitude * torch.sin(2 * math.pi * torch.arange(frames) / 40)
    return features


def measure(data: MotionDataset, motion: Motion, contacts: torch.Tensor) -> float:
    return skating(motion.joint_positions(data.skeleton), contacts > 0.5, data.skeleton.contacts, data.fps).item()


@pytest.fixture(scope="module")
def fixed_drift(salsa):
    motion, contacts = decoded(salsa, drifting(salsa))
    return motion, contacts, fix_contact(motion, contacts, salsa.skeleton)


def test_sliding_feet_are_planted_again(salsa, fixed_drift):
    motion, contacts, fixed = fixed_drift
    before, after = measure(salsa, motion, contacts), measure(salsa, fixed, contacts)
    assert before > 0.15  # the drift makes the clip's planted feet slide (the clip alone: 0.09 m/s)
    assert after < before / 3 and after < 0.05, (before, after)
    # Each contact joint stays near its run's pinned position while planted (about 3 mm on average).
    planted = contacts > 0.5
    start = motion.joint_positions(salsa.skeleton)
    pinned = contact_targets(start, planted, salsa.skeleton.contacts)[:, salsa.skeleton.contacts]
    feet = fixed.joint_positions(salsa.skeleton)[:, salsa.skeleton.contacts]
    assert (feet - pinned).norm(dim=-1)[planted].mean() < 0.01
    assert fixed.fps == motion.fps and fixed.rotations.shape == motion.rotations.shape


def test_the_body_away_from_the_feet_stays_where_it_was(salsa, fixed_drift):
    motion, _, fixed = fixed_drift
    free = [j for j in range(salsa.skeleton.num_joints) if j not in salsa.skeleton.contacts]
    moved = (fixed.joint_positions(salsa.skeleton) - motion.joint_positions(salsa.skeleton))[:, free].norm(dim=-1)
    assert moved.mean() < 0.02, moved.mean()
    # The rotations stay rotations: orthonormal with determinant 1.
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(fixed.rotations @ fixed.rotations.transpose(-1, -2), eye.expand_as(fixed.rotations), atol=1e-9)
    assert torch.allclose(torch.linalg.det(fixed.rotations), torch.ones(1, dtype=torch.float64))


def test_the_clean_clip_changes_little(salsa):
    motion, contacts = decoded(salsa, salsa.clips[0].features[:, :FRAMES])
    fixed = fix_contact(motion, contacts, salsa.skeleton)
    moved = (fixed.joint_positions(salsa.skeleton) - motion.joint_positions(salsa.skeleton)).norm(dim=-1)
    assert moved.mean() < 0.005 and moved.max() < 0.1, (moved.mean(), moved.max())
    assert measure(salsa, fixed, contacts) < measure(salsa, motion, contacts) / 3  # mocap skates a little too


def test_a_fixed_motion_writes_as_bvh_and_reads_back(salsa, fixed_drift, tmp_path):
    _, _, fixed = fixed_drift
    path = tmp_path / "fixed.bvh"
    write_bvh(path, motion_to_bvh(fixed, salsa.skeleton))
    bvh = read_bvh(path)
    assert bvh.num_frames == fixed.num_frames
    assert bvh.frame_time == pytest.approx(1 / fixed.fps)
    root = torch.from_numpy(bvh.motion[:, :3]) * salsa.skeleton.scale  # the root's X/Y/Z position channels
    assert torch.allclose(root, fixed.root_positions, atol=1e-5)


def test_fix_samples_measures_each_sample_before_and_after(salsa):
    batch = torch.stack([drifting(salsa, 120, 0.01), salsa.clips[0].features[:, 120:240]])
    result = fix_samples(salsa, batch)
    assert isinstance(result, ContactFix) and len(result.motions) == len(result.skating_before) == 2
    for k, features in enumerate(batch):
        positions = kinematics(features, salsa, 0)
        planted = salsa.clips[0].decode(features.double())[1] > CONTACT  # the frames the fix pins
        assert result.skating_before[k] == pytest.approx(skating(positions, planted, salsa.skeleton.contacts,
                                                                 salsa.fps).item())
        assert result.skating_after[k] < result.skating_before[k] / 3
        assert result.motions[k].fps == salsa.fps and result.motions[k].num_frames == 120
    assert result.skating_before[0] > result.skating_before[1]  # the drifting one skated more
    assert result.summary().startswith("foot skating ") and result.summary().endswith(" m/s")
    with pytest.raises(ValueError, match="batch"):
        fix_samples(salsa, batch[0])


def test_the_fix_is_deterministic(salsa):
    motion, contacts = decoded(salsa, drifting(salsa, 60))
    first, second = (fix_contact(motion, contacts, salsa.skeleton, iterations=50) for _ in range(2))
    assert torch.equal(first.rotations, second.rotations) and torch.equal(first.root_positions, second.root_positions)


# ---- edge cases ---------------------------------------------------------------------------------

def test_nothing_planted_leaves_the_motion_as_it_was(salsa):
    motion, contacts = decoded(salsa, drifting(salsa, 60))
    fixed = fix_contact(motion, torch.zeros_like(contacts), salsa.skeleton)
    assert torch.allclose(fixed.rotations, motion.rotations, atol=1e-12)
    assert torch.allclose(fixed.root_positions, motion.root_positions, atol=1e-12)


def test_feet_planted_throughout_are_pinned_to_one_place(salsa):
    motion, contacts = decoded(salsa, salsa.clips[0].features[:, :60])
    fixed = fix_contact(motion, torch.ones_like(contacts), salsa.skeleton)
    feet = salsa.skeleton.contacts
    spread_before = motion.joint_positions(salsa.skeleton)[:, feet].std(dim=0).norm(dim=-1)
    spread_after = fixed.joint_positions(salsa.skeleton)[:, feet].std(dim=0).norm(dim=-1)
    assert torch.isfinite(fixed.rotations).all() and torch.isfinite(fixed.root_positions).all()
    assert (spread_after < spread_before / 2).all(), (spread_before, spread_after)


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_very_short_motions_are_fixed(salsa, frames):
    motion, contacts = decoded(salsa, salsa.clips[0].features[:, 100:100 + frames])
    fixed = fix_contact(motion, torch.ones_like(contacts), salsa.skeleton, iterations=20)
    assert fixed.num_frames == frames and torch.isfinite(fixed.root_positions).all()


def test_a_skeleton_without_contact_joints_is_left_alone(salsa):
    motion, contacts = decoded(salsa, salsa.clips[0].features[:, :20])
    skeleton = dataclasses.replace(salsa.skeleton, contacts=[])
    fixed = fix_contact(motion, contacts[:, :0], skeleton, iterations=20)
    assert torch.allclose(fixed.root_positions, motion.root_positions, atol=1e-12)


def test_bad_input_is_refused_by_name(salsa):
    motion, contacts = decoded(salsa, salsa.clips[0].features[:, :20])
    with pytest.raises(ValueError, match=r"contacts have shape \(20, 3\), expected \(20, 4\)"):
        fix_contact(motion, contacts[:, :3], salsa.skeleton)
    with pytest.raises(ValueError, match="no frames"):
        fix_contact(Motion(motion.rotations[:0], motion.root_positions[:0], motion.fps), contacts[:0], salsa.skeleton)
    with pytest.raises(ValueError, match="one motion"):
        fix_contact(Motion(motion.rotations[None], motion.root_positions[None], motion.fps), contacts, salsa.skeleton)


# ---- the pieces ---------------------------------------------------------------------------------

def alpha(t: float) -> float:
    return 2 * t**3 - 3 * t**2 + 1


def reference_targets(positions: torch.Tensor, planted: torch.Tensor, joints: list[int], L: int) -> torch.Tensor:
    """The targets frame by frame, written from the rule as described (contact_fix's docstring)."""
    targets = positions.clone()
    T = len(positions)
    for c, j in enumerate(joints):
        on = planted[:, c].tolist()
        pinned = positions[:, j].clone()
        s = 0
        while s < T:
            if on[s]:
                e = s
                while e + 1 < T and on[e + 1]:
                    e += 1
                pinned[s:e + 1] = positions[s:e + 1, j].mean(dim=0)
                s = e
            s += 1
        for s in range(T):
            own = positions[s, j]
            if on[s]:
                targets[s, j] = pinned[s]
                continue
            left = next((s - k for k in range(1, L + 1) if s - k >= 0 and on[s - k]), None)
            right = next((s + k for k in range(1, L + 1) if s + k < T and on[s + k]), None)
            if left is not None:
                eased_left = own + alpha((s - left + 1) / (L + 1)) * (pinned[left] - own)
            if right is not None:
                eased_right = own + alpha((right - s + 1) / (L + 1)) * (pinned[right] - own)
            if left is not None and right is not None:
                w = alpha((s - left + 1) / (right - left + 1))
                targets[s, j] = (1 - w) * eased_right + w * eased_left
            elif left is not None:
                targets[s, j] = eased_left
            elif right is not None:
                targets[s, j] = eased_right
    return targets


def test_contact_targets_follow_the_rule_frame_by_frame():
    g = torch.Generator().manual_seed(0)
    T, J, joints = 80, 5, [3, 1, 4]
    positions = torch.randn(T, J, 3, generator=g, dtype=torch.float64).cumsum(0)
    # Runs of every length, gaps shorter and longer than 2 L, runs touching both ends.
    planted = torch.rand(T, len(joints), generator=g) < torch.tensor([0.3, 0.6, 0.85])
    planted[:3, 0] = planted[-2:, 0] = True
    targets = contact_targets(positions, planted, joints)
    assert torch.allclose(targets, reference_targets(positions, planted, joints, BLEND_FRAMES), atol=1e-12)
    others = [0, 2]
    assert torch.equal(targets[:, others], positions[:, others])


def test_contact_targets_by_hand():
    # One joint on a line: x = frame. Planted on frames 10-12: pinned at their mean, x = 11.
    positions = torch.zeros(30, 1, 3, dtype=torch.float64)
    positions[:, 0, 0] = torch.arange(30.0)
    planted = torch.zeros(30, 1, dtype=torch.bool)
    planted[10:13] = True
    x = contact_targets(positions, planted, [0])[:, 0, 0]
    assert torch.equal(x[10:13], torch.full((3,), 11.0, dtype=torch.float64))
    # Next to the run the pinned position weighs alpha(2/6); five frames off, alpha(1) = 0.
    assert x[13].item() == pytest.approx(13 + alpha(2 / 6) * (11 - 13))
    assert x[9].item() == pytest.approx(9 + alpha(2 / 6) * (11 - 9))
    assert x[17].item() == 17 and x[5].item() == 5 and x[20].item() == 20

