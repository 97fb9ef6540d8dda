"""What a local sweep's Ray exposes: `sweeps/run.py`'s `connect()` starts Ray as a sweep without an
address does (in a subprocess, with its own HOME), runs a task, and every socket any process of that
Ray listens on must be on loopback, the three Prometheus metrics ports (metrics export, autoscaler,
dashboard: they answer without the token) included. Nothing is left exempt: with the node address
kept at 127.0.0.1, Ray 2.60 binds all of its ports to loopback. The token file Ray uses is 0600.
About 40 s on 2 busy cores.
"""
import json
import os
import stat
import subprocess
import sys
import time

import psutil
import pytest

from conftest import ROOT, free_port

pytestmark = pytest.mark.ray
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}

DRIVER = r"""
import json, os, sys
from types import SimpleNamespace

import ray
from sweeps.run import connect

connect(SimpleNamespace(address=None, num_cpus=1))

@ray.remote
def pid():
    return os.getpid()

node = ray._private.worker._global_node
print("READY " + json.dumps({"metrics_export": node.metrics_export_port, "worker": ray.get(pid.remote()),
                             "node_ip": ray.util.get_node_ip_address()}), flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""


def listening(procs: dict[int, psutil.Process]) -> dict[tuple[str, int], str]:
    """(address, port) -> the process's name, for every LISTEN socket of these processes."""
    found = {}
    for p in list(procs.values()):
        try:
            name = p.name()
            for c in p.net_connections("inet"):
                if c.status == psutil.CONN_LISTEN:
                    found[(c.laddr.ip, c.laddr.port)] = f"{name} ({p.pid})"
        except psutil.Error:
            pass
    return found


def test_local_sweep_ray_listens_on_loopback_only(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # Ray's fixed 44217 / 44227 may be held by another Ray on this machine: free ones, to see them bound.
    metrics = {"AUTOSCALER_METRIC_PORT": free_port(), "DASHBOARD_METRIC_PORT": free_port()}
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0",
               **{k: str(v) for k, v in metrics.items()})
    out = tmp_path / "driver.out"
    t0 = time.monotonic()
    with open(out, "wb") as stdout:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                                  stdout=stdout, stderr=subprocess.STDOUT)
    procs = {driver.pid: psutil.Process(driver.pid)}
    try:
        ready = None
        while ready is None and time.monotonic() - t0 < 180:
            assert driver.poll() is None, out.read_text()[-4000:]
            procs.update({c.pid: c for c in procs[driver.pid].children(recursive=True)})
            lines = [line for line in out.read_text().splitlines() if line.startswith("READY ")]
            ready = json.loads(lines[0][6:]) if lines else None
            time.sleep(0.5)
        assert ready, f"Ray did not start:\n{out.read_text()[-4000:]}"
        assert ready["node_ip"] == "127.0.0.1"

        # Wait for the metrics servers (the agents start them a little after the node is up).
        expected = {ready["metrics_export"], *metrics.values()}
        while time.monotonic() - t0 < 240:
            procs.update({c.pid: c for c in procs[driver.pid].children(recursive=True)})
            found = listening(procs)
            if expected <= {port for _, port in found}:
                break
            time.sleep(0.5)
        exposed = {f"{ip}:{port}": who for (ip, port), who in found.items() if ip not in LOOPBACK}
        assert exposed == {}, exposed
        assert {port for _, port in found} >= expected, (expected, found)
        assert ready["worker"] in procs  # a core worker too: listening, on loopback
        assert len(found) >= 10, found  # GCS, raylet (2), dashboard (2), agents (4), driver, worker, ...

        # Ray's token: written owner-only, in an owner-only folder, and the only copy.
        token = home / ".ray" / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
        assert len(token.read_text().strip()) == 64 and os.listdir(token.parent) == ["auth_token"]
    finally:
        if driver.poll() is None:
            driver.stdin.close()  # the driver shuts Ray down
            try:
                driver.wait(60)
            except subprocess.TimeoutExpired:
                pass
        for p in procs.values():  # whatever is left, by PID (psutil refuses a reused one)
            try:
                p.kill()
            except psutil.Error:
                pass
        driver.wait(10)
        print(f"\nlocal Ray exposure check: {time.monotonic() - t0:.1f} s, {len(procs)} processes")
    assert driver.returncode == 0, out.read_text()[-4000:]


def test_an_existing_token_is_made_owner_only(tmp_path, monkeypatch):
    """A token Ray wrote earlier with mode 0644 is tightened, not replaced; a missing one is made 0600."""
    from sweeps import run

    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("ab" * 32)
    token.chmod(0o644)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    run._owner_only_token()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "ab" * 32
    token.unlink()
    run._owner_only_token()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
