import numpy as np
import pytest
import roma
import torch

from ganimator.bvh import write_bvh
from ganimator.dataset import DatasetError, MotionDataset
from ganimator.features import FeatureLayout, load_motion, motion_to_bvh
from ganimator.procedural import procedural_dance
from ganimator.pyramid import noise_amplitudes, pyramid_lengths, resample
from ganimator.skeleton import MIXAMO_JOINTS


@pytest.fixture(scope="module")
def salsa(clip):
    return MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))


def test_salsa_pyramid_matches_the_original(salsa):
    assert salsa.level_lengths == [129, 172, 229, 305, 406, 541, 648]
    assert salsa.features.shape == (6 * (24 + 4 + 1), 648)  # joints, contact nodes, root block
    assert salsa.skeleton.names == list(MIXAMO_JOINTS)
    assert salsa.motion.fps == pytest.approx(30, rel=1e-3)


def test_noise_amplitudes_are_the_rms_of_what_each_level_adds(salsa):
    levels = salsa.levels()
    amps = noise_amplitudes(levels)
    assert torch.allclose(amps, salsa.noise_amplitudes)
    expected = (levels[3] - resample(levels[2][None], levels[3].shape[-1])[0]).pow(2).mean().sqrt()
    assert amps[3] == pytest.approx(expected.item())
    assert amps[0] == pytest.approx(levels[0].pow(2).mean().sqrt().item())


def test_features_decode_back_to_the_clip(salsa, clip):
    skeleton, motion = load_motion(clip("Salsa-Dancing-6.bvh"))
    decoded, contacts = salsa.decode(salsa.features.double())
    assert torch.allclose(decoded.rotations, motion.rotations, atol=1e-5)
    assert torch.allclose(decoded.root_positions, motion.root_positions.to(decoded.root_positions), atol=1e-3)
    assert torch.equal(contacts.float(), salsa.contacts)
    positions = decoded.joint_positions(skeleton) - motion.joint_positions(skeleton)
    assert positions.abs().max() < 1e-3


def test_layout_is_the_originals(salsa):
    """Joint nodes hold the first two ROWS of each rotation; each contact node its label and 5
    zeros; the root block x velocity, height, z velocity and 3 zeros."""
    f, layout, motion = salsa.features.double(), salsa.layout, salsa.motion
    J, C, T = 24, 4, 648
    rows = motion.rotations[:, :, :2, :].reshape(T, 6 * J).T
    assert torch.allclose(f[layout.rotations], rows, atol=1e-6)
    nodes = f[6 * J:6 * (J + C)].reshape(C, 6, T)
    assert torch.equal(nodes[:, 0].T.float(), salsa.contacts) and nodes[:, 1:].abs().max() == 0
    assert (salsa.contacts[0] == 0).all()  # frame 0 has no velocity, so no contact, as in the original
    root = f[6 * (J + C):]
    xz = motion.root_positions[:, [0, 2]]
    assert torch.allclose(root[0, 1:], xz[1:, 0] - xz[:-1, 0], atol=1e-5)
    assert torch.allclose(root[1], motion.root_positions[:, 1], atol=1e-5)
    assert torch.allclose(root[2, 1:], xz[1:, 1] - xz[:-1, 1], atol=1e-5)
    assert root[0, 0] == root[0, 1] and root[3:].abs().max() == 0  # frame 0 velocity is frame 1's
    assert layout.pose == slice(0, 6 * (J + C))


def test_contacts_label_planted_feet(salsa):
    # a planted toe barely moves: labelled frames move less than unlabelled ones
    positions = salsa.motion.joint_positions(salsa.skeleton)[:, salsa.skeleton.contacts]
    speed = (positions[1:] - positions[:-1]).norm(dim=-1)
    labels = salsa.contacts[1:].bool()
    assert 0.1 < labels.float().mean() < 0.95
    assert speed[labels].mean() < 0.5 * speed[~labels].mean()


@pytest.mark.parametrize("name, rig, joints, contacts", [
    ("Walk-In-Circle.bvh", "mixamo", 24, 4),
    ("Crab-dance-long.bvh", "crab", 56, 6),
    ("proud.bvh", "xia", 31, 2),
])
def test_every_rig_preprocesses(clip, name, rig, joints, contacts):
    data = MotionDataset.from_bvh(clip(name))
    assert (data.skeleton.rig, data.skeleton.num_joints, len(data.skeleton.contacts)) == (rig, joints, contacts)
    assert data.features.shape[0] == FeatureLayout(joints, contacts).channels
    assert data.level_lengths == pyramid_lengths(data.features.shape[1])
    assert len(data.level_lengths) == 7 and torch.isfinite(data.features).all()


def test_npz_round_trip(salsa, tmp_path):
    salsa.save(tmp_path / "salsa.npz")
    again = MotionDataset.load(tmp_path / "salsa.npz")
    assert torch.equal(again.features, salsa.features) and torch.equal(again.z_star, salsa.z_star)
    assert again.level_lengths == salsa.level_lengths and again.skeleton.names == salsa.skeleton.names
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
    ({"level_lengths": np.array([], np.int64)}, "'level_lengths' .* must increase"),
    ({"level_lengths": np.array([129, 172, 229, 305, 406, 541, 600])}, "must increase up to the 648 frames"),
    ({"noise_amplitudes": np.array([np.nan] * 7, np.float32)}, "'noise_amplitudes' holds NaN"),
    ({"level_lengths": np.array([1.5, 2.5])}, "key 'level_lengths' has dtype float64"),
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

    with pytest.raises(BVHError, match=r"Salsa-Dancing-6.bvh: rig 'crab': joint 'DEF_BN_Leg_L_15_end'"):
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
    assert data.skeleton.rig == "mixamo" and data.features.shape == (174, 180)
    assert -0.05 < data.motion.joint_positions(data.skeleton)[..., 1].min() < 0.1  # feet reach the floor
    assert 0.0 < data.contacts.mean() < 1.0
    assert roma.rotmat_geodesic_distance(data.motion.rotations[:-1], data.motion.rotations[1:]).max() < 0.5
