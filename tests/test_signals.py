"""Long-running commands stop on SIGINT or SIGTERM sent to their process alone, within seconds,
with their children, even when started with SIGINT ignored: as a non-interactive shell starts
every `cmd &` and some supervisors start services. Python keeps an inherited SIG_IGN, so only the
command's own handlers make `kill -INT PID` work (ganimator.errors.stop_on_signals). The review
server's case is in test_review_serve.py.
"""
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ganimator.dataset import MotionDataset
from ganimator.procedural import procedural_dance
from ganimator.bvh import write_bvh

from conftest import ROOT, clean_env, sweep_args

TINY = ["hidden_channels=[16,32,32]", "validation_samples=0", "clearml=off", "progress=false"]


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(cmd: list[str], cwd: Path, tmp: Path) -> subprocess.Popen:
    """`cmd` with SIGINT ignored, in its own session so that the test can clean up after a failure; its
    home (Ray's token, caches) in `tmp`."""
    return subprocess.Popen(cmd, cwd=cwd, env=clean_env(tmp), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint, start_new_session=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {what}:\n{proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)


def descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def stop(proc: subprocess.Popen) -> None:
    """Whatever the test left: its session, by PID."""
    for p in [*descendants(proc), psutil.Process(proc.pid) if proc.poll() is None else None]:
        if p is not None:
            try:
                p.kill()
            except psutil.Error:
                pass
    proc.wait(30)


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("signals")
    write_bvh(folder / "dance.bvh", procedural_dance(4.0))
    MotionDataset.from_bvh(folder / "dance.bvh").save(folder / "dance.npz")
    return folder / "dance.npz"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_training_stops_on_a_signal_to_its_process_alone(npz, tmp_path, sig):
    proc = start([sys.executable, "-c", "from ganimator.cli import train; train()", f"npz_filename={npz}",
                  "run_dir=run", "train_data_iter=100000", "checkpoint_every=5", *TINY], tmp_path, tmp_path)
    try:
        wait_for(lambda: (tmp_path / "run" / "checkpoint.pt").exists(), proc, 120, "a first checkpoint")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == "interrupted: the last checkpoint is kept; continue with resume=true"
        assert "Traceback" not in err
    finally:
        stop(proc)


@pytest.mark.ray
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_sweep_driver_stops_with_its_ray_without_exporting(npz, tmp_path, sig):
    """Tune's own SIGINT handler would end the search as if done, and the driver would export a
    half-run sweep; ray.init's SIGTERM handler exits without a word. Either signal stops the
    driver as Ctrl-C does, and its local Ray with it."""
    args = sweep_args(npz, tmp_path, "name=cut", "num_samples=2", "num_cpus=2", "train_data_iter=100000",
                      "validate_every=1000")
    proc = start([sys.executable, str(ROOT / "sweeps" / "run.py"), *args], ROOT, tmp_path)
    try:
        # A trainer holds its run folder's lock: a trial is training.
        wait_for(lambda: any((tmp_path / "results").rglob(".lock")), proc, 240, "a training trial")
        time.sleep(2)
        children = descendants(proc)
        assert children, "a local Ray runs under the driver"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-3000:]
        assert "interrupted: continue the sweep with resume=true" in err
        deadline = time.monotonic() + 30
        while still_running(children) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not still_running(children), [p.name() for p in still_running(children)]
        assert not (tmp_path / "exports" / "cut").exists()  # nothing exported from a half-run sweep
    finally:
        stop(proc)
