import numpy as np
import pytest
import torch

from conftest import CLIPS
from ganimator.bvh import BVHError, read_bvh, write_bvh
from ganimator.kinematics import forward_kinematics


def fk_metres(bvh):
    translations = torch.from_numpy(bvh.local_translations()) * 0.01
    return forward_kinematics(bvh.local_rotations(), translations, bvh.parents)


@pytest.mark.parametrize("name", CLIPS)
def test_round_trip_keeps_rotations_and_joint_positions(clip, tmp_path, name):
    original = read_bvh(clip(name))
    write_bvh(tmp_path / name, original)
    again = read_bvh(tmp_path / name)
    assert again.names == original.names and again.parents == original.parents
    assert again.channels == original.channels and again.num_frames == original.num_frames
    assert again.end_sites.keys() == original.end_sites.keys()
    assert torch.allclose(again.local_rotations(), original.local_rotations(), atol=1e-5)
    assert (fk_metres(again) - fk_metres(original)).abs().max() < 1e-3


def test_fk_puts_children_at_their_offset_from_the_parent(clip):
    bvh = read_bvh(clip("Salsa-Dancing-6.bvh"))
    positions = fk_metres(bvh)[0].numpy()
    for j, p in enumerate(bvh.parents):
        if p >= 0:
            bone = np.linalg.norm(positions[j] - positions[p])
            assert bone == pytest.approx(np.linalg.norm(bvh.offsets[j]) * 0.01, abs=1e-6)


def corrupt(clip, tmp_path, edit):
    lines = clip("proud.bvh").read_text().splitlines()
    path = tmp_path / "bad.bvh"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def motion_line(lines):
    return next(i for i, line in enumerate(lines) if line.startswith("Frame Time")) + 1


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[: motion_line(lines) + 10], "truncated"),
    (lambda lines: [l.replace("CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 4 Zrotation Yrotation Xrotation", 1)
                    for l in lines], "CHANNELS says 4 but names 3"),
    (lambda lines: lines[: motion_line(lines) + 3] + [lines[motion_line(lines) + 3] + " 1.0"]
     + lines[motion_line(lines) + 4:], "frame 3 has"),
    (lambda lines: lines[: motion_line(lines) + 5] + [" ".join(["abc"] + lines[motion_line(lines) + 5].split()[1:])]
     + lines[motion_line(lines) + 6:], "non-numeric value 'abc' in frame 5"),
    (lambda lines: [l for l in lines if not l.startswith(("MOTION", "Frames", "Frame Time"))][: motion_line(lines) - 3],
     "no MOTION section"),
])
def test_malformed_files_name_the_file_and_line(clip, tmp_path, edit, message):
    path = corrupt(clip, tmp_path, edit)
    with pytest.raises(BVHError, match=message) as err:
        read_bvh(path)
    assert str(path) in str(err.value)
    if message != "no MOTION section":
        assert err.value.line is not None and f":{err.value.line}:" in str(err.value)


def test_wrong_value_count_reports_the_offending_line(clip, tmp_path):
    lines = clip("proud.bvh").read_text().splitlines()
    first = motion_line(lines)
    path = corrupt(clip, tmp_path, lambda ls: ls[:first + 7] + [" ".join(ls[first + 7].split()[:-1])] + ls[first + 8:])
    with pytest.raises(BVHError) as err:
        read_bvh(path)
    assert err.value.line == first + 8  # 1-based line of frame 7


def test_euler_channels_are_intrinsic_in_file_order(tmp_path):
    """'Zrotation Xrotation Yrotation' means R = Rz Rx Ry: checked against a hand-built product."""
    (tmp_path / "one.bvh").write_text(
        "HIERARCHY\nROOT a\n{\n OFFSET 0 0 0\n CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n"
        " JOINT b\n {\n  OFFSET 0 10 0\n  CHANNELS 3 Zrotation Xrotation Yrotation\n"
        "  End Site\n  {\n   OFFSET 0 0 0\n  }\n }\n}\nMOTION\nFrames: 1\nFrame Time: 0.033333\n0 0 0 90 0 0 90 90 0\n")
    bvh = read_bvh(tmp_path / "one.bvh")
    c, s = 0.0, 1.0
    rz = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]], dtype=torch.float64)
    rx = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)
    assert torch.allclose(bvh.local_rotations()[0, 1], rz @ rx, atol=1e-12)
    # the child's end site: root turns +90 about z, so the 10-unit bone along y points along -x
    positions = forward_kinematics(bvh.local_rotations(), torch.from_numpy(bvh.local_translations()), bvh.parents)
    assert torch.allclose(positions[0, 1], torch.tensor([-10.0, 0, 0], dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("channels, message", [
    ("CHANNELS 1 Xrotation", "1 rotation channels; joints need 0 or 3"),
    ("CHANNELS 3 Xrotation Xrotation Yrotation", "listed twice"),
])
def test_unreadable_channel_sets_are_rejected(tmp_path, channels, message):
    (tmp_path / "x.bvh").write_text(f"HIERARCHY\nROOT a\n{{\n OFFSET 0 0 0\n {channels}\n}}\nMOTION\nFrames: 0\n"
                                    "Frame Time: 0.1\n")
    with pytest.raises(BVHError, match=message):
        read_bvh(tmp_path / "x.bvh")
