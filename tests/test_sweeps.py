"""Sweeps end to end on a real local Ray: one engine, whether a Ray trial trains one configuration
(population=1) or four fused (population=4); the Pareto mode; divergence; `ray job submit`; resume."""
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from ganimator.bvh import read_bvh
from ganimator.config import load_config, qualify
from ganimator.dataset import MotionDataset
from ganimator.generate import load_run
from ganimator.metrics import Quality
from sweeps.compare import row_from_task
from sweeps.objective import BandObjective, ScoreObjective, pareto_values
from sweeps.results import TUNE_ID
from sweeps.space import load_space

from conftest import (EXPORT, ROOT, Page, artifacts, clean_env, free_port, offline_sessions, plant_payloads,
                      read_summary, run_sweep, stop_process_group, sweep_args)

pytestmark = pytest.mark.ray
SPACE = load_space(ROOT / "sweeps" / "space.yaml")
KEYS = list(SPACE)


def study_trials(tmp: Path, name: str, created: bool = True):
    storage = f"sqlite:///{tmp / 'results' / name / 'optuna.db'}"
    if not created and name not in optuna.study.get_all_study_names(storage):
        return []
    assert optuna.study.get_all_study_names(storage) == [name]  # one study, never a second
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


@dataclass
class Swept:
    tmp: Path
    out: subprocess.CompletedProcess
    population: int
    trials: list  # the study's FrozenTrials


@pytest.fixture(scope="module", params=[1, 4], ids=["population-1", "population-4"])
def sweep(request, npz, tmp_path_factory):
    """Six configurations, tracked to ClearML offline: one to a Ray trial (two at a time), or four
    fused to a Ray trial (one at a time: batches of 4 and 2)."""
    tmp = tmp_path_factory.mktemp(f"sweep{request.param}")
    one_at_a_time = ["max_concurrent=1"] if request.param > 1 else []
    pngs = ["plot_pngs=true"] if request.param == 1 else []  # as a user's sweep: summary.md shows the plots
    out = run_sweep(npz, tmp, "name=six", "num_samples=6", "retrain_seeds=[0,1]", f"population={request.param}",
                    "clearml=offline", *one_at_a_time, *pngs, *EXPORT, env=clean_env(tmp))
    assert out.returncode == 0, out.stderr[-3000:]
    return Swept(tmp, out, request.param, study_trials(tmp, "six"))


def test_every_configuration_is_an_optuna_trial_and_weak_ones_stop_at_stage_boundaries(sweep):
    trials = sweep.trials
    assert len(trials) == 6 and len({tuple(sorted(t.params.items())) for t in trials}) == 6
    assert trials[0].params == pytest.approx(SPACE.defaults())  # the defaults are tried first
    tune_ids = [t.user_attrs[TUNE_ID] for t in trials]
    expected = [4, 2] if sweep.population == 4 else [1] * 6
    assert sorted((tune_ids.count(i) for i in set(tune_ids)), reverse=True) == expected
    # Tune's live table shows each Ray trial's batch by its number, not as a dict cut to 20 characters
    assert re.search(r"train_trial_\w+_00000\s+TERMINATED\s+0\s", sweep.out.stdout), sweep.out.stdout[-3000:]
    assert "'members'" not in sweep.out.stdout
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and len(pruned) < 6, "successive halving should stop some configurations and finish others"
    for t in pruned:  # scores reported at stage ends, the last one where the configuration stopped
        stages = t.user_attrs["metrics"]["stages_done"]
        assert sorted(t.intermediate_values) == list(range(1, stages + 1)) and stages < 4
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(t.user_attrs["metrics"]["score"])

    rows = read_summary(sweep.tmp, "six")
    assert sorted(r["trial_id"] for r in rows) == sorted(f"{t.user_attrs[TUNE_ID]}-{t.number}" for t in trials)
    for r in rows:  # an early stop falls on a stage boundary and saves that configuration's iterations
        if r["status"].startswith("stopped"):
            assert int(r["steps"]) == int(r["stages_done"]) * 4 < 16
    finished = [float(r["score"]) for r in rows if r["status"] == "finished"]
    assert rows[0]["status"] == "finished" and finished == sorted(finished, reverse=True)
    assert "stopped early by successive halving" in sweep.out.stdout
    if sweep.population == 4:
        assert "population of 4" in sweep.out.stdout + sweep.out.stderr  # the memory report


def test_ray_trials_checkpoint_each_stage_end_naming_the_configurations_that_go_on(sweep):
    finished = next(t for t in sweep.trials if t.state == TrialState.COMPLETE)
    trial_dir = next((sweep.tmp / "results" / "six").glob(f"train_trial_{finished.user_attrs[TUNE_ID]}*"))
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["stages_done"] for r in results][:4] == [1, 2, 3, 4]
    assert [bool(r["checkpoint_dir_name"]) for r in results[:4]] == [True, True, True, False]  # none after the last
    members = [r["members"] for r in results]
    assert members == sorted(members, reverse=True) and members[0] <= sweep.population  # the batch shrinks
    for other in (sweep.tmp / "results" / "six").glob("train_trial_*"):  # the live table shows every trial's score
        last = json.loads((other / "result.json").read_text().splitlines()[-1])
        assert isinstance(last["score"], float) and last["members"] <= sweep.population
    kept = sorted(trial_dir.glob("checkpoint_*"))
    assert len(kept) == 2  # the newest two
    for checkpoint in kept:
        going_on = json.loads((checkpoint / "members.json").read_text())
        assert going_on and all((checkpoint / str(n) / "checkpoint.pt").is_file() for n in going_on)


def test_best_configuration_is_retrained_and_exported(sweep, tmp_path):
    export = sweep.tmp / "exports" / "six" / "1"
    metrics = json.loads((export / "metrics.json").read_text())
    best = read_summary(sweep.tmp, "six")[0]
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
    exported = metrics["seeds"][str(metrics["seed"])]
    assert all(metrics[k] == exported[k] for k in ("score", "coverage", "global_diversity", "rec_error"))
    assert metrics["score"] == max(m["score"] for m in metrics["seeds"].values())
    assert cfg.util.seed == metrics["seed"]  # the exported run is the one trained with that seed

    run = load_run(export)
    again = run.evaluate(metrics["samples"], metrics["length"] / run.dataset.clips[0].num_frames,
                         metrics["sample_seed"])
    for key in Quality.NAMES:
        assert getattr(again, key) == pytest.approx(metrics[key], rel=1e-6)


def test_every_configuration_and_retrain_is_a_clearml_task_under_the_sweep(sweep):
    sessions = offline_sessions(sweep.tmp / "clearml")
    [task] = [s["task"] for s in sessions if s["task"]["type"] == "optimizer"]
    assert task["name"] == "six" and set(task["tags"]) == {"sweep", "six"}
    assert f"ClearML: sweep task {task['id']}" in sweep.out.stdout
    members = {s["task"]["name"].rpartition("-")[2]: s for s in sessions if "trial" in s["task"]["tags"]}
    retrains = [s for s in sessions if "retrain" in s["task"]["tags"]]
    assert sorted(members) == sorted(str(t.number) for t in sweep.trials) and len(retrains) == 2
    assert all(s["task"]["parent"] == task["id"] for s in [*members.values(), *retrains])
    for t in sweep.trials:
        session = members[str(t.number)]
        assert session["task"]["name"] == f"six/{t.user_attrs[TUNE_ID]}-{t.number}"
        searched = {k: float(v["value"]) for k, v in session["task"]["hyperparams"]["search"].items()}
        assert searched == pytest.approx({k: float(v) for k, v in t.params.items()})
        assert float(session["task"]["hyperparams"]["optim"]["lambda_rec"]["value"]) == searched["lambda_rec"]
        steps, score = session["scalars"]["objective", "score"][-1]
        assert steps == t.user_attrs["metrics"]["step"] and score == pytest.approx(t.user_attrs["metrics"]["score"])
        assert session["scalars"]["progress", "stages done"][-1][1] == t.user_attrs["metrics"]["stages_done"]
        levels = 7 if t.state == TrialState.COMPLETE else 2 * t.user_attrs["metrics"]["stages_done"]
        assert {series for title, series in session["scalars"] if title == "critic"} == {f"level {k}" for k in range(levels)}
        # A finished configuration's task holds its generated motion; a pruned one's ends where it stopped.
        assert ("review.rrd" in artifacts(session["task"])) == (t.state == TrialState.COMPLETE)

    metrics = json.loads((sweep.tmp / "exports" / "six" / "1" / "metrics.json").read_text())
    [best] = [s for s in retrains if s["task"]["id"] == metrics["clearml_task"]]
    assert set(best["task"]["tags"]) == {"retrain", "six", "rank-1", f"seed-{metrics['seed']}"}
    assert best["scalars"]["Summary", "coverage"][-1][1] == pytest.approx(metrics["coverage"])


def test_the_sweep_task_holds_the_ranking_and_the_plots(sweep):
    [session] = [s for s in offline_sessions(sweep.tmp / "clearml") if s["task"]["type"] == "optimizer"]
    table = session["plots"]["trials", "ranked"]["data"][0]
    header, columns = table["header"]["values"], table["cells"]["values"]
    assert {"status", "stages_done", "score", "coverage", "global_diversity", "rec_error", *KEYS} <= set(header)
    summary = read_summary(sweep.tmp, "six")
    assert columns[header.index("trial_id")] == [r["trial_id"] for r in summary]
    assert {title for title, _ in session["plots"]} >= {"score vs parameters", "parallel coordinates", "importances"}
    parallel = session["plots"]["parallel coordinates", "parallel coordinates"]
    axes = parallel["layout"]["xaxis"]["ticktext"]  # the score, then every searched value
    assert axes[0] == "score" and len(axes) == 1 + len(KEYS)
    lines = [d for d in parallel["data"] if d.get("mode") == "lines"]  # one per finished configuration
    assert len(lines) == sum(t.state == TrialState.COMPLETE for t in sweep.trials)
    importances = session["plots"]["importances", "importances"]["data"]
    assert set(importances[0]["y"]) <= set(KEYS) and all(v >= 0 for v in importances[0]["x"])
    assert set(artifacts(session["task"])) == {"summary.csv", "summary.md"}

    # What the sweep learned: the importances and whether early scores rank as the final ones.
    for t in sweep.trials:  # every stage end's score, the last one the trial's
        scores = t.user_attrs["stage_scores"]
        assert len(scores) == t.user_attrs["metrics"]["stages_done"] and scores[-1] == t.user_attrs["metrics"]["score"]
    md = (sweep.tmp / "exports" / "six" / "summary.md").read_text()
    assert "## What the sweep learned" in md and all(f"| {k} |" in md for k in importances[0]["y"])
    finished = sum(t.state == TrialState.COMPLETE for t in sweep.trials)
    assert ("| stage end | rho | p-value |" in md) == (finished >= 3)
    assert (("rung correlation", "rung correlation") in session["plots"]) == (finished >= 3)


def test_compare_ranks_the_sweep_from_its_study_and_writes_its_plots(sweep, tmp_path):
    out = subprocess.run(["ganimator-compare", "six", "--results-dir", str(sweep.tmp / "results"),
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=clean_env(sweep.tmp))
    assert out.returncode == 0, out.stderr
    summary = [r["trial_id"] for r in read_summary(sweep.tmp, "six")]
    assert [line.split()[1] for line in out.stdout.splitlines()[2:2 + len(summary)]] == summary
    assert {p.name for p in tmp_path.iterdir()} >= {"score-vs-parameters.html", "parallel-coordinates.html",
                                                     "importances.html", "plotly.min.js"}


def test_trials_as_clearml_holds_them_rank_as_the_study(sweep):
    """compare.py's reading of ClearML tasks, fed the offline sessions' parameters and last scalars."""
    rows = []
    for s in offline_sessions(sweep.tmp / "clearml"):
        if "trial" in s["task"]["tags"]:
            params = {f"{section}/{k}": v["value"] for section, values in s["task"]["hyperparams"].items()
                      for k, v in values.items()}
            last = {}
            for (title, series), points in s["scalars"].items():
                last.setdefault(title, {})[series] = {"last": points[-1][1]}
            rows.append(row_from_task(s["task"]["name"], params, last, "completed", KEYS, 4, ScoreObjective()))
    rows = ScoreObjective().rank(rows)
    summary = read_summary(sweep.tmp, "six")
    assert [r.trial_id for r in rows] == [r["trial_id"] for r in summary]
    for row, local in zip(rows, summary):
        assert row.status_text == local["status"] and row.steps == int(local["steps"])
        assert row.score == pytest.approx(float(local["score"]))
        assert row.params == pytest.approx({k: float(local[k]) for k in KEYS})


def test_resuming_a_finished_sweep_changes_nothing(sweep, npz):
    """A finished sweep's exports are the user's: resume says it is finished and leaves them (and
    anything added to them, such as ganimator-evaluate's evaluations.jsonl) as they are."""
    exports = sweep.tmp / "exports" / "six"
    added = [exports / "1" / "evaluations.jsonl", exports / "1" / "my-notes.txt"]
    try:
        for path in added:
            path.write_text("the user's\n")
        before = {p: p.read_bytes() for p in sorted((sweep.tmp / "exports").rglob("*")) if p.is_file()}
        out = run_sweep(npz, sweep.tmp, "name=six", "resume=true", timeout=300, env=clean_env(sweep.tmp))
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"sweep six is finished: its exports and summary are in {exports}" in out.stdout
        assert {p: p.read_bytes() for p in sorted((sweep.tmp / "exports").rglob("*")) if p.is_file()} == before
    finally:
        for path in added:
            path.unlink(missing_ok=True)


def test_pareto_mode_searches_coverage_diversity_and_naturalness(clip, tmp_path):
    """On two clips mixed (proud and normal): scored against both, exported with feet pinned."""
    npz = tmp_path / "mix.npz"
    MotionDataset.from_bvhs([clip("proud.bvh"), clip("normal.bvh")]).save(npz)
    out = run_sweep(npz, tmp_path, "name=pareto", "objective=pareto", "num_samples=3", "export_fix_contact=true",
                    *EXPORT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "objective=pareto trains every configuration to the end" in out.stderr
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{tmp_path / 'results' / 'pareto' / 'optuna.db'}")
    assert study.metric_names == ["coverage", "global_diversity", "naturalness"] and len(study.trials) == 3
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    rows = read_summary(tmp_path, "pareto")
    front = [r for r in rows if r["pareto"] == "True"]
    assert front and rows[:len(front)] == front  # the front ranks first

    def values(row):
        return pareto_values(Quality.from_dict({k: float(row[k]) for k in Quality.NAMES}))

    for r in front:  # no trial dominates a member of the front
        assert not any(all(o >= v for o, v in zip(values(other), values(r))) and values(other) != values(r)
                       for other in rows)
    told = {tuple(t.values) for t in study.trials}
    assert told == {tuple(values(r)) for r in rows}  # the study was told exactly these
    assert (tmp_path / "exports" / "pareto" / "1" / "checkpoint.pt").is_file()
    assert (tmp_path / "exports" / "pareto" / "plots" / "pareto-front.html").is_file()
    export = tmp_path / "exports" / "pareto" / "1"
    assert len(load_run(export).dataset.clips) == 2
    metrics = json.loads((export / "metrics.json").read_text())
    assert metrics["length"] == 2 * (82 + 90)  # evaluated as the original does: twice both clips
    fixed = sorted(p.name for p in (export / "samples").glob("*-fixed.bvh"))
    assert fixed == ["sample-000-fixed.bvh", "sample-001-fixed.bvh"]
    assert len(metrics["contact_fix"]["pinned_speed_after"]) == 2


def test_a_budget_sweep_searches_the_schedule_at_equal_cost(npz, tmp_path):
    """space=budget with budget_iters: every configuration, split across the stages its own way,
    trains the same 24 iterations, and so does each retrain; objective=band ranks them by how near
    the quality band they come."""
    out = run_sweep(npz, tmp_path, "name=budget", "space=budget", "budget_iters=24", "num_samples=3",
                    "early_stopping=false", "objective=band", *EXPORT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "budget mode: every trial and retrain trains budget_iters=24" in out.stderr
    rows = read_summary(tmp_path, "budget")
    assert len(rows) == 3 and all(r["status"] == "finished" and int(r["steps"]) == 24 for r in rows)
    band = BandObjective()
    scores = [float(r["score"]) for r in rows]
    assert scores == pytest.approx([band.score(Quality.from_dict(r)) for r in rows], rel=1e-4)
    assert scores == sorted(scores, reverse=True) and all(score < 0 for score in scores)  # 24 iterations: outside
    told = sorted((t.values[0] for t in study_trials(tmp_path, "budget")), reverse=True)  # what Optuna was told
    assert told == pytest.approx(scores, rel=1e-4)
    weights = {tuple(float(r[f"stage_weights.{k}"]) for k in (1, 2, 3)) for r in rows}
    assert len(weights) == 3 and (1.0, 1.0, 1.0) in weights  # the first trial runs the original's even split
    [exported] = [r for r in rows if r["export"]]
    history = [json.loads(line) for line in (Path(exported["export"]) / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 24  # the retrain too


def test_a_diverging_configuration_fails_at_once_with_its_reason_and_the_sweep_goes_on(npz, tmp_path):
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
    trials = {f"{t.user_attrs[TUNE_ID]}-{t.number}": t for t in study_trials(tmp_path, "nan")}
    assert len(trials) == 3  # told once, never retried or asked again
    for r in failed:
        assert trials[r["trial_id"]].state == TrialState.FAIL
        assert "is nan" in trials[r["trial_id"]].user_attrs["failure"]
        trial_dir = next((tmp_path / "results" / "nan").glob(f"*{trials[r['trial_id']].user_attrs[TUNE_ID]}*"))
        assert not (trial_dir / "error.txt").exists()  # the Ray trial itself ended well


def test_ray_job_submit_runs_the_sweep_on_a_loopback_cluster(npz, tmp_path, ray_temp_dir):
    gcs, dashboard = free_port(), free_port()
    # Its own folder: a `ray start` cluster's address file there would be found by the next ray.init().
    temp_dir = tempfile.mkdtemp(prefix="head-", dir=ray_temp_dir)
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
    # Resume reads the study and the stage checkpoints: every file of Tune's that a restore would
    # load is now one that runs code, and none runs.
    marker = tmp_path / "payload-ran"
    plant_payloads(tmp_path / "results" / "resumed", marker)

    # The sweep's own arguments are saved with it: naming it is enough to resume.
    again = subprocess.run(["ganimator-sweep", "name=resumed", f"results_dir={tmp_path / 'results'}",
                            f"export_dir={tmp_path / 'exports'}", "num_cpus=2", "resume=true"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not marker.exists()
    rows = read_summary(tmp_path, "resumed")
    assert len(rows) == 4 and not any(r["status"].startswith(("failed", "unfinished")) for r in rows)
    trials = study_trials(tmp_path, "resumed")
    assert len(trials) == 4 and all(t.state.is_finished() and t.state != TrialState.FAIL for t in trials)
    assert sorted(f"{t.user_attrs[TUNE_ID]}-{t.number}" for t in trials) == sorted(r["trial_id"] for r in rows)

    fresh = run_sweep(npz, tmp_path, "name=resumed", "num_samples=4", timeout=120)
    assert fresh.returncode == 2 and "already exists" in fresh.stderr  # a new sweep never reuses one


@pytest.mark.parametrize("sweep", [1], indirect=True, ids=["population-1"])
def test_a_browser_shows_the_study_and_every_plot(browser, sweep, tmp_path):
    """What a user opens after a sweep, in headless Chromium: summary.md's pictures (PNG copies of
    every plot), each HTML plot (whole in the window, every axis named in full, the best marked), and
    the study in optuna-dashboard, started as the sweep's last line says, with every trial listed."""
    plots = sweep.tmp / "exports" / "six" / "plots"
    html = sorted(plots.glob("*.html"))
    md = (sweep.tmp / "exports" / "six" / "summary.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", md)
    assert sorted(pictures) == sorted(f"plots/{p.stem}.png" for p in html) and len(html) >= 3
    for picture in pictures:
        head = (sweep.tmp / "exports" / "six" / picture).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(head[16:20], "big") == 1200  # width

    tab = Page(browser, width=1280, height=900)
    try:
        for path in html:
            tab.page.goto(path.as_uri())
            tab.page.wait_for_selector(".main-svg", timeout=30_000)
            tab.page.screenshot(path=tmp_path / f"{path.stem}.png", full_page=True)
            assert tab.page.evaluate("document.documentElement.scrollWidth") <= 1280, path.name  # fits the window
            text = tab.page.inner_text("body")
            if path.stem in ("parallel-coordinates", "score-vs-parameters"):
                assert "best" in text and all(k in text for k in KEYS), (path.name, text[:2000])
                assert "..." not in text
        assert not tab.our_failures(), tab.our_failures()

        # The dashboard, as printed (on a free port: 8080 may be taken)
        command = re.search(r"optuna study: (optuna-dashboard \S+)", sweep.out.stdout)[1].split()
        assert shutil.which(command[0]), "optuna-dashboard is not installed with the project"
        port = free_port()
        with open(tmp_path / "dashboard.log", "wb") as log:
            dashboard = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # it starts in a few seconds
                assert dashboard.poll() is None, (tmp_path / "dashboard.log").read_text()
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.3)
            tab.page.goto(f"http://127.0.0.1:{port}/dashboard/")
            tab.page.get_by_text("six").first.wait_for(timeout=30_000)
            tab.page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1/trials")
            tab.page.get_by_text(f"Trial {len(sweep.trials) - 1}", exact=True).first.wait_for(timeout=30_000)
            tab.page.screenshot(path=tmp_path / "dashboard.png")
            text = tab.page.inner_text("body")
            assert all(f"Trial {t.number}" in text for t in sweep.trials), text[:2000]
            assert not tab.our_failures(), tab.our_failures()
        finally:
            stop_process_group(dashboard)
    finally:
        tab.close()
