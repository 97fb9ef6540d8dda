"""Sweeps on a real local Ray: search, early stopping, export, `ray job submit`, resume."""
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import OmegaConf
from ray import tune

from ganimator.bvh import read_bvh
from ganimator.config import ConfigError, load_config, qualify
from ganimator.dataset import MotionDataset
from ganimator.generate import load_run
from ganimator.metrics import pose_frames, quality
from ganimator.pyramid import resample
from ganimator.trainer import Trainer
from sweeps.compare import row_from_task
from sweeps.export import rank
from sweeps.objective import pareto_front, score
from sweeps.space import load_space
from sweeps.trainable import restore_run

from conftest import ROOT, artifacts, clean_env, offline_sessions

# Tiny trials on a short real clip: 4 iterations a stage, small networks; ClearML off unless a test asks.
TINY = ["train_data_iter=4", "validate_every=2", "validation_samples=2", "hidden_channels=[16,32,32]", "clearml=off"]
EXPORT = ["retrain_iter=6", "eval_samples=4", "export_samples=2"]


@pytest.fixture(scope="module")
def npz(clip, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "proud.npz"
    MotionDataset.from_bvh(clip("proud.bvh")).save(path)
    return path


def sweep_args(npz, tmp: Path, *args) -> list[str]:
    return [f"npz_filename={npz}", f"results_dir={tmp / 'results'}", f"export_dir={tmp / 'exports'}", *TINY, *args]


def run_sweep(npz, tmp: Path, *args, timeout=900, env=None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "sweeps/run.py", *sweep_args(npz, tmp, "num_cpus=2", *args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout, env=env)
    print(out.stdout[-3000:], out.stderr[-3000:])
    return out


def study_trials(tmp: Path, name: str, created: bool = True):
    storage = f"sqlite:///{tmp / 'results' / name / 'optuna.db'}"
    if not created and name not in optuna.study.get_all_study_names(storage):
        return []
    assert optuna.study.get_all_study_names(storage) == [name]  # one study, never a second
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def read_summary(tmp: Path, name: str) -> list[dict]:
    with open(tmp / "exports" / name / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(npz, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    out = run_sweep(npz, tmp, "name=six", "num_samples=6", "retrain_seeds=[0,1]", *EXPORT)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, out


def test_sweep_runs_every_trial_and_stops_weak_ones_at_stage_boundaries(sweep):
    tmp, out = sweep
    rows = read_summary(tmp, "six")
    assert len(rows) == 6
    assert {r["status"] for r in rows} <= {"finished", "stopped after stage 1", "stopped after stage 2"}
    stopped = [r for r in rows if r["status"].startswith("stopped")]
    assert stopped, "ASHA stopped no trial"
    for r in stopped:  # an early stop falls on a stage boundary and saves iterations
        assert int(r["steps"]) == int(r["stages_done"]) * 4 < 16
    assert [float(r["score"]) for r in rows if r["status"] == "finished"] == sorted(
        (float(r["score"]) for r in rows if r["status"] == "finished"), reverse=True)
    assert "stopped early" in out.stdout and "exports" in out.stdout


def test_optuna_study_holds_each_trial_once_and_starts_from_the_defaults(sweep):
    tmp, _ = sweep
    trials = study_trials(tmp, "six")
    assert len(trials) == 6
    states = {r["trial_id"]: r["status"] for r in read_summary(tmp, "six")}
    for t in trials:  # early-stopped trials are pruned, so the sampler never takes a stage-1 score as final
        finished = states[t.user_attrs["tune_trial_id"]] == "finished"
        assert t.state == (optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.PRUNED)
    space = load_space(ROOT / "sweeps" / "space.yaml")
    assert trials[0].params == pytest.approx(space.defaults())
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6


def test_trials_report_each_stage_with_a_checkpoint(sweep):
    tmp, _ = sweep
    finished = [r for r in read_summary(tmp, "six") if r["status"] == "finished"]
    trial_dir = next((tmp / "results" / "six").glob(f"*{finished[0]['trial_id']}*"))
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["stages_done"] for r in results if r["checkpoint_dir_name"]] == [1, 2, 3, 4]
    assert all(0 <= r["coverage"] <= 1 and r["global_diversity"] >= 0 for r in results)
    assert len(list(trial_dir.glob("checkpoint_*"))) == 2  # the newest two are kept


def test_best_configuration_is_retrained_and_exported(sweep, tmp_path):
    tmp, _ = sweep
    export = tmp / "exports" / "six" / "1"
    metrics = json.loads((export / "metrics.json").read_text())
    best = read_summary(tmp, "six")[0]
    assert metrics["trial_id"] == best["trial_id"] and best["export"] == str(export)
    cfg = load_config([f"config={export / 'config.yaml'}"])
    for key, value in metrics["params"].items():  # the export trained the configuration the sweep found
        assert OmegaConf.select(cfg, qualify(key)) == pytest.approx(value)
    assert cfg.scheduling.train_data_iter == 6
    assert len(list((export / "samples").glob("*.bvh"))) == 2

    out = subprocess.run(["ganimator-generate", str(export), "--length", "50", "--samples", "2",
                          "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(read_bvh(p).motion.shape[0] == 50 for p in tmp_path.glob("*.bvh"))

    assert set(metrics["seeds"]) == {"0", "1"}  # each seed retrained, the best exported
    assert metrics["coverage"] == metrics["seeds"][str(metrics["seed"])]["coverage"]
    assert metrics["score"] == max(m["score"] for m in metrics["seeds"].values())

    run = load_run(export)
    again = run.evaluate(metrics["samples"], metrics["length"] / run.dataset.features.shape[-1], metrics["seed"])
    for key in ("coverage", "global_diversity", "local_diversity", "reconstruction_l1"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-6)


@pytest.fixture(scope="module")
def pareto_sweep(npz, tmp_path_factory):
    """A Pareto-mode sweep that tracks to ClearML in offline mode."""
    tmp = tmp_path_factory.mktemp("pareto")
    out = run_sweep(npz, tmp, "name=pareto", "objective=pareto", "num_samples=3", "early_stopping=false",
                    "clearml=offline", *EXPORT, env=clean_env(tmp))
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, out


def test_pareto_mode_searches_coverage_against_diversity(pareto_sweep):
    tmp_path, _ = pareto_sweep
    storage = f"sqlite:///{tmp_path / 'results' / 'pareto' / 'optuna.db'}"
    study = optuna.load_study(study_name="pareto", storage=storage)
    assert len(study.directions) == 2 and len(study.trials) == 3
    rows = read_summary(tmp_path, "pareto")
    front = [r for r in rows if r["pareto"] == "True"]
    assert front and rows[:len(front)] == front  # the front ranks first
    for r in front:  # no trial dominates a member of the front
        (rc, rg), others = (float(r["coverage"]), float(r["global_diversity"])), rows
        assert not any((oc >= rc and og >= rg) and (oc > rc or og > rg)
                       for oc, og in ((float(o["coverage"]), float(o["global_diversity"])) for o in others))
    assert (tmp_path / "exports" / "pareto" / "1" / "checkpoint.pt").is_file()


def test_clearml_sweep_task_is_the_parent_of_every_trial_and_retrain(pareto_sweep):
    tmp, out = pareto_sweep
    sessions = offline_sessions(tmp / "clearml")
    [sweep] = [s["task"] for s in sessions if s["task"]["type"] == "optimizer"]
    trials = [s for s in sessions if "trial" in s["task"]["tags"]]
    [retrain] = [s for s in sessions if "retrain" in s["task"]["tags"]]
    assert len(sessions) == 5 and len(trials) == 3
    assert sweep["name"] == "pareto" and set(sweep["tags"]) == {"sweep", "pareto"}
    assert f"ClearML: sweep task {sweep['id']}" in out.stdout
    assert all(s["task"]["parent"] == sweep["id"] for s in [*trials, retrain])

    rows = {r["trial_id"]: r for r in read_summary(tmp, "pareto")}
    keys = list(load_space(ROOT / "sweeps" / "space.yaml"))
    for s in trials:
        task, trial_id = s["task"], s["task"]["name"].rpartition("/")[2]
        assert task["name"] == f"pareto/{trial_id}" and set(task["tags"]) == {"trial", "pareto"}
        params = task["hyperparams"]
        searched = {k: float(v["value"]) for k, v in params["search"].items()}
        assert searched == pytest.approx({k: float(rows[trial_id][k]) for k in keys})
        assert float(params["optim"]["lambda_rec"]["value"]) == searched["lambda_rec"]  # one value, two views
        assert {series for title, series in s["scalars"] if title == "critic"} == {f"level {k}" for k in range(7)}
        assert s["scalars"]["objective", "score"][-1] == (16, pytest.approx(float(rows[trial_id]["score"])))
        assert {"config.yaml", "samples", "review.rrd"} <= set(artifacts(task))

    task = retrain["task"]
    assert set(task["tags"]) == {"retrain", "pareto", "rank-1", "seed-0", "best"}
    metrics = json.loads((tmp / "exports" / "pareto" / "1" / "metrics.json").read_text())
    assert metrics["clearml_task"] == task["id"]
    assert retrain["scalars"]["Summary", "coverage"][-1][1] == pytest.approx(metrics["coverage"])
    assert all(path.is_file() for path in artifacts(task).values())


def test_clearml_sweep_task_holds_the_comparison(pareto_sweep):
    tmp, _ = pareto_sweep
    [sweep] = [s for s in offline_sessions(tmp / "clearml") if s["task"]["type"] == "optimizer"]
    keys = list(load_space(ROOT / "sweeps" / "space.yaml"))
    table = sweep["plots"]["trials", "ranked"]["data"][0]
    header, columns = table["header"]["values"], table["cells"]["values"]
    assert {"status", "stages_done", "pareto", "score", "coverage", "global_diversity", *keys} <= set(header)
    summary = read_summary(tmp, "pareto")
    assert columns[header.index("trial_id")] == [r["trial_id"] for r in summary]
    assert columns[header.index("status")] == ["finished"] * 3
    assert {series for title, series in sweep["plots"] if title == "objective"} == set(keys)
    [parallel] = sweep["plots"]["parallel coordinates", "parallel coordinates"]["data"]
    assert [d["label"] for d in parallel["dimensions"]] == [*keys, "score"]
    front = sweep["plots"]["pareto front", "pareto front"]["data"]
    assert sum(len(trace["x"]) for trace in front) == 3
    assert set(artifacts(sweep["task"])) == {"summary.csv", "summary.md"}


def test_compare_prints_the_sweeps_ranking_and_writes_its_plots(pareto_sweep, tmp_path):
    tmp, _ = pareto_sweep
    out = subprocess.run([sys.executable, "sweeps/compare.py", "pareto", "--results-dir", str(tmp / "results"),
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=clean_env(tmp))
    assert out.returncode == 0, out.stderr
    summary = [r["trial_id"] for r in read_summary(tmp, "pareto")]
    printed = [line.split()[1] for line in out.stdout.splitlines()[2:2 + len(summary)]]
    assert printed == summary
    written = {p.name for p in tmp_path.iterdir()}
    assert {"pareto-front.html", "parallel-coordinates.html", "objective-vs-lambda-rec.html",
            "plotly.min.js"} <= written


def test_trials_as_clearml_holds_them_rank_as_the_local_results(pareto_sweep):
    """compare.py's reading of ClearML tasks, fed the offline sessions' parameters and last scalars."""
    tmp, _ = pareto_sweep
    keys = list(load_space(ROOT / "sweeps" / "space.yaml"))
    rows = []
    for s in offline_sessions(tmp / "clearml"):
        if "trial" in s["task"]["tags"]:
            params = {f"{section}/{k}": v["value"] for section, values in s["task"]["hyperparams"].items()
                      for k, v in values.items()}
            last = {}
            for (title, series), points in s["scalars"].items():
                last.setdefault(title, {})[series] = {"last": points[-1][1]}
            rows.append(row_from_task(s["task"]["name"], params, last, "completed", keys, num_stages=4))
    summary = read_summary(tmp, "pareto")
    assert [r.trial_id for r in rank(rows, pareto=True)] == [r["trial_id"] for r in summary]
    for row, local in zip(rank(rows, pareto=True), summary):
        assert row.status == local["status"] and row.steps == int(local["steps"]) == 16
        assert row.metrics["score"] == pytest.approx(float(local["score"]))
        assert row.params == pytest.approx({k: float(local[k]) for k in keys})


def test_a_restarted_trial_skips_a_truncated_checkpoint_for_the_one_before(npz, tmp_path, capsys):
    run_dir = tmp_path / "first"
    cfg = load_config([f"npz_filename={npz}", f"run_dir={run_dir}", "progress=false", *TINY])
    Trainer(cfg, callbacks=[lambda e: e.kind == "stage_end" and e.stage == 1]).fit()
    trial = tmp_path / "trial"  # laid out as Tune keeps a trial's last two checkpoints
    for k, stage_file in enumerate(["stage-1.pt", "stage-2.pt"]):
        kept = trial / f"checkpoint_{k:06d}"
        kept.mkdir(parents=True)
        for name in ("config.yaml", "data.npz", "history.jsonl"):
            shutil.copyfile(run_dir / name, kept / name)
        shutil.copyfile(run_dir / stage_file, kept / "checkpoint.pt")
    newest = trial / "checkpoint_000001" / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:2000])

    assert restore_run(tune.Checkpoint.from_directory(trial / "checkpoint_000001"), tmp_path / "restored")
    assert f"{newest}: not a readable ganimator checkpoint" in capsys.readouterr().err
    restored = Trainer(load_config([f"npz_filename={npz}", f"run_dir={tmp_path / 'restored'}", "resume=true",
                                    "progress=false", *TINY]))
    result = restored.fit()
    assert result.finished and [e.stage for e in result.events if e.kind == "stage_end"] == [1, 2, 3]

    newest.parent.parent.joinpath("checkpoint_000000", "checkpoint.pt").write_bytes(b"")
    assert not restore_run(tune.Checkpoint.from_directory(trial / "checkpoint_000001"), tmp_path / "fresh")
    assert "starts again from scratch" in capsys.readouterr().err


def test_a_diverging_trial_fails_at_once_with_its_reason_and_the_sweep_goes_on(npz, tmp_path):
    space = tmp_path / "space.yaml"  # the first trial runs the default, a learning rate that diverges at once
    space.write_text("lr_d: {type: categorical, choices: [0.0001, 1.0e10], default: 1.0e10}\n"
                     "lambda_rec: {type: log, low: 5, high: 500}\n")
    out = run_sweep(npz, tmp_path, "name=nan", f"space={space}", "num_samples=3", "max_failures=2",
                    "early_stopping=false", *EXPORT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_summary(tmp_path, "nan")
    failed = [r for r in rows if r["status"].startswith("failed")]
    assert failed and all(float(r["lr_d"]) == 1e10 for r in failed)
    assert all("loss '0/critic' is nan at stage 1, iteration 1" in r["status"] for r in failed)
    assert rows[-len(failed):] == failed  # ranked last
    assert [r for r in rows if r["status"] == "finished"]  # the others ran on
    for r in failed:  # reported once, never retried
        trial_dir = next((tmp_path / "results" / "nan").glob(f"*{r['trial_id']}*"))
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert len(results) == 1 and results[0]["failure"].startswith("loss")
        assert not (trial_dir / "error.txt").exists()
    states = {t.user_attrs["tune_trial_id"]: t for t in study_trials(tmp_path, "nan")}
    for r in failed:
        assert states[r["trial_id"]].state == optuna.trial.TrialState.FAIL
        assert "is nan" in states[r["trial_id"]].user_attrs["failure"]


def test_impossible_search_space_fails_before_any_trial(npz, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lambda_gp: {type: log, low: 0.1, high: 10}\nlambda_rec: {type: log, low: 50, high: 5}\n")
    out = run_sweep(npz, tmp_path, f"space={space}", timeout=120)
    assert out.returncode == 2
    assert "lambda_rec" in out.stderr and "empty range" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()  # nothing started


@pytest.mark.parametrize("entry, message", [
    ("lamda_rec: {type: log, low: 1, high: 10}", "unknown config key 'lamda_rec'"),
    ("critic_steps: {type: uniform, low: 1, high: 8}", "critic_steps"),
    ("lambda_rec: {type: log, low: 0, high: 10}", "log range needs low > 0"),
    ("lambda_rec: {type: uniform, low: -5, high: 10, default: 1}", "must not be negative"),
    ("lambda_rec: {type: log, low: 1, high: 10, default: 50}", "outside"),
    ("stage_noise_amp_scale.4: {type: log, low: 0.5, high: 2}", "stage_noise_amp_scale"),
    ("full_noise: {type: categorical, choices: []}", "non-empty list"),
    ("lambda_rec: {type: normal, low: 1, high: 10}", "type must be one of"),
])
def test_bad_search_space_entries_name_the_key(tmp_path, entry, message):
    space = tmp_path / "space.yaml"
    space.write_text(entry + "\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        load_space(space, ["npz_filename=x.npz"])
    assert entry.split(":")[0] in str(e.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_the_sweep_on_a_loopback_cluster(npz, tmp_path):
    gcs, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
         f"--temp-dir={temp_dir}", "--num-cpus=2", f"--ray-client-server-port={free_port()}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        for _ in range(120):  # the job server answers once the head is up
            if subprocess.run(["ray", "job", "list", "--address", address], env=env,
                              capture_output=True).returncode == 0:
                break
            assert head.poll() is None, head.stdout.read()
            time.sleep(1)
        submit = ["ray", "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
                  "python", "sweeps/run.py", *sweep_args(npz, tmp_path, "name=job", "num_samples=2", *EXPORT)]
        for _ in range(60):  # the job server may answer before the node's agent can take a job
            out = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
            if "No available agent" not in out.stderr:
                break
            time.sleep(1)
        print(out.stdout[-3000:], out.stderr[-3000:])
        assert out.returncode == 0 and "succeeded" in out.stdout + out.stderr
        assert (tmp_path / "exports" / "job" / "1" / "checkpoint.pt").is_file()
        assert len(read_summary(tmp_path, "job")) == 2
    finally:
        stop_process_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_process_group(proc: subprocess.Popen) -> None:
    """The head and every process it started share its process group: stop them all by its PID."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=20)


def test_killed_sweep_resumes_without_losing_or_duplicating_trials(npz, tmp_path):
    args = [sys.executable, "sweeps/run.py", *sweep_args(npz, tmp_path, "num_cpus=2", "name=resumed",
                                                          "num_samples=4", "max_concurrent=1", *EXPORT)]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and driver.poll() is None:
            # Only once a trial exists has the driver created the study: opening the database
            # earlier races its schema creation.
            started = any((tmp_path / "results" / "resumed").glob("train_trial_*"))
            if started and sum(t.state.is_finished() for t in study_trials(tmp_path, "resumed", False)) >= 2:
                break
            time.sleep(0.5)
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
    finally:
        stop_process_group(driver)  # killed: the driver and its local Ray
    done_before = sum(t.state.is_finished() for t in study_trials(tmp_path, "resumed"))
    assert 2 <= done_before < 4

    # The sweep's own arguments are saved with it: naming it is enough to resume.
    again = subprocess.run([sys.executable, "sweeps/run.py", "name=resumed", f"results_dir={tmp_path / 'results'}",
                            f"export_dir={tmp_path / 'exports'}", "num_cpus=2", "resume=true"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = read_summary(tmp_path, "resumed")
    assert len(rows) == 4 and not any(r["status"].startswith("error") for r in rows)
    trials = study_trials(tmp_path, "resumed")
    assert len(trials) == 4 and all(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in trials)
    assert sorted(t.user_attrs["tune_trial_id"] for t in trials) == sorted(r["trial_id"] for r in rows)

    fresh = run_sweep(npz, tmp_path, "name=resumed", "num_samples=4", timeout=120)
    assert fresh.returncode == 2 and "already exists" in fresh.stderr  # a new sweep never reuses one


def test_score_rewards_new_motion_that_covers_the_clip(clip):
    data = MotionDataset.from_bvh(clip("Salsa-Dancing-6.bvh"))
    real = pose_frames(data.features, data.layout)
    half = real.shape[0] // 2
    chunks = torch.split(real, 40)
    order = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(0))
    candidates = {  # from the clip replayed, through patchworks of it, to new motion
        "copy": real,
        "spliced": torch.cat([real[half:], real[:half]]),
        "shuffled": torch.cat([chunks[i] for i in order]),
        "slower": pose_frames(resample(data.features[None], round(real.shape[0] * 1.3))[0], data.layout),
        "noise": torch.randn_like(real) * real.std(), "frozen": real[:1].expand_as(real)}
    s = {k: score({**quality(v[None], real), "rec_error": 0.0}) for k, v in candidates.items()}
    assert s["slower"] > s["shuffled"] > s["spliced"] > 0.001 > s["copy"] == pytest.approx(0.0, abs=1e-6)
    assert s["slower"] > 0.2 and s["noise"] == s["frozen"] == 0.0  # they cover nothing
    assert score({**quality(real[None], real), "rec_error": 0.1}) == pytest.approx(-0.1)


def test_pareto_front_keeps_the_undominated_trials():
    rows = [{"coverage": 1.0, "global_diversity": 0.2}, {"coverage": 0.5, "global_diversity": 1.5},
            {"coverage": 0.4, "global_diversity": 1.0}, {"coverage": 1.0, "global_diversity": 0.1}]
    assert pareto_front(rows) == [0, 1]
