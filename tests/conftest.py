"""Shared fixtures and helpers. Tests that start Ray are marked `ray`: `pytest -m "not ray"` is the quick loop."""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CLIPS = ["Salsa-Dancing-6.bvh", "Walk-In-Circle.bvh", "Crab-dance-long.bvh", "proud.bvh", "normal.bvh"]


def data_dir() -> Path:
    return Path(os.environ.get("GANIMATOR_TEST_DATA", ROOT.parent / "shared" / "data" / "bvh"))


@pytest.fixture(scope="session", autouse=True)
def ray_temp_dir():
    """Every Ray the suite starts (its own and its sweeps') keeps its session folders, logs and
    spilled objects here, removed at the end, not in /tmp/ray, where they would outlive the suite.
    Short and under /tmp: Ray's socket paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", path)
        yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def clip():
    """Path of a real clip; a missing clip fails the test (never a skip)."""

    def get(name: str) -> Path:
        # Flat (as in ../shared/data/bvh) or as PeizhuoLi/ganimator's data/ folder lays them out (Joe/Salsa...).
        found = sorted(data_dir().rglob(name)) if data_dir().is_dir() else []
        if not found:
            pytest.fail(f"test clip {name} is not in {data_dir()}: set GANIMATOR_TEST_DATA to the data/ folder of "
                        "PeizhuoLi/ganimator (see the README)")
        return found[0]

    return get


@pytest.fixture(scope="session")
def npz(clip, tmp_path_factory) -> Path:
    """proud.bvh preprocessed: the short real clip that training, sweep and fault tests share."""
    from ganimator.dataset import MotionDataset

    path = tmp_path_factory.mktemp("data") / "proud.npz"
    MotionDataset.from_bvh(clip("proud.bvh")).save(path)
    return path


@pytest.fixture(scope="session")
def walk_npz(clip, tmp_path_factory) -> Path:
    """Walk-In-Circle.bvh preprocessed (`walk.npz`): the real Mixamo clip that review and network tests share."""
    from ganimator.dataset import MotionDataset

    path = tmp_path_factory.mktemp("walk") / "walk.npz"
    MotionDataset.from_bvh(clip("Walk-In-Circle.bvh")).save(path)
    return path


@pytest.fixture(scope="session")
def walk_runs(walk_npz, tmp_path_factory) -> list[Path]:
    """Two tiny runs trained on the walk, seeds 0 and 1, in folders `trial0` and `trial1`: runs to
    review and serve, trained once for every module. Read them; copy one to change it."""
    from ganimator.config import load_config
    from ganimator.run_hooks import train

    tmp = tmp_path_factory.mktemp("walk-runs")
    return [train(load_config([f"npz_filename={walk_npz}", f"run_dir={tmp / f'trial{seed}'}", f"seed={seed}",
                               "train_data_iter=1", "validation_samples=0", "hidden_channels=[8,16,16]",
                               "progress=false"])).run_dir
            for seed in (0, 1)]


# ---- sweeps -------------------------------------------------------------------------------------

# Tiny trials on a short real clip: 4 iterations a stage, small networks; ClearML off unless a test asks.
TINY = ["train_data_iter=4", "validate_every=2", "validation_samples=2", "hidden_channels=[16,32,32]", "clearml=off"]
EXPORT = ["retrain_iter=6", "eval_samples=4", "export_samples=2"]


def sweep_args(npz, tmp: Path, *args) -> list[str]:
    """A tiny sweep's arguments; no PNG copies of its plots (seconds of Chromium) unless a test asks."""
    return [f"npz_filename={npz}", f"results_dir={tmp / 'results'}", f"export_dir={tmp / 'exports'}", *TINY,
            "plot_pngs=false", *args]


def run_sweep(npz, tmp: Path, *args, timeout=900, env=None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "sweeps/run.py", *sweep_args(npz, tmp, "num_cpus=2", *args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout, env=env)
    print(out.stdout[-3000:], out.stderr[-3000:])
    return out


class Payload:
    """Unpickled, it creates `marker`: what a crafted state file would do with a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant_payloads(sweep: Path, marker: Path) -> list[Path]:
    """Replace every Tune state file of a sweep folder (`tuner.pkl`, the experiment, searcher and
    variant states, each trial's params) with one that runs code when Tune loads it, and plant a
    newer experiment state beside them: resume must load none of them."""
    import pickle

    from ray.tune.utils.serialization import TuneFunctionEncoder

    crafted = pickle.dumps(Payload(marker))
    # A cloudpickled field, as Tune writes them into its JSON state; Tune's decoder unpickles it.
    as_json = json.dumps({"trial_data": [], "runner_data": {"x": Payload(marker)}, "stats": {}},
                         cls=TuneFunctionEncoder)
    planted = [*sweep.glob("*.pkl"), *sweep.glob("*-state-*.json"), *sweep.glob("train_trial_*/params.*"),
               sweep / "experiment_state-2999-01-01_00-00-00.json"]
    for path in planted:
        path.write_bytes(crafted) if path.suffix == ".pkl" else path.write_text(as_json)
    return planted


def read_summary(tmp: Path, name: str) -> list[dict]:
    with open(tmp / "exports" / name / "summary.csv") as f:
        return list(csv.DictReader(f))


def free_port() -> int:
    """A TCP port free on loopback now (a server the test starts takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen) -> None:
    """A process and every process it started share its process group: stop them all by its PID."""
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


def assert_accounted_for(outcome, trials: int):
    """A fault run (cluster/faults.py): every configuration started is in the summary and in the
    Optuna study once, finished or failed."""
    assert outcome.started == trials and outcome.lost == 0, [r["status"] for r in outcome.rows]
    assert sorted(outcome.study_ids()) == sorted(r["trial_id"] for r in outcome.rows)
    assert all(t.state.is_finished() for t in outcome.study)


def clean_env(tmp: Path, **extra) -> dict:
    """No ClearML configuration at all: a fresh home, no CLEARML_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    # matplotlib (imported by optuna.visualization when installed) caches its fonts beside, not in, tmp:
    # tests compare tmp's files before and after a command.
    return {**env, "HOME": str(tmp / "home"), "CLEARML_CACHE_DIR": str(tmp / "clearml"),
            "MPLCONFIGDIR": str(tmp.parent / f"{tmp.name}-matplotlib"), **extra}


def offline_sessions(cache: Path) -> list[dict]:
    """Every offline ClearML session under a cache folder, as {'task', 'scalars', 'plots', 'folder'}."""
    sessions = []
    for folder in sorted(p for p in (cache / "offline").iterdir() if p.is_dir()):
        events = []
        if (folder / "metrics.jsonl").exists():
            for line in (folder / "metrics.jsonl").read_text().splitlines():
                batch = json.loads(line)
                events += batch if isinstance(batch, list) else [batch]
        scalars = {}
        for e in events:
            if e["type"] == "training_stats_scalar":
                scalars.setdefault((e["metric"], e["variant"]), []).append((e["iter"], e["value"]))
        plots = {(e["metric"], e["variant"]): json.loads(e["plot_str"]) for e in events if e["type"] == "plot"}
        sessions.append({"task": json.loads((folder / "task.json").read_text()), "scalars": scalars,
                         "plots": plots, "folder": folder})
    return sessions


def artifacts(task: dict) -> dict[str, Path]:
    return {a["key"]: Path(a["uri"]) for a in task["execution"]["artifacts"]}


# ---- a real browser ------------------------------------------------------------------------------

# Debian's Chromium, driven by Playwright through executable_path: `playwright install` would download
# browsers. WebGL runs on the CPU (SwiftShader), which the Rerun viewer needs; the rest keeps Chromium
# from calling home.
CHROMIUM = Path(os.environ.get("GANIMATOR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--use-gl=angle", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for a test module. Skipped where Chromium is absent, except where
    GANIMATOR_REQUIRE_BROWSER=1 (.ci/run, which installs it) makes that a failure."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if not CHROMIUM.is_file() or sync_playwright is None:
        message = (f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set GANIMATOR_CHROMIUM)"
                   if sync_playwright else "no playwright (pip install -e '.[test]')")
        if os.environ.get("GANIMATOR_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab that records console errors and failed requests: those of loopback servers are
    ours; the internet's (fonts, telemetry: nothing is reachable here) are not."""

    def __init__(self, browser, width=1400, height=800):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors, self.failed = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))

    def our_failures(self) -> list[str]:
        """Failed requests to this machine, and console errors that are not the internet's failed requests."""
        from urllib.parse import urlparse

        local = [u for u in self.failed if urlparse(u).scheme == "file" or urlparse(u).hostname in ("127.0.0.1", "localhost")]
        internet = bool(set(self.failed) - set(local))
        errors = [e for e in self.errors if not (internet and ("net::ERR_" in e or e.startswith("TypeError: Failed to fetch")))]
        return local + errors

    def close(self):
        self.page.close()
