"""Fault-test harness: faults injected from outside into small sweeps on a local multi-node Ray
cluster, and what became of the trials.

`run_fault(fault, npz, work)` gives the fault its own cluster (`cluster.devcluster`: a head with no
CPUs and two 1-CPU worker nodes on 127.0.0.1) and its own sweep of `trials` trials (with
`population=K`: configurations, K to a Tune trial), driven by `sweeps/run.py` exactly as a user
runs it, and returns a `FaultOutcome`: trials started, finished, failed with a reason, lost (started
but neither finished nor failed with a reason; must be 0), and the seconds from the fault until
the hit trial reported again (for a diverging trial: until it was recorded failed).

    worker-node        a worker node SIGKILLed while both run trials past their first stage
    driver             the sweep's driver SIGKILLed after a trial finished; `resume=true` finishes it
    nan                the first trial's critic learning rate makes its losses NaN at once
    trial-process      one trial's process SIGKILLed after its first stage: Tune retries it
    corrupt-checkpoint a trial's newest stage checkpoint truncated and its process SIGKILLed

`benchmarks/faults.py` prints a table of them; `tests/test_faults.py` and `tests/test_postgres.py`
check their outcomes.
"""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from cluster import devcluster
from sweeps.config import database_url
from sweeps.paths import ARGS
from sweeps.results import TUNE_ID, member_id

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the driver runs from there, as a user's does
RUN = ROOT / "sweeps" / "run.py"  # the sweep's entry point, run by path as users do


@dataclass
class FaultOutcome:
    """What became of a fault run's configurations (not the trainer's `Outcome` of one member)."""

    fault: str
    rows: list[dict]  # the sweep's summary.csv
    study: list[optuna.trial.FrozenTrial]
    results: dict[str, list[dict]]  # every trial's Tune results, in order
    recover_s: float
    log: str  # the driver's output, every run of it

    def study_ids(self) -> list[str]:
        """The study's trials under the ids the ranking gives them: `<tune id>-<number>`."""
        return [member_id(t.user_attrs.get(TUNE_ID), t.number) for t in self.study]

    @property
    def started(self) -> int:
        return len(set(self.study_ids()) | {r["trial_id"] for r in self.rows})

    @property
    def finished(self) -> int:
        return sum(r["status"] == "finished" for r in self.rows)

    @property
    def failed(self) -> list[str]:
        """Each failed configuration's reason: diverged, or its Ray trial out of retries."""
        return [r["status"] for r in self.rows if r["status"].startswith("failed")]

    @property
    def lost(self) -> int:
        return self.started - self.finished - len(self.failed)

    def restored(self) -> list[str]:
        """Trials that continued from a checkpoint: some report counts fewer iterations since the
        restore than in all."""
        return [t for t, rs in self.results.items() if any(r["iterations_since_restore"] < r["training_iteration"]
                                                           for r in rs)]


@dataclass
class Sweep:
    """One `sweeps/run.py` against a local cluster, watched from outside through its files."""

    npz: Path
    work: Path
    cluster: devcluster.ClusterState
    args: list[str]
    name: str = "faults"
    logs: list[Path] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def path(self) -> Path:
        return self.work / "results" / self.name

    def start(self, *extra: str) -> None:
        log = self.work / f"driver-{len(self.logs)}.log"
        self.logs.append(log)
        cmd = [sys.executable, str(RUN), f"name={self.name}",
               f"results_dir={self.work / 'results'}", f"export_dir={self.work / 'exports'}", *extra]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.cluster.client_env(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def launch(self) -> None:
        self.start(f"npz_filename={self.npz}", *self.args)

    def results(self) -> dict[str, list[dict]]:
        out = {}
        for trial_dir in sorted(self.path.glob("train_*")):
            lines = (trial_dir / "result.json").read_text().splitlines() if (trial_dir / "result.json").exists() else []
            results = []
            for line in lines:
                try:
                    results.append(json.loads(line))
                except json.JSONDecodeError:  # a line being written
                    break
            if results:
                out[results[0]["trial_id"]] = results
        return out

    def running(self) -> dict[str, tuple[dict, set[int]]]:
        """Trials past their first stage checkpoint whose process runs: their last result and PIDs."""
        out = {}
        for t, rs in self.results().items():
            if rs[-1]["stages_done"] >= 1 and not rs[-1].get("finished") and "failure" not in rs[-1]:
                if pids := self.trial_pids(t):
                    out[t] = rs[-1], pids
        return out

    def trial_dir(self, trial: str) -> Path:
        return next(self.path.glob(f"train_*_{trial}_*"))

    def wait_for(self, what: str, condition, timeout: float = 600):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                raise RuntimeError(f"the sweep ended before {what}:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"no {what} after {timeout:.0f} s:\n{self.output()[-3000:]}")

    def reported_since(self, trial: str, t0: float, killed: set[int]) -> float:
        """Seconds from t0 until `trial` reported from a process other than the killed ones (a
        report already on its way when they died does not count)."""
        self.wait_for(f"a report of {trial} after the fault",
                      lambda: self.results().get(trial, [{}])[-1].get("pid") not in killed)
        return time.time() - t0

    def trial_pids(self, trial: str) -> set[int]:
        """The processes running `trial` now: Tune starts each in the trial's own folder."""
        pids = set()
        for entry in Path("/proc").iterdir():
            try:
                cwd = os.readlink(entry / "cwd")
                title = (entry / "cmdline").read_bytes()
            except OSError:  # not a process, gone, or not ours
                continue
            if (title.startswith(b"ray::ImplicitFunc") and cwd.startswith(self.cluster.temp_root)
                    and Path(cwd).name.startswith("train_trial_")
                    and f"_{trial}_" in Path(cwd).name):
                pids.add(int(entry.name))
        return pids

    def finish(self, timeout: float = 900) -> None:
        code = self.proc.wait(timeout=timeout)
        if code != 0:
            raise RuntimeError(f"the sweep failed ({code}):\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the driver and anything it started, by its process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def output(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs if log.exists())

    def outcome(self, fault: str, recover_s: float) -> FaultOutcome:
        with open(self.work / "exports" / self.name / "summary.csv") as f:
            rows = list(csv.DictReader(f))
        return FaultOutcome(fault, rows, self.study(), self.results(), recover_s, self.output())

    @property
    def population(self) -> int:
        return int(next((a.split("=")[1] for a in self.args if a.startswith("population=")), 1))

    @property
    def storage(self) -> str:
        """The sweep's Optuna storage: its `optuna_storage=` argument, else the SQLite file in its folder."""
        return database_url(next((a.partition("=")[2] for a in self.args if a.startswith("optuna_storage=")), "")) \
            or f"sqlite:///{self.path / 'optuna.db'}"

    def study(self, wait: bool = False) -> list[optuna.trial.FrozenTrial]:
        """The sweep's Optuna trials; with `wait`, none while the driver has yet to create the study."""
        # A server's schema is there once the driver has checked for an old study, before it saves its arguments.
        created = (self.path / ("optuna.db" if self.storage.startswith("sqlite") else ARGS)).exists()
        if wait and not (created and self.name in optuna.get_all_study_names(self.storage)):
            return []
        return optuna.load_study(study_name=self.name, storage=self.storage).get_trials(deepcopy=False)


def signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # it ended on its own meanwhile
            pass


def kill(pids: set[int]) -> None:
    signal_all(pids, signal.SIGKILL)


def sweep_args(iters: int, trials: int, population: int = 1) -> list[str]:
    return [f"num_samples={trials}", f"population={population}", "max_concurrent=2", "early_stopping=false", "max_failures=2",
            "cpus_per_trial=1", f"train_data_iter={iters}", f"validate_every={max(1, iters // 3)}", "validation_samples=2",
            "hidden_channels=[16,32,32]", "clearml=off", "retrain_iter=2", "eval_samples=2", "export_samples=1",
            "plot_pngs=false"]  # faults, not plots: a PNG costs a browser start


def worker_node(sweep: Sweep) -> float:
    sweep.launch()
    running = sweep.wait_for("two trials past their first stage", lambda: len(sweep.running()) >= 2 and sweep.running())
    t0 = time.time()
    killed = set(devcluster.kill_worker(sweep.cluster.state_dir, 1))
    hit = [t for t, (_, pids) in running.items() if pids & killed]
    if not hit:
        raise RuntimeError(f"no running trial was on worker node 1 (killed {sorted(killed)}, trials {running})")
    recover = sweep.reported_since(hit[0], t0, killed)
    sweep.finish()
    return recover


def driver(sweep: Sweep) -> float:
    sweep.launch()
    sweep.wait_for("a finished trial", lambda: any(rs[-1].get("finished") for rs in sweep.results().values())
                   and sweep.running())
    t0 = time.time()
    sweep.kill()
    before = {t: len(rs) for t, rs in sweep.results().items()}
    # Its saved arguments are enough, but for a database password, which is never saved.
    sweep.start("resume=true", *(a for a in sweep.args if a.startswith("optuna_storage=")))
    sweep.wait_for("a report after the resume", lambda: any(len(rs) > before.get(t, 0)
                                                            for t, rs in sweep.results().items()))
    recover = time.time() - t0
    sweep.finish()
    return recover


def nan(sweep: Sweep) -> float:
    space = sweep.work / "space.yaml"  # the first trial runs the defaults: a critic learning rate that diverges
    space.write_text("lr_d: {type: categorical, choices: [0.0001, 1.0e10], default: 1.0e10}\n"
                     "lambda_rec: {type: log, low: 5, high: 500}\n")
    sweep.args.append(f"space={space}")
    sweep.launch()
    # The configuration fails inside its Ray trial, which goes on: the study records it.
    failed = sweep.wait_for("a failed configuration", lambda: [
        t for t in sweep.study(wait=True) if t.state == optuna.trial.TrialState.FAIL])
    sweep.finish()
    return (failed[0].datetime_complete - failed[0].datetime_start).total_seconds()


def trial_process(sweep: Sweep, kills: int = 1) -> float:
    """SIGKILL one trial's process past its first stage, and `kills - 1` more times as soon as each
    retry starts: more kills than the sweep's max_failures leave the trial failed with the error."""
    sweep.launch()
    trial, (_, killed) = next(iter(sweep.wait_for("a trial past its first stage", sweep.running).items()))
    t0 = time.time()
    kill(killed)
    for _ in range(kills - 1):  # the driver logs reports seconds late: watch the processes instead
        pids = sweep.wait_for(f"a retry of {trial}", lambda: sweep.trial_pids(trial) - killed)
        kill(pids)
        killed |= pids
    recover = sweep.reported_since(trial, t0, killed) if kills == 1 else math.nan
    sweep.finish()
    return recover


def corrupt_checkpoint(sweep: Sweep) -> float:
    sweep.launch()

    def second_checkpoint_is_newest():
        """A running trial whose newest checkpoint is its second (of stage 2), frozen by SIGSTOP so
        that it cannot write its third between this check and the kill."""
        for trial, (last, pids) in sweep.running().items():
            k = last["stages_done"] - 1  # a first attempt's checkpoints are numbered by stage
            folder = sweep.trial_dir(trial)
            files = sorted((folder / f"checkpoint_{k:06d}").rglob("checkpoint.pt"))  # a population's: one per member
            if k != 1 or not files:  # one past its second stage already (result.json lags) is no good
                continue
            signal_all(pids, signal.SIGSTOP)
            time.sleep(1.0)  # result.json lags the trial: a third checkpoint begun meanwhile shows by now
            if not (folder / f"checkpoint_{k + 1:06d}").exists():
                return trial, pids, files[0]
            signal_all(pids, signal.SIGCONT)
        return None

    trial, pids, newest = sweep.wait_for("a trial with two stage checkpoints", second_checkpoint_is_newest)
    t0 = time.time()
    newest.write_bytes(newest.read_bytes()[:2000])
    kill(pids)
    recover = sweep.reported_since(trial, t0, pids)
    sweep.finish()
    return recover


SCENARIOS = {"worker-node": worker_node, "driver": driver, "nan": nan, "trial-process": trial_process,
             "corrupt-checkpoint": corrupt_checkpoint}


def clip_npz(clip: Path | None, folder: Path) -> Path:
    """The sweeps' training data: `clip` (BVH) preprocessed into `folder`, or without one the
    procedural demo clip, made there too. Through the CLIs, as a user prepares a clip."""
    if clip is None:
        clip = folder / "demo.bvh"
        subprocess.run(["ganimator-procedural", str(clip)], check=True, stdout=subprocess.DEVNULL)
    npz = folder / "clip.npz"
    subprocess.run(["ganimator-preprocess", str(clip), str(npz)], check=True, stdout=subprocess.DEVNULL)
    return npz


def run_fault(fault: str, npz: Path, work: Path, iters: int = 30, trials: int = 4, population: int = 1,
              optuna_storage: str = "", **options) -> FaultOutcome:
    """One fault on its own two-worker cluster; the cluster is stopped whatever happens. With
    `population` > 1, each Tune trial trains that many configurations fused. `optuna_storage`: the
    study's database URL (default: SQLite in the sweep's folder)."""
    work.mkdir(parents=True, exist_ok=True)
    state_dir = work / "cluster"
    state = devcluster.start(workers=2, cpus_per_node=1, head_cpus=0, state_dir=state_dir)
    try:
        storage = [f"optuna_storage={optuna_storage}"] if optuna_storage else []
        sweep = Sweep(npz, work, state, [*sweep_args(iters, trials, population), *storage])
        try:
            recover = SCENARIOS[fault](sweep, **options)
        finally:
            if sweep.proc and sweep.proc.poll() is None:
                sweep.kill()
        return sweep.outcome(fault, recover)
    finally:
        devcluster.stop(state_dir)
