from pathlib import Path

import numpy as np
import pytest
import roma
import torch

from ganimator.bvh import load_motion, motion_to_bvh, write_bvh
from ganimator.dataset import DatasetError, MotionDataset
from ganimator.kinematics import forward_kinematics
from ganimator.procedural import procedural_dance
from ganimator.pyramid import noise_amplitudes
from ganimator.skeleton import MIXAMO_JOINTS

MIXAMO_CONTACTS = ["LeftToe_End", "RightToe_End", "LeftToeBase", "RightToeBase"]  # the original's order


def file_positions(path) -> tuple[list[str], float, np.ndarray]:
    """Joint names (namespace stripped), frame time and global positions (T, J, 3) in file units of
    every joint of a BVH: a minimal parser and plain numpy forward kinematics, sharing no code
    with ganimator (BVH convention: channels apply in file order, R = R1 @ R2 @ R3)."""
    head, motion = Path(path).read_text().split("MOTION")
    names, parents, offsets, channels, stack, pending = [], [], [], [], [], None
    for tok in (line.split() for line in head.splitlines()):
        if tok and tok[0] in ("ROOT", "JOINT"):
            names.append(tok[1].split(":")[-1])
            parents.append(stack[-1] if stack else -1)
            offsets.append(None)
            channels.append([])
            pending = len(names) - 1
        elif tok and tok[0] == "End":
            pending = None  # an End Site: no joint
        elif tok == ["{"]:
            stack.append(pending)
        elif tok == ["}"]:
            stack.pop()
        elif tok and tok[0] == "OFFSET" and stack[-1] is not None:
            offsets[stack[-1]] = np.array(tok[1:], float)
        elif tok and tok[0] == "CHANNELS":
            channels[stack[-1]] = tok[2:]
    lines = motion.split("\n", 3)
    frames, frame_time = int(lines[1].split()[1]), float(lines[2].split()[2])
    values = np.array(lines[3].split(), float).reshape(frames, -1)

    def axis(name, degrees):
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        one, zero = np.ones_like(c), np.zeros_like(c)
        m = {"X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
             "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
             "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]]}[name]
        return np.moveaxis(np.array(m), (0, 1), (-2, -1))

    glob_rot, glob_pos, column = [], [], 0
    for j, chans in enumerate(channels):
        local_rot, local_pos = np.broadcast_to(np.eye(3), (frames, 3, 3)), np.tile(offsets[j], (frames, 1))
        for name in chans:
            if name.endswith("rotation"):
                local_rot = local_rot @ axis(name[0], values[:, column])
            else:
                local_pos[:, "XYZ".index(name[0])] = values[:, column]
            column += 1
        p = parents[j]
        glob_pos.append(local_pos if p < 0 else glob_pos[p] + np.einsum("tij,tj->ti", glob_rot[p], local_pos))
        glob_rot.append(local_rot if p < 0 else glob_rot[p] @ local_rot)
    assert column == values.shape[1]
    return names, frame_time, np.stack(glob_pos, axis=1)


def original_stride(frame_time: float) -> int:
    """The original's frame-rate rule (bvh_parser.py): halve if under 0.0084 s, halve again if under 0.017 s."""
    stride = 1
    for limit in (0.0084, 0.017):
        if frame_time < limit:
            frame_time, stride = frame_time * 2, stride * 2
    return stride


def original_lengths(frames: int) -> list[int]:
    """The reference's pyramid rule: floor(T/5), then floor(previous / 0.75) (+1 on a repeat), last = T."""
    lengths = [frames // 5]
    while lengths[-1] < frames:
        nxt = int(lengths[-1] / 0.75)
        lengths.append(nxt + 1 if nxt == lengths[-1] else nxt)
    return lengths[:-1] + [frames]


def linear_resample(x: np.ndarray, length: int) -> np.ndarray:
    """(C, T) -> (C, length) by linear interpolation with align_corners=False (the original's
    get_interpolator), written with np.interp: sample i reads source time (i + 0.5) * T / length - 0.5."""
    T = x.shape[-1]
    at = np.clip((np.arange(length) + 0.5) * T / length - 0.5, 0, T - 1)
    return np.stack([np.interp(at, np.arange(T), row) for row in x])


@pytest.fixture(scope="module")
def salsa(clip):
    return MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))


def test_salsa_pyramid_matches_the_original(salsa):
    assert salsa.clips[0].level_lengths == [129, 172, 229, 305, 406, 541, 648]
    assert salsa.clips[0].features.shape == (6 * (24 + 4 + 1), 648)  # joints, contact nodes, root block
    assert salsa.skeleton.names == list(MIXAMO_JOINTS)
    assert salsa.fps == pytest.approx(30, rel=1e-3)


def test_noise_amplitudes_are_the_rms_of_what_each_level_adds(salsa):
    """Recomputed in numpy from the features: level i is the clip linearly resampled to its length;
    its amplitude is the RMS of level i minus level i-1 upsampled to it, level 0's its own RMS."""
    real = salsa.clips[0].features.double().numpy()
    levels = [linear_resample(real, n) for n in salsa.clips[0].level_lengths]
    expected = [np.sqrt(np.mean(levels[0] ** 2))]
    expected += [np.sqrt(np.mean((cur - linear_resample(prev, cur.shape[-1])) ** 2))
                 for prev, cur in zip(levels, levels[1:])]
    assert len(salsa.clips[0].levels()) == len(levels)
    for got, want in zip(salsa.clips[0].levels(), levels):
        assert np.allclose(got.numpy(), want, atol=1e-4)  # torch places float32 samples: ~5e-5 off on 0/1 steps
    assert np.allclose(salsa.clips[0].noise_amplitudes.numpy(), expected, rtol=1e-4)  # what from_bvh stored
    assert np.allclose(noise_amplitudes(salsa.clips[0].levels()).numpy(), expected, rtol=1e-4)


def test_features_decode_back_to_the_clip(salsa, clip):
    skeleton, motion = load_motion(clip("Salsa-Dancing-6.bvh"))
    decoded, contacts = salsa.clips[0].decode(salsa.clips[0].features.double())
    assert torch.allclose(decoded.rotations, motion.rotations, atol=1e-5)
    assert torch.allclose(decoded.root_positions, motion.root_positions.to(decoded.root_positions), atol=1e-3)
    assert torch.equal(contacts.float(), salsa.clips[0].contacts)
    positions = decoded.joint_positions(skeleton) - motion.joint_positions(skeleton)
    assert positions.abs().max() < 1e-3


def test_layout_is_the_originals(salsa):
    """Joint nodes hold the first two ROWS of each rotation; each contact node its label and 5
    zeros; the root block x velocity, height, z velocity and 3 zeros."""
    f, layout, motion = salsa.clips[0].features.double(), salsa.layout, salsa.clips[0].motion
    J, C, T = 24, 4, 648
    rows = motion.rotations[:, :, :2, :].reshape(T, 6 * J).T
    assert torch.allclose(f[layout.rotations], rows, atol=1e-6)
    nodes = f[6 * J:6 * (J + C)].reshape(C, 6, T)
    assert torch.equal(nodes[:, 0].T.float(), salsa.clips[0].contacts) and nodes[:, 1:].abs().max() == 0
    assert (salsa.clips[0].contacts[0] == 0).all()  # frame 0 has no velocity, so no contact, as in the original
    root = f[6 * (J + C):]
    xz = motion.root_positions[:, [0, 2]]
    assert torch.allclose(root[0, 1:], xz[1:, 0] - xz[:-1, 0], atol=1e-5)
    assert torch.allclose(root[1], motion.root_positions[:, 1], atol=1e-5)
    assert torch.allclose(root[2, 1:], xz[1:, 1] - xz[:-1, 1], atol=1e-5)
    assert root[0, 0] == root[0, 1] and root[3:].abs().max() == 0  # frame 0 velocity is frame 1's
    assert layout.pose == slice(0, 6 * (J + C))


def test_joint_positions_match_the_files_forward_kinematics(salsa, clip):
    """The 24 kept joints, at 30 fps and in metres, where the file's own full skeleton puts them."""
    names, frame_time, positions = file_positions(clip("Salsa-Dancing-6.bvh"))
    assert original_stride(frame_time) == 2  # a 60 fps clip
    expected = positions[::2, [names.index(n) for n in MIXAMO_JOINTS]] / 100  # centimetres in the file
    assert np.allclose(salsa.clips[0].motion.joint_positions(salsa.skeleton).numpy(), expected, atol=1e-6)


def plain_forward_kinematics(rotations, translations, parents):
    """The obvious way, frame-first, indexing and @: what kinematics.forward_kinematics, written
    for speed under autograd, must equal."""
    translations = translations.expand(*rotations.shape[:-2], 3)
    rot, pos = [rotations[..., 0, :, :]], [translations[..., 0, :]]
    for j in range(1, len(parents)):
        pos.append(pos[parents[j]] + (rot[parents[j]] @ translations[..., j, :, None])[..., 0])
        rot.append(rot[parents[j]] @ rotations[..., j, :, :])
    return torch.stack(pos, dim=-2)


@pytest.mark.parametrize("case", ["salsa batch", "random tree, shared translations", "one pose"])
def test_forward_kinematics_equals_the_plain_way_in_values_and_gradients(salsa, case):
    g = torch.Generator().manual_seed(0)
    if case == "salsa batch":  # (2, T, J): decoded rotations come with their 3x3 blocks transposed in memory
        parents = salsa.skeleton.parents
        rotations = salsa.clips[0].decode(torch.stack([salsa.clips[0].features[:, :40], salsa.clips[0].features[:, 300:340]]).double())[0].rotations
        translations = torch.randn(*rotations.shape[:-2], 3, generator=g, dtype=torch.float64)
    else:
        parents = [-1] + [int(torch.randint(j, (), generator=g)) for j in range(1, 30)]
        shape = (7, 30) if case.startswith("random") else (30,)
        rotations = roma.rotvec_to_rotmat(2 * torch.randn(*shape, 3, generator=g, dtype=torch.float64))
        translations = torch.randn(30, 3, generator=g, dtype=torch.float64)  # (J, 3): the same in every frame
    weights = torch.randn(*torch.broadcast_shapes(rotations.shape[:-3], translations.shape[:-2]), len(parents), 3,
                          generator=g, dtype=torch.float64)
    results = []
    for fk in (forward_kinematics, plain_forward_kinematics):
        r, t = rotations.clone().requires_grad_(True), translations.clone().requires_grad_(True)
        positions = fk(r, t, parents)
        (positions * weights).sum().backward()
        results.append((positions.detach(), r.grad, t.grad))
    assert results[0][0].shape == weights.shape and results[0][0].is_contiguous()
    for ours, plain in zip(*results):
        assert torch.allclose(ours, plain, rtol=0, atol=1e-12)


def test_contacts_are_the_originals_labels(salsa, clip):
    """The original's rule (models/contact.py, skeleton_database.py), recomputed from the file: a
    contact joint is in contact where it moved under 0.018 m since the previous 30 fps frame;
    frame 0 never is; one column per joint in the order LeftToe_End, RightToe_End, LeftToeBase,
    RightToeBase."""
    names, frame_time, positions = file_positions(clip("Salsa-Dancing-6.bvh"))
    feet = positions[::original_stride(frame_time), [names.index(n) for n in MIXAMO_CONTACTS]] / 100
    speed = np.linalg.norm(feet[1:] - feet[:-1], axis=-1)
    assert np.abs(speed - 0.018).min() > 1e-6  # no label rests on rounding
    expected = np.concatenate([np.zeros((1, 4)), speed < 0.018])
    assert ((0.1 < expected.mean(0)) & (expected.mean(0) < 0.9)).all()  # each joint both planted and moving
    assert np.array_equal(salsa.clips[0].contacts.numpy(), expected)


@pytest.mark.parametrize("name, rig, joints, contacts", [
    ("Walk-In-Circle.bvh", "mixamo", 24, 4),
    ("Crab-dance-long.bvh", "crab", 56, 6),
    ("proud.bvh", "xia", 31, 2),
])
def test_every_rig_preprocesses(clip, name, rig, joints, contacts):
    data = MotionDataset.from_bvh(clip(name))
    assert (data.skeleton.rig, data.skeleton.num_joints, len(data.skeleton.contacts)) == (rig, joints, contacts)
    _, frame_time, positions = file_positions(clip(name))
    frames = len(range(0, len(positions), original_stride(frame_time)))  # the original's 30 fps
    assert data.clips[0].features.shape == (6 * (joints + contacts + 1), frames)  # the original's 6-wide nodes
    assert data.clips[0].level_lengths == original_lengths(frames)
    assert len(data.clips[0].level_lengths) == 7 and torch.isfinite(data.clips[0].features).all()


def test_npz_round_trip(salsa, tmp_path):
    salsa.save(tmp_path / "salsa.npz")
    again = MotionDataset.load(tmp_path / "salsa.npz")
    assert torch.equal(again.clips[0].features, salsa.clips[0].features) and torch.equal(again.clips[0].z_star, salsa.clips[0].z_star)
    assert again.clips[0].level_lengths == salsa.clips[0].level_lengths and again.skeleton.names == salsa.skeleton.names
    assert np.allclose(again.skeleton.offsets, salsa.skeleton.offsets)


def rewrite(src, dst, **changes):
    with np.load(src) as npz:
        data = {k: npz[k] for k in npz.files}
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    np.savez(dst, **data)
    return dst


@pytest.mark.parametrize("changes, message", [
    ({"z_star": None}, "missing key 'z_star'"),
    ({"format_version": np.int64(99)}, "'format_version' is 99"),
    ({"features": np.zeros((10, 648), np.float32)}, r"key 'features' has shape \(10, 648\), expected \(174, 648\)"),
    ({"format_version": np.int64(1), "coarsest_ratio": None},  # format 1 had no coarsest_ratio
     "'format_version' is 1; .* run ganimator-preprocess on the BVH again"),
    ({"parents": np.arange(-1, 2)}, r"key 'parents' has shape \(3,\)"),
    ({"level_lengths": np.zeros((1, 0), np.int64)}, "'level_lengths' .* must increase"),
    ({"level_lengths": np.array([[129, 172, 229, 305, 406, 541, 600]])}, r"must increase up to each clip's frames, \[648\]"),
    ({"clip_frames": np.array([600, 40])}, r"'clip_frames' \[600, 40\] must count the 648 frames"),
    ({"noise_amplitudes": np.array([[np.nan] * 7], np.float32)}, "'noise_amplitudes' holds NaN"),
    ({"level_lengths": np.array([[1.5, 2.5]])}, "key 'level_lengths' has dtype float64"),
])
def test_bad_npz_is_a_clear_error(salsa, tmp_path, changes, message):
    salsa.save(tmp_path / "good.npz")
    bad = rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", **changes)
    with pytest.raises(DatasetError, match=message) as err:
        MotionDataset.load(bad)
    assert "bad.npz" in str(err.value)


def test_garbage_npz_is_a_clear_error(tmp_path):
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(DatasetError, match="x.npz: not a readable npz"):
        MotionDataset.load(tmp_path / "x.npz")


def test_forcing_the_wrong_rig_names_the_file_and_joint(clip):
    from ganimator.bvh import BVHError
    from ganimator.skeleton import CRAB

    with pytest.raises(BVHError, match=r"Salsa-Dancing-6.bvh: rig 'crab': joint 'ORG_Hips'"):
        MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"), rig=CRAB)


def test_motion_writes_back_as_bvh_of_the_reduced_skeleton(clip, tmp_path):
    skeleton, motion = load_motion(clip("Salsa-Dancing-6.bvh"))
    write_bvh(tmp_path / "out.bvh", motion_to_bvh(motion, skeleton))
    back_skeleton, back = load_motion(tmp_path / "out.bvh")
    assert back_skeleton.names == skeleton.names and back.num_frames == motion.num_frames
    assert torch.allclose(back.rotations, motion.rotations, atol=1e-5)
    assert (back.joint_positions(skeleton) - motion.joint_positions(skeleton)).abs().max() < 1e-3


def test_procedural_clip_is_a_mixamo_dance(tmp_path):
    write_bvh(tmp_path / "demo.bvh", procedural_dance(seconds=6))
    data = MotionDataset.from_bvh(tmp_path / "demo.bvh")
    assert data.skeleton.rig == "mixamo" and data.clips[0].features.shape == (174, 180)
    assert -0.05 < data.clips[0].motion.joint_positions(data.skeleton)[..., 1].min() < 0.1  # feet reach the floor
    assert 0.0 < data.clips[0].contacts.mean() < 1.0
    assert roma.rotmat_geodesic_distance(data.clips[0].motion.rotations[:-1], data.clips[0].motion.rotations[1:]).max() < 0.5


def test_a_version_2_file_of_one_clip_still_loads(salsa, tmp_path):
    """Run folders and exports made before multi-clip files hold version 2: one clip, no clip axis."""
    salsa.save(tmp_path / "v3.npz")
    with np.load(tmp_path / "v3.npz") as npz:
        v3 = {k: npz[k] for k in npz.files}
    old = rewrite(tmp_path / "v3.npz", tmp_path / "v2.npz", format_version=np.int64(2), clip_frames=None,
                  **{k: v3[k][0] for k in ("begin_xz", "level_lengths", "noise_amplitudes", "source")})
    loaded = MotionDataset.load(old)
    assert len(loaded.clips) == 1 and loaded.source == "Salsa-Dancing-6.bvh"
    assert loaded.clips[0].level_lengths == salsa.clips[0].level_lengths and torch.equal(loaded.clips[0].features, salsa.clips[0].features)
    assert torch.equal(loaded.clips[0].z_star, salsa.clips[0].z_star) and torch.equal(loaded.clips[0].begin_xz, salsa.clips[0].begin_xz)
