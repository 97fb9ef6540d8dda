"""Rerun review recordings, read back with Rerun's own reader."""
import subprocess

import numpy as np
import pytest
import rerun as rr
from rerun.chunk import RrdReader

from ganimator.config import load_config
from ganimator.dataset import MotionDataset
from ganimator.review import CONTACT, features_clip, log_clips
from ganimator.trainer import Trainer

MIXAMO_PARENTS = [-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 13, 16, 17, 18, 13, 20, 21, 22]


def read(path) -> dict:
    """entity path -> (rows over the frame timeline, points per row, annotation context, per-frame
    colours in frame order, text documents as (media type, text))"""
    out = {}
    for chunk in RrdReader(str(path)).stream().to_chunks():
        batch = chunk.to_record_batch()
        entry = out.setdefault(chunk.entity_path, {"frames": 0, "points": set(), "context": None, "colors": {},
                                                   "text": []})
        if "frame" in chunk.timeline_names and "Points3D:positions" in batch.schema.names:
            entry["frames"] += chunk.num_rows
            entry["points"] |= {len(p) for p in batch.column("Points3D:positions").to_pylist()}
            entry["colors"].update(zip(batch.column("frame").to_pylist(), batch.column("Points3D:colors").to_pylist()))
        if "AnnotationContext:context" in batch.schema.names:
            entry["context"] = batch.column("AnnotationContext:context").to_pylist()[0][0]  # row 0, its classes
        if "TextDocument:text" in batch.schema.names:
            entry["text"] += [(m[0], t[0]) for m, t in zip(batch.column("TextDocument:media_type").to_pylist(),
                                                           batch.column("TextDocument:text").to_pylist())]
    for entry in out.values():
        entry["colors"] = [entry["colors"][f] for f in sorted(entry["colors"])]
    return out


@pytest.fixture(scope="module")
def runs(clip, tmp_path_factory):
    """Two tiny trained runs on the Mixamo walk: two trials to compare."""
    tmp = tmp_path_factory.mktemp("review")
    MotionDataset.from_bvh(clip("Walk-In-Circle.bvh")).save(tmp / "walk.npz")
    dirs = []
    for seed in (0, 1):
        cfg = load_config([f"npz_filename={tmp / 'walk.npz'}", f"run_dir={tmp / f'trial{seed}'}", f"seed={seed}",
                           "train_data_iter=1", "validation_samples=0", "hidden_channels=[8,16,16]", "progress=false"])
        dirs.append(Trainer(cfg).fit().run_dir)
    return tmp, dirs


def test_review_recording_holds_both_trials_and_the_real_clip(runs, tmp_path):
    tmp, dirs = runs
    out = subprocess.run(["ganimator-review", *map(str, dirs), "--length", "90", "--save", str(tmp_path / "r.rrd")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rec = read(tmp_path / "r.rrd")
    walk = MotionDataset.load(tmp / "walk.npz")
    real = walk.features.shape[-1]
    assert rec["/skeletons/real"]["frames"] == real
    for name, other in (("trial0", "trial1"), ("trial1", "trial0")):
        entry = rec[f"/skeletons/{name}/sample-0"]
        assert entry["frames"] == 90 and entry["points"] == {24}
        # each sample's notes: one markdown document that names its own run, not the other
        ((media_type, notes),) = rec[f"/skeletons/{name}/sample-0/info"]["text"]
        assert media_type == "text/markdown" and name in notes and other not in notes
    assert rec["/skeletons/real"]["points"] == {24}

    (context,) = rec["/"]["context"]
    description = context["class_description"]
    assert [a["label"] for a in description["keypoint_annotations"]][:3] == ["Hips", "LeftUpLeg", "LeftLeg"]
    bones = {(c["keypoint0"], c["keypoint1"]) for c in description["keypoint_connections"]}
    assert bones == {(j, p) for j, p in enumerate(MIXAMO_PARENTS) if p >= 0}

    # contact joints are highlighted on exactly the frames where the clip's feet touch the ground:
    # the contact columns are LeftToe_End, RightToe_End, LeftToeBase, RightToeBase (joints 5, 10, 4, 9)
    colors = np.array(rec["/skeletons/real"]["colors"], dtype=np.uint64)  # packed 0xRRGGBBAA, frame order
    red = colors == int.from_bytes(bytes(CONTACT), "big")
    expected = np.zeros((real, 24), bool)
    expected[:, [5, 10, 4, 9]] = walk.contacts.numpy() > 0.5
    assert 0 < expected.sum() < expected[:, [5, 10, 4, 9]].size  # the walk both plants and lifts its feet
    assert red.shape == (real, 24) and np.array_equal(red, expected)


def test_other_rigs_draw_with_their_own_tree(clip, tmp_path):
    crab = MotionDataset.from_bvh(clip("Crab-dance-long.bvh"))
    rec = rr.RecordingStream("crab-test")
    rec.save(tmp_path / "crab.rrd")
    log_clips(rec, [features_clip(crab, "crab", crab.features)])
    rec.disconnect()  # flushes, and ends the file with its footer
    out = read(tmp_path / "crab.rrd")
    description = out["/"]["context"][0]["class_description"]
    assert description["info"]["label"] == "crab"
    assert len(description["keypoint_annotations"]) == crab.skeleton.num_joints == 56
    assert len(description["keypoint_connections"]) == 55
    assert out["/skeletons/crab"]["points"] == {56}


def test_review_of_nothing_is_a_clear_error(tmp_path):
    out = subprocess.run(["ganimator-review", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "no trained run or export" in out.stderr
