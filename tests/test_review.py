"""Rerun review recordings, read back with Rerun's own reader."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import rerun as rr
from rerun.chunk import RrdReader

from ganimator.bvh import BVHError, load_motion, motion_to_bvh, write_bvh
from ganimator.dataset import MotionDataset
from ganimator.errors import UserError
from ganimator.kinematics import contact_labels
from ganimator.motion import Motion
from ganimator.generate import load_run
from ganimator.recording import CONTACT, features_clip, log_clips, write_recording
from ganimator.review_server import review_dirs

MIXAMO_PARENTS = [-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 13, 16, 17, 18, 13, 20, 21, 22]


def read(path) -> dict:
    """entity path -> (rows over the frame timeline, points per row, annotation context, per-frame
    colours and positions in frame order, text documents as (media type, text))"""
    out = {}
    for chunk in RrdReader(str(path)).stream().to_chunks():
        batch = chunk.to_record_batch()
        entry = out.setdefault(chunk.entity_path, {"frames": 0, "points": set(), "context": None, "colors": {},
                                                   "positions": {}, "text": []})
        if "frame" in chunk.timeline_names and "Points3D:positions" in batch.schema.names:
            entry["frames"] += chunk.num_rows
            entry["points"] |= {len(p) for p in batch.column("Points3D:positions").to_pylist()}
            frames = batch.column("frame").to_pylist()
            if "Points3D:colors" in batch.schema.names:  # footprints take their colour once, statically
                entry["colors"].update(zip(frames, batch.column("Points3D:colors").to_pylist()))
            entry["positions"].update(zip(frames, batch.column("Points3D:positions").to_pylist()))
        if "Points3D:show_labels" in batch.schema.names:
            entry["show_labels"] = batch.column("Points3D:show_labels").to_pylist()[0][0]
        if "AnnotationContext:context" in batch.schema.names:
            entry["context"] = batch.column("AnnotationContext:context").to_pylist()[0][0]  # row 0, its classes
        if "TextDocument:text" in batch.schema.names:
            entry["text"] += [(m[0], t[0]) for m, t in zip(batch.column("TextDocument:media_type").to_pylist(),
                                                           batch.column("TextDocument:text").to_pylist())]
    for entry in out.values():
        entry["colors"] = [entry["colors"][f] for f in sorted(entry["colors"])]
        entry["positions"] = [entry["positions"][f] for f in sorted(entry["positions"])]
    return out


def blueprint(path) -> dict:
    """The recording's default layout: {'views': {name: (kind, origin, eye target or None)}, 'time': {...},
    'panels': {panel: state}} (Rerun's PanelState: 1 hidden, 2 collapsed, 3 expanded)."""
    reader = RrdReader(str(path))
    (store,) = reader.blueprints()
    parts: dict[str, dict] = {}
    for chunk in reader.stream(store=store).to_chunks():
        batch = chunk.to_record_batch()
        parts.setdefault(chunk.entity_path, {}).update(
            {n.split(":")[-1]: batch.column(n).to_pylist()[-1] for n in batch.schema.names if ":" in n})
    views = {}
    for path, part in parts.items():
        if path.startswith("/view/") and path.count("/") == 2:
            eye = parts.get(f"{path}/EyeControls3D", {}).get("look_target")
            views[part["display_name"][0]] = (part["class_identifier"][0], part["space_origin"][0], eye)
    panels = {p: parts[f"/{p}"]["state"][0] for p in ("blueprint_panel", "selection_panel", "time_panel")}
    return {"views": views, "time": parts["/time_panel"], "panels": panels}


@pytest.fixture(scope="module")
def runs(walk_npz, walk_runs):
    """Two tiny trained runs on the Mixamo walk: two trials to compare (the folder of walk.npz, their folders)."""
    return walk_npz.parent, walk_runs


def test_review_recording_holds_both_trials_and_the_real_clip(runs, tmp_path):
    tmp, dirs = runs
    run = load_run(dirs[0])  # and what an application writes from a run, in a folder of BVH files
    run.write(run.generate(30, 1, seed=0), tmp_path / "generated")
    out = subprocess.run(["ganimator-review", *map(str, dirs), str(tmp_path / "generated"), "--length", "90",
                          "--save", str(tmp_path / "r.rrd")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rec = read(tmp_path / "r.rrd")
    assert rec["/skeletons/generated/sample-000"]["frames"] == 30
    walk = MotionDataset.load(tmp / "walk.npz")
    real = walk.clips[0].features.shape[-1]
    assert rec["/skeletons/real"]["frames"] == real
    for name, other in (("trial0", "trial1"), ("trial1", "trial0")):
        entry = rec[f"/skeletons/{name}/sample-0"]
        assert entry["frames"] == 90 and entry["points"] == {24}
        # each sample's notes: one markdown document that names its own run, not the other
        ((media_type, notes),) = rec[f"/skeletons/{name}/sample-0/info"]["text"]
        assert media_type == "text/markdown" and name in notes and other not in notes
    assert rec["/skeletons/real"]["points"] == {24}

    # What the viewer opens on: a 3-D view per run and one for the real clip, each named and aimed at
    # its skeletons, the notes beside them; the side panels folded away; the frame timeline playing.
    layout = blueprint(tmp_path / "r.rrd")
    views = layout["views"]
    assert {k: v[:2] for k, v in views.items() if v[0] == "3D"} == {
        "real": ("3D", "skeletons/real"), "trial0": ("3D", "skeletons/trial0"), "trial1": ("3D", "skeletons/trial1"),
        "generated": ("3D", "skeletons/generated")}
    assert all(eye is not None for kind, _, eye in views.values() if kind == "3D")
    assert views["trial0: notes"][:2] == ("TextDocument", "skeletons/trial0/sample-0/info")
    assert layout["panels"] == {"blueprint_panel": 2, "selection_panel": 2, "time_panel": 2}
    assert layout["time"]["timeline"] == ["frame"] and layout["time"]["play_state"] == [2]  # playing
    assert layout["time"]["loop_mode"] == [3]  # the whole timeline, from frame 0 again
    # joint names are not drawn over the bones; where planted feet stood is drawn, frame by frame
    assert rec["/skeletons/trial0/sample-0"]["show_labels"] is False
    footprints = rec["/skeletons/real/footprints"]
    assert footprints["frames"] == real and max(footprints["points"]) > 0

    (context,) = rec["/"]["context"]  # one skeleton, one class: the runs' and the BVH file's
    description = context["class_description"]
    assert [a["label"] for a in description["keypoint_annotations"]][:3] == ["Hips", "LeftUpLeg", "LeftLeg"]
    bones = {(c["keypoint0"], c["keypoint1"]) for c in description["keypoint_connections"]}
    assert bones == {(j, p) for j, p in enumerate(MIXAMO_PARENTS) if p >= 0}

    # contact joints are highlighted on exactly the frames where the clip's feet touch the ground:
    # the contact columns are LeftToe_End, RightToe_End, LeftToeBase, RightToeBase (joints 5, 10, 4, 9)
    colors = np.array(rec["/skeletons/real"]["colors"], dtype=np.uint64)  # packed 0xRRGGBBAA, frame order
    red = colors == int.from_bytes(bytes(CONTACT), "big")
    expected = np.zeros((real, 24), bool)
    expected[:, [5, 10, 4, 9]] = walk.clips[0].contacts.numpy() > 0.5
    assert 0 < expected.sum() < expected[:, [5, 10, 4, 9]].size  # the walk both plants and lifts its feet
    assert red.shape == (real, 24) and np.array_equal(red, expected)


def test_an_exports_notes_say_which_scores_are_the_final_evaluation_and_which_the_sweeps(runs, tmp_path):
    """The same configuration scores differently in the sweep (its trial's validation) and in the
    export (the retrain's evaluation): the notes name each block, as an export's metrics.json holds them."""
    export = tmp_path / "1"
    shutil.copytree(runs[1][0], export)
    metrics = {"rank": 1, "trial_id": "abc_00000-0", "params": {"lambda_rec": 50.0}, "seed": 0, "score": 0.628,
               "coverage": 1.0, "global_diversity": 1.78, "local_diversity": 1.75, "rec_error": 0.01, "jitter": 1.32,
               "foot_skating": 0.0, "samples": 20, "length": 600, "sample_seed": 0,
               "sweep_metrics": {"score": 0.468, "coverage": 0.9, "jitter": 1.1}}
    (export / "metrics.json").write_text(json.dumps(metrics))
    [_, sample] = review_dirs([export], 1, 30, 0)
    final, sweep = sample.notes.split("**the sweep's validation**")
    assert "**final evaluation (the retrain, seed 0, 20 samples of 600 frames)**" in final
    assert "- score: 0.628" in final and "0.468" not in final
    assert "trial abc_00000-0" in sweep and "- score: 0.468" in sweep and "0.628" not in sweep


def test_other_rigs_draw_with_their_own_tree(clip, tmp_path):
    crab = MotionDataset.from_bvh(clip("Crab-dance-long.bvh"))
    rec = rr.RecordingStream("crab-test")
    rec.save(tmp_path / "crab.rrd")
    log_clips(rec, [features_clip(crab, "crab", crab.clips[0].features, begin_xz=crab.clips[0].begin_xz)])
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


def test_review_of_a_bvh_file_and_a_folder_of_them(clip, tmp_path):
    """What the applications write (RUN/generated/*.bvh) reviewed beside a real clip: each file one
    skeleton of its own length, at the joint positions our loader's forward kinematics gives."""
    walk = clip("Walk-In-Circle.bvh")  # Mixamo, 753 frames at 60 fps
    skeleton, motion = load_motion(walk)
    generated = tmp_path / "generated"
    generated.mkdir()
    # a sample as the applications write one (our writer, the Mixamo subset, 30 fps), and a clip of another rig
    write_bvh(generated / "sample-000.bvh", motion_to_bvh(Motion(motion.rotations[:40], motion.root_positions[:40],
                                                                 motion.fps), skeleton))
    shutil.copy(clip("proud.bvh"), generated / "proud.bvh")  # Xia, 326 frames at 120 fps
    (generated / "notes.txt").write_text("not a clip")
    # as ganimator-review does it (in this process: a command's start-up costs seconds)
    write_recording(review_dirs([str(walk), str(generated)], 1, 0, 0), "save", tmp_path / "r.rrd").disconnect()
    rec = read(tmp_path / "r.rrd")

    # in path order, the folder's files sorted and side by side in its view; read at about 30 fps as
    # training reads a clip
    shown = [("Walk-In-Circle", walk, len(range(0, 753, 2))), ("generated/proud", generated / "proud.bvh",
             len(range(0, 326, 4))), ("generated/sample-000", generated / "sample-000.bvh", 40)]
    for index, (name, path, frames) in zip((0, 0, 1), shown):
        entry = rec[f"/skeletons/{name}"]
        file_skeleton, file_motion = load_motion(path)
        assert entry["frames"] == frames and entry["points"] == {file_skeleton.num_joints}
        fk = file_motion.joint_positions(file_skeleton).numpy()
        positions = np.array(entry["positions"]) - [1.5 * index, 0.0, 0.0]
        for f in (0, 1, frames // 2, frames - 1):
            np.testing.assert_allclose(positions[f], fk[f], atol=1e-5, err_msg=f"{name} frame {f}")
        ((_, notes),) = rec[f"/skeletons/{name}/info"]["text"]
        assert str(path) in notes
    # the written sample reads back as the frames of the walk it was written from
    sample = np.array(rec["/skeletons/generated/sample-000"]["positions"]) - [1.5, 0.0, 0.0]
    np.testing.assert_allclose(sample, motion.joint_positions(skeleton).numpy()[:40], atol=1e-4)

    # one annotation class per skeleton: the walk and the sample written from it share the Mixamo one
    assert [c["class_description"]["info"]["label"] for c in rec["/"]["context"]] == ["mixamo", "xia"]
    assert rec["/skeletons/Walk-In-Circle"]["points"] == {24}
    # the walk's contact joints red exactly where contact_labels says
    red = np.array(rec["/skeletons/Walk-In-Circle"]["colors"], dtype=np.uint64) == int.from_bytes(bytes(CONTACT), "big")
    expected = np.zeros_like(red)
    expected[:, skeleton.contacts] = contact_labels(motion, skeleton).numpy() > 0.5
    assert expected.any() and np.array_equal(red, expected)


def test_review_paths_that_hold_nothing_to_show_name_the_path(clip, tmp_path):
    garbage = tmp_path / "broken.bvh"
    garbage.write_text("this is not a BVH file\n")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    in_progress = tmp_path / "run"
    in_progress.mkdir()
    (in_progress / "config.yaml").write_text("seed: 0\n")
    folder = tmp_path / "generated"
    folder.mkdir()
    shutil.copy(garbage, folder / "sample-001.bvh")
    cases = [(tmp_path / "missing", "no such file or folder"), (text, "is not a .bvh file"),
             (in_progress, "without checkpoint.pt"), (garbage, "expected 'HIERARCHY'"),
             (folder, "expected 'HIERARCHY'")]
    for path, why in cases:
        with pytest.raises(UserError) as error:
            review_dirs([clip("proud.bvh"), path], 1, 0, 0)
        named = folder / "sample-001.bvh" if path == folder else path
        assert str(named) in str(error.value) and why in str(error.value), (path, error.value)
    with pytest.raises(BVHError):
        review_dirs([garbage], 1, 0, 0)

    # the command: one line, exit status 2, no traceback; a good path beside it changes nothing
    out = subprocess.run(["ganimator-review", str(clip("proud.bvh")), str(garbage), "--save", str(tmp_path / "r.rrd")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == f"error: {garbage}:1: expected 'HIERARCHY' on the first line\n"
    assert not (tmp_path / "r.rrd").exists()


def test_clips_of_one_name_get_their_own_entities(clip):
    proud = clip("proud.bvh")
    assert [c.name for c in review_dirs([proud, proud, proud], 1, 0, 0)] == ["proud", "proud-2", "proud-3"]
