"""Careless and hostile input: every case ends in one line naming what is wrong (exit status 2,
no traceback), and every file that existed before is byte-identical afterwards.

The ganimator-* commands run in this process through their entry points (the same code as the
installed scripts, without a second torch import per case); sweeps/run.py runs as users run it.
Covered elsewhere: review --serve on loopback (test_review_serve.py), Ray's ports and token
(test_ray_exposure.py), Tune state that would run code, never loaded on resume (test_resume.py),
PostgreSQL (test_postgres.py).
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ganimator import cli
from ganimator.bvh import BVH, read_bvh, write_bvh
from ganimator.dataset import MotionDataset
from ganimator.procedural import procedural_dance
from ganimator.pyramid import min_clip_frames

from conftest import ROOT, clean_env

TOOLS = {"preprocess": cli.preprocess, "train": cli.train, "generate": cli.generate, "evaluate": cli.evaluate,
         "review": cli.review}
TINY = ["hidden_channels=[16,32,32]", "train_data_iter=1", "validation_samples=0", "clearml=off", "progress=false"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but a run folder's lock: it names its last holder's PID (RunDir.hold), which
    a refused command also is for a moment."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def command(tool: str, *args, cwd: Path, capsys, monkeypatch) -> tuple[int, str]:
    """(exit status, stderr) of `ganimator-<tool> args` run in `cwd`."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"ganimator-{tool}", *map(str, args)])
    capsys.readouterr()
    try:
        TOOLS[tool]()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def refused(result: tuple[int, str], *fragments: str) -> str:
    code, err = result
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note: ", "warning: "))]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run_cli(capsys, monkeypatch):
    return lambda tool, *args, cwd: command(tool, *args, cwd=cwd, capsys=capsys, monkeypatch=monkeypatch)


@pytest.fixture(scope="module")
def proud(clip) -> tuple[str, list[str]]:
    """proud.bvh as (text up to MOTION, its frame lines)."""
    head, motion = clip("proud.bvh").read_text().split("MOTION", 1)
    return head, motion.strip().splitlines()[2:]


def bvh_text(proud, frames: list[str], count=None) -> str:
    head, _ = proud
    return f"{head}MOTION\nFrames: {len(frames) if count is None else count}\nFrame Time: 0.033333\n" + "".join(
        f"{f}\n" for f in frames)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A folder with a procedural clip's npz and a tiny run trained on it."""
    folder = tmp_path_factory.mktemp("tiny")
    MotionDataset.from_bvh(_write(folder / "clip.bvh", procedural_dance(4.0))).save(folder / "clip.npz")
    subprocess.run([sys.executable, "-c", "from ganimator.cli import train; train()", "npz_filename=clip.npz",
                    "run_dir=run", *TINY], cwd=folder, check=True, capture_output=True, env=clean_env(folder))
    return folder


def _write(path: Path, bvh: BVH) -> Path:
    write_bvh(path, bvh)
    return path


# ---- BVH -------------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [0, 1, 5, 14])
def test_a_clip_shorter_than_the_pyramid_supports_is_refused_by_name(proud, tmp_path, run_cli, frames):
    (tmp_path / "short.bvh").write_text(bvh_text(proud, proud[1][:frames]))
    refused(run_cli("preprocess", "short.bvh", "short.npz", cwd=tmp_path),
            "short.bvh", f"{frames} frames are too few", f"has {min_clip_frames()} frames")
    assert not (tmp_path / "short.npz").exists()


def test_the_shortest_clip_the_pyramid_supports_preprocesses_and_trains(proud, tmp_path, run_cli):
    (tmp_path / "shortest.bvh").write_text(bvh_text(proud, proud[1][:min_clip_frames()]))
    assert run_cli("preprocess", "shortest.bvh", "shortest.npz", cwd=tmp_path)[0] == 0
    assert MotionDataset.load(tmp_path / "shortest.npz").clips[0].level_lengths[0] == 3
    code, err = run_cli("train", "npz_filename=shortest.npz", "run_dir=run", *TINY, cwd=tmp_path)
    assert code == 0, err
    assert (tmp_path / "run" / "stage-4.pt").is_file()


def test_a_huge_frame_count_is_checked_against_the_lines_before_any_allocation(proud, tmp_path, run_cli):
    (tmp_path / "huge.bvh").write_text(bvh_text(proud, proud[1][:3], count=99999999999999))
    refused(run_cli("preprocess", "huge.bvh", "out.npz", cwd=tmp_path), "huge.bvh:", "after 3 of 99999999999999 frames")


def test_a_value_past_float32_is_refused_with_its_line(proud, tmp_path, run_cli):
    frames = list(proud[1][:40])
    values = frames[7].split()
    frames[7] = " ".join(["1e300", *values[1:]])
    (tmp_path / "big.bvh").write_text(bvh_text(proud, frames))
    line = proud[0].count("\n") + 4 + 7  # MOTION, Frames and Frame Time come before the frames
    refused(run_cli("preprocess", "big.bvh", "out.npz", cwd=tmp_path), f"big.bvh:{line}:", "frame 7 holds 1e+300")


def test_a_1500_joint_chain_writes_and_reads_back_without_recursion(tmp_path):
    joints = 1500
    chain = BVH(names=[f"j{k}" for k in range(joints)], parents=list(range(-1, joints - 1)),
                offsets=np.tile([0.0, 1.0, 0.0], (joints, 1)),
                channels=[("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")]
                + [("Zrotation", "Xrotation", "Yrotation")] * (joints - 1),
                frame_time=1 / 30, motion=np.zeros((2, 3 + 3 * joints)))
    assert joints * 2 > sys.getrecursionlimit()
    write_bvh(tmp_path / "chain.bvh", chain)
    back = read_bvh(tmp_path / "chain.bvh")
    assert back.parents == chain.parents and back.num_frames == 2 and back.offsets.shape == (joints, 3)


# ---- npz -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("fps", np.float64(0), "key 'fps' must be positive"),
    ("scale", np.float64(-1), "key 'scale' must be positive"),
    ("contact_threshold", np.float64(0), "key 'contact_threshold' must be positive"),
    ("rotation_orders", None, "key 'rotation_orders' holds 'XXZ'"),
    ("noise_amplitudes", None, "key 'noise_amplitudes' holds a negative value"),
    ("joint_names", None, "key 'joint_names' must hold"),
])
def test_every_npz_field_is_validated_before_training(tiny, tmp_path, run_cli, key, value, message):
    with np.load(tiny / "clip.npz") as npz:
        data = {k: npz[k] for k in npz.files}
    if value is None:
        value = data[key].copy()
        value.reshape(-1)[1] = {"rotation_orders": "XXZ", "noise_amplitudes": -1.0, "joint_names": value[0]}[key]
    np.savez(tmp_path / "bad.npz", **{**data, key: value})
    before = snapshot(tmp_path)
    refused(run_cli("train", "npz_filename=bad.npz", "run_dir=run", *TINY, cwd=tmp_path), "bad.npz", message)
    assert snapshot(tmp_path) == before


# ---- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("yaml_text, args, message", [
    ("- a list\n", [], "holds a list, not a mapping"),
    (b"optim:\n  lr_g: \xff\n", [], "is not UTF-8 text"),
    ("util:\n  seed: ${util.seed}\n", [], "'util.seed': Recursive interpolation"),
    ("optim:\n  lr_g: ${oc.env:GANIMATOR_UNSET_VARIABLE}\n", [], "'optim.lr_g'"),
    ("run: {}\n", [], "config key 'run': Key 'run' not in 'TrainConfig'"),
    ("{}\n", ["device=banana"], "'util.device': 'banana' is not auto, cpu, cuda"),
    ("{}\n", ["seed=1e21"], "'util.seed'"),
    ("{}\n", ["seed=-1"], "'util.seed' must lie in [0, 2**63)"),
])
def test_bad_configs_are_one_line_before_any_work(tiny, tmp_path, run_cli, yaml_text, args, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(yaml_text if isinstance(yaml_text, bytes) else yaml_text.encode())
    shutil.copy(tiny / "clip.npz", tmp_path)
    before = snapshot(tmp_path)
    refused(run_cli("train", "config=config.yaml", "npz_filename=clip.npz", "run_dir=run", *args, *TINY, cwd=tmp_path),
            message)
    assert snapshot(tmp_path) == before


def test_no_resolver_reaches_a_written_config(tiny, tmp_path, run_cli, monkeypatch):
    # ${oc.env:...} would put the variable's value into config.yaml and ClearML
    monkeypatch.setenv("GANIMATOR_PLANTED_SECRET", "s3cr3t-value")
    shutil.copy(tiny / "clip.npz", tmp_path)
    for arg in ("experiment_name=${oc.env:GANIMATOR_PLANTED_SECRET}", "tags=[${oc.env:GANIMATOR_PLANTED_SECRET}]",
                "lambda_rec=${oc.decode:'50'}"):
        line = refused(run_cli("train", "npz_filename=clip.npz", "run_dir=run", arg, *TINY, cwd=tmp_path),
                       "calls a resolver")
        assert "s3cr3t-value" not in line
    assert not (tmp_path / "run").exists()
    # a plain reference to another key is kept, resolved into the written config
    code, _ = run_cli("train", "npz_filename=clip.npz", "run_dir=run", "lambda_consistency=${optim.lambda_rec}",
                      *TINY, cwd=tmp_path)
    assert code == 0 and "lambda_consistency: 50.0" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_is_refused_before_the_run_folder_exists(tiny, tmp_path, run_cli):
    shutil.copy(tiny / "clip.npz", tmp_path)
    refused(run_cli("train", "npz_filename=clip.npz", "run_dir=run", "device=cuda", *TINY, cwd=tmp_path),
            "'util.device' is 'cuda', but this torch sees no CUDA device")
    assert not (tmp_path / "run").exists()


def test_a_kernel_wider_than_the_coarsest_level_is_refused(tiny, tmp_path, run_cli):
    shutil.copy(tiny / "clip.npz", tmp_path)
    coarsest = MotionDataset.load(tmp_path / "clip.npz").clips[0].level_lengths[0]
    refused(run_cli("train", "npz_filename=clip.npz", "run_dir=run", f"kernel_size={2 * coarsest + 1}", *TINY,
                    cwd=tmp_path), f"'model.kernel_size' is {2 * coarsest + 1}", f"has {coarsest}")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_of_other_networks_is_one_line(tiny, tmp_path, run_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny / "run", run)
    before = snapshot(tmp_path)
    refused(run_cli("train", "run_dir=run", "resume=true", "hidden_channels=[16,32,64]", cwd=tmp_path),
            "checkpoint.pt: does not fit this run's model and data", "size mismatch")
    config = run / "config.yaml"  # the same for generation, from a run whose config was edited
    config.write_text(config.read_text().replace("- 32\n  - 32", "- 32\n  - 64"))
    before["run/config.yaml"] = config.read_bytes()
    refused(run_cli("generate", "run", cwd=tmp_path), "checkpoint.pt: does not fit")
    assert snapshot(tmp_path) == before


# ---- never over what exists ------------------------------------------------------------------

def test_a_new_run_refuses_a_folder_that_is_not_empty(tiny, tmp_path, run_cli):
    shutil.copy(tiny / "clip.npz", tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("my own notes\n")
    (tmp_path / "mine" / "data.npz").write_bytes(b"not ours")
    before = snapshot(tmp_path)
    refused(run_cli("train", "npz_filename=clip.npz", "run_dir=mine", *TINY, cwd=tmp_path),
            "run_dir mine exists and is not empty")
    assert snapshot(tmp_path) == before


def test_a_run_folder_that_cannot_be_written_is_one_line(tiny, tmp_path, run_cli):
    shutil.copy(tiny / "clip.npz", tmp_path)
    if os.geteuid() == 0:  # root writes anywhere but in /sys
        run_dir = Path("/sys/ganimator-test-run")
    else:
        (tmp_path / "locked").mkdir(mode=0o555)
        run_dir = tmp_path / "locked" / "run"
    before = snapshot(tmp_path)
    refused(run_cli("train", "npz_filename=clip.npz", f"run_dir={run_dir}", *TINY, cwd=tmp_path),
            f"not permitted: '{run_dir}'" if os.geteuid() == 0 else f"Permission denied: '{run_dir}'")
    assert snapshot(tmp_path) == before and not run_dir.exists()


def test_generate_writes_beside_earlier_output_and_never_over_it(tiny, tmp_path, run_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny / "run", run)
    assert run_cli("generate", "run", "--samples", "2", "--length", "100", cwd=tmp_path)[0] == 0
    first = snapshot(run / "generated")
    assert run_cli("generate", "run", "--samples", "1", "--length", "100", "--seed", "1", cwd=tmp_path)[0] == 0
    assert snapshot(run / "generated") == first
    assert sorted(snapshot(run / "generated-2")) == ["sample-000.bvh", "sample.npz"]
    before = snapshot(tmp_path)
    refused(run_cli("generate", "run", "--out", "run/generated", cwd=tmp_path), "--out run/generated exists")
    refused(run_cli("generate", "run", "--samples", "0", cwd=tmp_path), "samples must be at least 1")
    refused(run_cli("generate", "run", "--length", "100000000", cwd=tmp_path), "samples of 100000000 frames need about")
    refused(run_cli("generate", "run", "--seed", str(2**64), cwd=tmp_path), "--seed must lie in")
    assert snapshot(tmp_path) == before


def test_evaluate_appends_beside_an_exports_metrics(tiny, tmp_path, run_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny / "run", run)
    (run / "metrics.json").write_text('{"rank": 1, "params": {"lambda_rec": 20}}\n')  # as an export holds it
    before = snapshot(tmp_path)
    for seed in ("0", "1"):
        assert run_cli("evaluate", "run", "--samples", "2", "--seed", seed, cwd=tmp_path)[0] == 0
    assert (run / "metrics.json").read_bytes() == before["run/metrics.json"]
    evaluations = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [e["sample_seed"] for e in evaluations] == [0, 1] and all(0 <= e["coverage"] <= 1 for e in evaluations)
    refused(run_cli("evaluate", "run", "--samples", "0", cwd=tmp_path), "samples and batch must be at least 1")


# ---- a torn history ---------------------------------------------------------------------------

def test_a_torn_last_history_line_is_dropped_and_anything_else_is_one_line(tiny, tmp_path, run_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny / "run", run)
    history = run / "history.jsonl"
    whole = history.read_text()
    history.write_text(whole + '{"kind": "validation", "sta')  # what a crash mid-write leaves
    code, err = run_cli("train", "run_dir=run", "resume=true", cwd=tmp_path)
    assert code == 0 and "dropped a torn last line" in err and "Traceback" not in err
    assert history.read_text() == whole
    lines = whole.splitlines(keepends=True)
    for bad in ("garbage\n", "\xff\xfe\n", "[1, 2]\n"):
        history.write_bytes(("".join(lines[:1]) + bad + "".join(lines[1:])).encode("latin-1"))
        before = snapshot(tmp_path)
        refused(run_cli("train", "run_dir=run", "resume=true", cwd=tmp_path), "history.jsonl")
        assert snapshot(tmp_path) == before


# ---- sweeps ------------------------------------------------------------------------------------

def sweep(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=clean_env(cwd))


def sweep_refused(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    return refused((proc.returncode, proc.stderr), *fragments)


@pytest.fixture
def sweep_dir(tiny, tmp_path) -> Path:
    shutil.copy(tiny / "clip.npz", tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "1").mkdir()
    (tmp_path / "elsewhere" / "1" / "keep.txt").write_text("not the sweep's\n")
    return tmp_path


@pytest.mark.parametrize("name", ["../elsewhere", "../../x", "/abs/path", ".hidden", "a/b", "", "${oc.env:HOME}"])
def test_a_sweep_name_is_one_plain_folder_name(sweep_dir, name):
    before = snapshot(sweep_dir)
    proc = sweep("npz_filename=clip.npz", f"name={name}", "results_dir=results/deep", "export_dir=exports/deep",
                 cwd=sweep_dir)
    sweep_refused(proc, "sweep key 'name'")
    assert snapshot(sweep_dir) == before and not (sweep_dir / "results").exists()


def test_a_sweep_refuses_an_export_folder_it_did_not_make(sweep_dir):
    before = snapshot(sweep_dir)
    proc = sweep("npz_filename=clip.npz", "name=elsewhere", "export_dir=.", cwd=sweep_dir)
    sweep_refused(proc, "export folder elsewhere already exists and is not empty")
    assert snapshot(sweep_dir) == before and not (sweep_dir / "results").exists()


def test_a_sweep_that_failed_before_training_leaves_its_name_free(sweep_dir):
    # clearml=on without a server fails after the sweep folder was made, before Tune saved anything
    args = ["npz_filename=clip.npz", "name=early", "clearml=on", "num_samples=1"]
    proc = sweep(*args, cwd=sweep_dir)
    line = sweep_refused(proc, "ClearML could not start a task")
    assert "set clearml=offline" in line
    sweep_refused(sweep(*args, "resume=true", cwd=sweep_dir), "failed before it began training",
                  "start it again without resume=true")
    again = sweep(*args, cwd=sweep_dir)  # not "already exists": the name is taken over
    assert "failed before it began training; starting it afresh" in again.stderr
    sweep_refused(again, "ClearML could not start a task")


# ---- outputs that would destroy input ---------------------------------------------------------

def test_preprocess_never_writes_over_an_input_or_a_file_it_did_not_write(proud, tmp_path, run_cli, clip):
    shutil.copy(clip("proud.bvh"), tmp_path / "clip")  # a BVH without the suffix
    shutil.copy(clip("normal.bvh"), tmp_path / "normal.bvh")
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "folder").mkdir()
    before = snapshot(tmp_path)
    refused(run_cli("preprocess", "clip", "normal.bvh", "clip", cwd=tmp_path), "clip is one of the input clips")
    refused(run_cli("preprocess", "normal.bvh", "./normal.bvh", "mix.npz", cwd=tmp_path), "given twice")
    refused(run_cli("preprocess", "normal.bvh", "notes.txt", cwd=tmp_path), "notes.txt exists and is not a "
            "ganimator-preprocess npz")
    refused(run_cli("preprocess", "normal.bvh", "folder", cwd=tmp_path), "folder is a folder")
    assert snapshot(tmp_path) == before  # no stray .folder.tmp either
    # An earlier output is replaced, and says so.
    assert run_cli("preprocess", "normal.bvh", "n.npz", cwd=tmp_path)[0] == 0
    code, err = run_cli("preprocess", "normal.bvh", "--seed", "1", "n.npz", cwd=tmp_path)
    assert code == 0 and "note: replacing n.npz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "folder", "n.npz", "normal.bvh", "notes.txt"]


def test_review_save_into_a_folder_that_cannot_be_written_is_one_line(tiny, tmp_path, run_cli):
    shutil.copytree(tiny / "run", tmp_path / "run")
    target = Path("/sys/ganimator-test/r.rrd") if os.geteuid() == 0 else tmp_path / "locked" / "r.rrd"
    if os.geteuid() != 0:
        target.parent.mkdir(mode=0o555)
    before = snapshot(tmp_path)
    refused(run_cli("review", "run", "--length", "30", "--save", target, cwd=tmp_path), str(target))
    assert snapshot(tmp_path) == before


def test_an_input_clip_too_large_for_memory_is_refused_before_it_is_read(tiny, tmp_path, run_cli):
    shutil.copytree(tiny / "run", tmp_path / "run")
    head, frames = (tiny / "clip.bvh").read_text().split("Frames:", 1)
    lines = frames.splitlines()
    # What the header claims is what reading the file would cost, refused from the header alone (the
    # 2.2 GB clip of 2.4 million frames took 6.6 GB before failing). 10^10 frames fit no machine.
    (tmp_path / "big.bvh").write_text(head + "Frames: 10000000000\n" + "\n".join(lines[1:]) + "\n")
    before = snapshot(tmp_path)
    for flag in ("--content", "--keyframes"):
        refused(run_cli("generate", "run", flag, "big.bvh", cwd=tmp_path), "big.bvh: reading its 10000000000 frames",
                "GiB are free")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("hidden", ["[100000000,1,1]", "[20000,20000,20000]"])
def test_networks_larger_than_memory_are_refused_before_allocation(tiny, tmp_path, run_cli, hidden):
    shutil.copy(tiny / "clip.npz", tmp_path)
    before = snapshot(tmp_path)
    args = [a for a in TINY if not a.startswith("hidden_channels")]
    refused(run_cli("train", "npz_filename=clip.npz", "run_dir=run", f"hidden_channels={hidden}", *args,
                    cwd=tmp_path), "'model.hidden_channels'", "GiB free")
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_truncated_checkpoint_is_healed_by_resume_so_generation_works(tiny, tmp_path, run_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny / "run", run)
    whole = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(whole[: len(whole) // 2])
    code, err = run_cli("train", "run_dir=run", "resume=true", cwd=tmp_path)
    assert code == 0 and "resuming from" in err and "Traceback" not in err
    # A finished run trains no further and saves nothing: the healing put the last stage file in its place.
    last_stage = max(run.glob("stage-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    assert (run / "checkpoint.pt").read_bytes() == last_stage.read_bytes()
    assert run_cli("generate", "run", "--samples", "1", "--length", "60", cwd=tmp_path)[0] == 0
    assert (run / "generated" / "sample-000.bvh").is_file()


def test_fix_contact_on_a_rig_without_contact_joints_is_refused(tmp_path, run_cli):
    dance = procedural_dance(4.0)
    generic = dataclasses.replace(dance, names=[f"bone{j}" for j in range(len(dance.names))])  # no rig matches
    MotionDataset.from_bvh(_write(tmp_path / "generic.bvh", generic)).save(tmp_path / "generic.npz")
    assert run_cli("train", "npz_filename=generic.npz", "run_dir=run", *TINY, cwd=tmp_path)[0] == 0
    before = snapshot(tmp_path)
    refused(run_cli("generate", "run", "--fix-contact", cwd=tmp_path), "has no contact joints")
    assert snapshot(tmp_path) == before
    sweep_refused(sweep("npz_filename=generic.npz", "name=feet", "export_fix_contact=true", cwd=tmp_path),
                  "export_fix_contact=true", "no contact joints")


# ---- a process per run folder, and output cut short ---------------------------------------------

def _wait_for(predicate, proc: subprocess.Popen, timeout=120.0, what="it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)


def test_a_live_run_folder_is_refused_and_a_killed_runs_folder_is_taken_over(tiny, tmp_path, run_cli):
    shutil.copy(tiny / "clip.npz", tmp_path)
    args = [a if not a.startswith("train_data_iter") else "train_data_iter=100000" for a in TINY]
    first = subprocess.Popen([sys.executable, "-c", "from ganimator.cli import train; train()", "npz_filename=clip.npz",
                              "run_dir=run", "checkpoint_every=5", *args], cwd=tmp_path, env=clean_env(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "run" / "checkpoint.pt").exists(), first, what="a first checkpoint")
        refused(run_cli("train", "run_dir=run", "resume=true", cwd=tmp_path),
                f"run_dir run is in use by process {first.pid}")
    finally:
        first.kill()  # SIGKILL: no cleanup, the lock file stays behind
        first.wait()
    assert (tmp_path / "run" / ".lock").read_text().strip() == str(first.pid)
    from ganimator.rundir import RunDir

    RunDir(tmp_path / "run").hold().close()  # the dead process's lock is free: the kernel dropped it


def test_a_refused_resume_leaves_the_folder_free_for_a_new_run(tiny, tmp_path, run_cli):
    shutil.copy(tiny / "clip.npz", tmp_path)
    (tmp_path / "run").mkdir()
    refused(run_cli("train", "npz_filename=clip.npz", "run_dir=run", "resume=true", *TINY, cwd=tmp_path),
            "checkpoint.pt does not exist")
    assert list((tmp_path / "run").iterdir()) == []  # no lock file left to block the next run
    assert run_cli("train", "npz_filename=clip.npz", "run_dir=run", *TINY, cwd=tmp_path)[0] == 0


def test_output_to_a_reader_that_left_is_not_a_traceback(tiny, tmp_path):
    shutil.copytree(tiny / "run", tmp_path / "run")
    proc = subprocess.run(["bash", "-c", f"'{sys.executable}' -c 'from ganimator.cli import generate; generate()' "
                                         "run --samples 3 --length 60 | true; echo \"status ${PIPESTATUS[0]}\" >&2"],
                          cwd=tmp_path, capture_output=True, text=True, env=clean_env(tmp_path), timeout=300)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "status 141", proc.stderr  # as a shell reports SIGPIPE


# ---- sweeps that would fail only on the cluster -----------------------------------------------

def test_an_unreachable_database_is_one_line_with_the_password_masked(sweep_dir):
    before = snapshot(sweep_dir)
    proc = sweep("npz_filename=clip.npz", "name=pg", "optuna_storage=postgresql://u:secretpw@127.0.0.1:1/db",
                 cwd=sweep_dir)
    line = sweep_refused(proc, "127.0.0.1", "port 1", "cannot be reached")
    assert "secretpw" not in proc.stderr + proc.stdout and "***" in line
    assert snapshot(sweep_dir) == before and not (sweep_dir / "results").exists()


def test_a_space_value_the_clip_cannot_train_is_refused_before_ray(sweep_dir):
    (sweep_dir / "space.yaml").write_text("kernel_size: {type: categorical, choices: [5, 61]}\n")
    before = snapshot(sweep_dir)
    proc = sweep("npz_filename=clip.npz", "name=wide", "space=space.yaml", cwd=sweep_dir)
    sweep_refused(proc, "search space key 'kernel_size', value 61", "coarsest level")
    assert snapshot(sweep_dir) == before and not (sweep_dir / "results").exists()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.5", False), ("myhost", False)])
def test_which_hosts_serve_this_machine_alone(host, loopback):
    """`ganimator-review --serve --host H` warns before serving where H is not loopback (the
    warning itself is not run here: tests serve on loopback only)."""
    assert cli._is_loopback(host) is loopback
