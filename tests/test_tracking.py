"""ClearML tracking of training runs, with the real SDK in offline mode, and Rerun validation recordings."""
import os
import subprocess
from pathlib import Path

import pytest
from rerun.chunk import RrdReader

from ganimator.dataset import MotionDataset

from conftest import ROOT, artifacts, clean_env, offline_sessions

TINY = ["train_data_iter=4", "validate_every=2", "validation_samples=2", "hidden_channels=[16,32,32]",
        "progress=false", "artifact_samples=2"]


def train(npz, tmp: Path, *args, env=None) -> subprocess.CompletedProcess:
    out = subprocess.run(["ganimator-train", f"npz_filename={npz}", f"run_dir={tmp / 'run'}", *TINY, *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env or clean_env(tmp))
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_without_clearml_configuration_training_says_it_is_off(npz, tmp_path):
    out = train(npz, tmp_path)
    assert [line for line in out.stdout.splitlines() if line.startswith("ClearML")] == [
        "ClearML: off (no clearml.conf, CLEARML_CONFIG_FILE or CLEARML_API_HOST; "
        "clearml=offline records sessions locally)"]
    assert "finished" in out.stdout
    assert not (tmp_path / "clearml").exists() and not (tmp_path / "home" / ".clearml").exists()


@pytest.fixture(scope="module")
def offline_run(npz, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    secret = "s3cr3t-" + os.urandom(8).hex()
    env = clean_env(tmp, CLEARML_API_ACCESS_KEY="AKEY1234", CLEARML_API_SECRET_KEY=secret)
    train(npz, tmp, "clearml=offline", "rerun=true", "tags=[nightly]", "experiment_name=proud-offline", env=env)
    [session] = offline_sessions(tmp / "clearml")
    return tmp, session, secret


def test_offline_run_is_a_task_with_flat_hyperparameters(offline_run):
    _, session, _ = offline_run
    task = session["task"]
    assert task["name"] == "proud-offline" and task["project_name"] == "GANimator"
    assert set(task["tags"]) == {"train", "nightly"} and task["type"] == "training"
    params = task["hyperparams"]
    assert set(params) == {"data", "model", "optim", "scheduling", "util"}
    assert params["optim"]["lambda_rec"]["value"] == "50.0"
    assert params["model"]["hidden_channels"]["value"] == "[16, 32, 32]"
    assert params["scheduling"]["train_data_iter"]["value"] == "4"


def test_offline_run_reports_losses_per_level_on_one_iteration_axis(offline_run):
    _, session, _ = offline_run
    scalars = session["scalars"]
    for loss in ("critic", "adversarial", "reconstruction", "rec_error"):
        assert {series for title, series in scalars if title == loss} == {f"level {k}" for k in range(7)}
    # Stage k's levels report at iterations 4(k-1)+2 and 4k: stages follow each other on one axis.
    assert [i for i, _ in scalars["reconstruction", "level 0"]] == [2, 4]
    assert [i for i, _ in scalars["reconstruction", "level 6"]] == [14, 16]
    assert [v for _, v in scalars["progress", "stages done"]] == [1, 2, 3, 4]
    assert all(0 <= v <= 1 for _, v in scalars["quality", "coverage"])
    assert all(v > 0 for _, v in scalars["quality", "jitter"]) and ("quality", "foot_skating") in scalars


def test_offline_run_attaches_config_bvh_and_rerun_recordings(offline_run):
    tmp, session, _ = offline_run
    files = artifacts(session["task"])
    assert set(files) == {"config.yaml", "history.jsonl", "samples", "review.rrd", "validation.rrd"}
    assert all(path.is_file() for path in files.values())
    assert files["config.yaml"].read_text() == (tmp / "run" / "config.yaml").read_text()
    assert len(list((tmp / "run" / "samples").glob("*.bvh"))) == 2
    review = {c.entity_path for c in RrdReader(files["review.rrd"]).stream().to_chunks()}
    assert {"/skeletons/real", "/skeletons/run/sample-0", "/skeletons/run/sample-1"} <= review


def test_validation_samples_are_recorded_as_skeletons_per_step(offline_run):
    tmp, _, _ = offline_run
    data = MotionDataset.load(tmp / "run" / "data.npz")
    frames = {}
    for chunk in RrdReader(tmp / "run" / "validation.rrd").stream().to_chunks():
        if chunk.entity_path.endswith("sample-1") and "frame" in chunk.timeline_names:
            frames[chunk.entity_path] = frames.get(chunk.entity_path, 0) + chunk.num_rows
    stages = [[0, 1], [2, 3], [4, 5], [6]]
    lengths = data.generation_lengths(2 * data.clips[0].level_lengths[-1])  # drawn as the final evaluation draws them
    expected = {f"/skeletons/stage-{k + 1}/step-{step:07d}/sample-1": lengths[levels[-1]]
                for k, levels in enumerate(stages) for step in (4 * k + 2, 4 * k + 4)}
    assert frames == expected  # two validations a stage, each at its stage's top level, twice the clip's length


def test_credentials_never_reach_the_session(offline_run):
    _, session, secret = offline_run
    for path in session["folder"].rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_clearml_on_without_a_server_fails_clearly_before_writing(npz, tmp_path):
    out = subprocess.run(["ganimator-train", f"npz_filename={npz}", f"run_dir={tmp_path / 'run'}", *TINY,
                          "clearml=on"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=clean_env(tmp_path))
    assert out.returncode == 2
    assert "ClearML could not start a task" in out.stderr and "clearml=offline" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
