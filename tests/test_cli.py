"""The command-line tools as a user runs them, on motion the project makes itself."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganimator.bvh import read_bvh

from conftest import clean_env

BIN = Path(sys.executable).parent


def run(tool, *args, cwd, ok=True):
    proc = subprocess.run([str(BIN / tool), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=clean_env(Path(cwd)))
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def test_procedural_clip_to_generated_bvh(tmp_path):
    run("ganimator-procedural", "demo.bvh", "--seconds", "8", cwd=tmp_path)
    out = run("ganimator-preprocess", "demo.bvh", "demo.npz", cwd=tmp_path).stdout
    assert "rig mixamo, 24 joints" in out and "levels [48, 64, 85, 113, 150, 200, 240]" in out
    run("ganimator-train", "npz_filename=demo.npz", "train_data_iter=3", "validate_every=2", "run_dir=runs/demo",
        "validation_samples=1", cwd=tmp_path)
    run_dir = tmp_path / "runs" / "demo"
    assert {"config.yaml", "data.npz", "checkpoint.pt", "stage-4.pt", "history.jsonl"} <= {p.name for p in run_dir.iterdir()}
    out = run("ganimator-generate", "runs/demo", "--length", "300", "--samples", "2", "--reconstruct", cwd=tmp_path).stdout
    paths = [tmp_path / line for line in out.split()]
    assert [p.name for p in paths] == ["sample-000.bvh", "sample-001.bvh", "reconstruction-000.bvh"]
    assert [read_bvh(p).num_frames for p in paths] == [300, 300, 240]
    run("ganimator-evaluate", "runs/demo", "--samples", "4", cwd=tmp_path)
    [metrics] = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    assert 0 <= metrics["coverage"] <= 1 and metrics["samples"] == 4 and metrics["length"] == 480
    assert metrics["jitter"] > 0 and metrics["foot_skating"] >= 0  # relative to the clip's own
    # --levels: the same samples at every level, a row each with the stage that trained it and its frames
    out = run("ganimator-evaluate", "runs/demo", "--samples", "4", "--levels", cwd=tmp_path).stdout
    table = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    assert [tuple(map(int, row[:3])) for row in table] == list(zip(range(7), (1, 1, 2, 2, 3, 3, 4),
                                                                  (48, 64, 85, 113, 150, 200, 240)))
    assert table[-1][3] == f"{metrics['coverage'] * 100:.1f}%"
    # The finest level, scored beside the others, is the evaluation itself (to rounding: two processes'
    # BLAS calls may split their sums differently).
    again = json.loads((run_dir / "evaluations.jsonl").read_text().splitlines()[-1])
    assert again.keys() == metrics.keys() and again == pytest.approx(metrics, rel=1e-9, abs=1e-12)
    # a second run into the same folder is refused, and the first is untouched; resume needs only run_dir
    out = run("ganimator-train", "run_dir=runs/demo", "resume=true", cwd=tmp_path).stdout
    device, stages, clearml = out.splitlines()[:3]  # where it trains comes first: device=auto is CUDA where there is one
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device == f"device: {expected} (device=auto)" and clearml.startswith("ClearML: off")
    assert stages == "stages: 3 it, 3 it, 3 it, 3 it"
    assert out.splitlines()[-1].startswith("finished")
    err = run("ganimator-train", "npz_filename=demo.npz", "run_dir=runs/demo", cwd=tmp_path, ok=False).stderr
    assert "already holds a run" in err and (run_dir / "checkpoint.pt").is_file()


@pytest.mark.parametrize("tool, args, message", [
    ("ganimator-train", ["npz_filename=x.npz", "lamda_rec=1"], "unknown config key 'lamda_rec'"),
    ("ganimator-train", ["npz_filename=missing.npz"], "missing.npz: no such file"),
    ("ganimator-preprocess", ["broken.bvh", "out.npz"], "broken.bvh:1: expected 'HIERARCHY'"),
    ("ganimator-generate", ["nowhere"], "nowhere/config.yaml is missing"),
    ("ganimator-train", ["train_data_iter=5"], "'data.npz_filename' is required"),
    ("ganimator-train", ["config=broken.yaml"], "is not valid YAML"),
    ("ganimator-train", ["npz_filename=x.npz", "stages=[[0,1],[]]"], "must cover levels"),
    ("ganimator-preprocess", ["broken.bvh", "out.npz", "--rig", "crab"], "broken.bvh:1"),
])
def test_bad_input_is_one_clear_line(tmp_path, tool, args, message):
    (tmp_path / "broken.bvh").write_text("HIERACHY\n")
    (tmp_path / "broken.yaml").write_text("optim: [\n")
    proc = run(tool, *args, cwd=tmp_path, ok=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_print_config_lists_every_section(tmp_path):
    out = run("ganimator-train", "--print-config", "lambda_rec=7", cwd=tmp_path).stdout
    for section in ("data:", "model:", "optim:", "scheduling:", "util:"):
        assert section in out
    assert "lambda_rec: 7.0" in out


def test_a_sparse_coarsest_level_trains_in_stages_of_two(tmp_path):
    """`--ratio 1/30` (the pyramid key-frame editing needs) makes more levels; stages follow them."""
    run("ganimator-procedural", "demo.bvh", "--seconds", "6", cwd=tmp_path)
    out = run("ganimator-preprocess", "demo.bvh", "demo.npz", "--ratio", "1/30", cwd=tmp_path).stdout
    assert "levels [6, 8, 10, 13, 17, 22, 29, 38, 50, 66, 88, 117, 156, 180]" in out
    run("ganimator-train", "npz_filename=demo.npz", "train_data_iter=1", "run_dir=run", "validation_samples=0",
        cwd=tmp_path)
    ends = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [e["levels"] for e in ends] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13]]
    bad = run("ganimator-preprocess", "demo.bvh", "x.npz", "--ratio", "1/0", cwd=tmp_path, ok=False).stderr
    assert "'1/0' is not a number or a fraction" in bad and not (tmp_path / "x.npz").exists()
