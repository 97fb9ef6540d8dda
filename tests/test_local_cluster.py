"""cluster/devcluster (`python -m cluster.devcluster`): a head (0 CPUs) and 2 one-CPU workers on this
machine, a task pinned to a worker, that worker SIGKILLed and seen dead by the GCS, then
everything stopped.

Only processes recorded by (or marked as belonging to) the cluster this test starts are touched,
so it is safe beside another Ray on the machine. About 30 s on 2 cores.
"""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster import devcluster
from conftest import ROOT

pytestmark = pytest.mark.ray


def cli(*args, timeout=180):
    """The command line, run from the checkout as the README says."""
    return subprocess.run([sys.executable, "-m", "cluster.devcluster", *args], check=False, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)


def running(pid):
    """A PID is running unless it is gone or a zombie (dead, waiting for init to collect its status)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return data[data.rindex(")") + 2] not in "ZXx"


def marked(cluster_id):
    """Running PIDs carrying this cluster's marker in their environment (every process of its nodes)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and running(int(entry)):
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e.startswith(f"{devcluster.MARKER_ENV}={cluster_id}:".encode()) for e in environ):
                pids.append(int(entry))
    return pids


# One driver, run as `python -c DRIVER <address> <mode>` with the client environment.
DRIVER = r"""
import json, os, sys, time
import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id(), os.getpid()

def nodes():
    return [{"id": n["NodeID"], "alive": n["Alive"], "resources": n["Resources"]} for n in ray.nodes()]

out = {}
if sys.argv[2] == "before":
    out["nodes"] = nodes()
    out["task_node"] = ray.get(where.options(resources={"node_1": 1}).remote(), timeout=60)[0]
else:  # after worker 1 was killed: wait until the GCS reports it dead, then use the other worker
    t0 = time.monotonic()
    while sum(n["alive"] for n in nodes()) != 2 and time.monotonic() - t0 < 60:
        time.sleep(0.25)
    out["waited_s"] = time.monotonic() - t0
    out["nodes"] = nodes()
    out["task_node"] = ray.get(where.options(resources={"node_2": 1}).remote(), timeout=60)[0]
print("RESULT " + json.dumps(out))
"""


def drive(state, mode):
    proc = subprocess.run([sys.executable, "-c", DRIVER, state.gcs_address, mode], env=state.client_env(),
                          check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"driver ({mode}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def listening(state):
    """(address, port) -> node name, for every LISTEN socket of every process of the cluster."""
    found = {}
    for n in state.nodes:
        for pid in devcluster.node_processes(state, n):
            try:
                conns = psutil.Process(pid).net_connections("inet")
            except psutil.Error:
                continue
            found.update({(c.laddr.ip, c.laddr.port): n.name for c in conns if c.status == psutil.CONN_LISTEN})
    return found


def node_with(nodes, resource):
    found = [n for n in nodes if resource in n["resources"]]
    assert len(found) == 1, (resource, nodes)
    return found[0]


def test_local_cluster_start_pin_kill_stop(tmp_path):
    state_dir = tmp_path / "cluster"
    timings = {}
    state = None
    t0 = time.monotonic()
    try:
        start = cli("start", "--workers", "2", "--cpus-per-node", "1", "--head-cpus", "0", "--dir", str(state_dir))
        timings["start"] = time.monotonic() - t0
        state = devcluster.load_state(state_dir)
        assert start.returncode == 0, f"start failed:\n{start.stdout}\n{start.stderr}"
        assert state is not None and [n.role for n in state.nodes] == ["head", "worker", "worker"]

        # The token: its own 0600 file, in every node's environment, never printed.
        token = state.token()
        assert len(token) == 64
        assert stat.S_IMODE(os.stat(state.token_file).st_mode) == 0o600
        assert token not in start.stdout + start.stderr
        assert f"export RAY_ADDRESS={state.gcs_address} RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(cat " in start.stdout

        # Every recorded node runs in its own session and process group; services bound to loopback.
        assert all(running(n.pid) and os.getpgid(n.pid) == n.pid == n.pgid for n in state.nodes)
        assert state.gcs_address.startswith("127.0.0.1:") and state.dashboard_url.startswith("http://127.0.0.1:")
        assert len({n.ports["node_manager"] for n in state.nodes}) == 3

        # The cluster refuses a wrong token.
        bad = subprocess.run([devcluster.ray_cli(), "status", "--address", state.gcs_address],
                             env={**state.client_env(), "RAY_AUTH_TOKEN": "0" * 64}, capture_output=True, text=True,
                             check=False, timeout=60)
        assert bad.returncode != 0 and "Authentication" in bad.stdout + bad.stderr

        # Ray sees 3 alive nodes: a 0-CPU head and two 1-CPU workers with node_1 / node_2, and a
        # task asking for node_1 runs on worker 1.
        t = time.monotonic()
        before = drive(state, "before")
        timings["driver"] = time.monotonic() - t
        nodes = before["nodes"]
        assert len(nodes) == 3 and all(n["alive"] for n in nodes), nodes
        head = node_with(nodes, "node:__internal_head__")
        assert head["resources"].get("CPU", 0) == 0 and "node_0" in head["resources"]
        w1, w2 = node_with(nodes, "node_1"), node_with(nodes, "node_2")
        assert len({head["id"], w1["id"], w2["id"]}) == 3
        assert w1["resources"]["CPU"] == 1 and w2["resources"]["CPU"] == 1
        assert before["task_node"] == w1["id"]

        # Nothing listens beyond loopback: not the GCS, raylets, object managers, workers, agents,
        # Ray client server, nor the Prometheus ports (metrics export, autoscaler, dashboard), which
        # Ray puts on every interface unless the node address stays 127.0.0.1.
        socks = listening(state)
        exposed = {f"{ip}:{port}": who for (ip, port), who in socks.items()
                   if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")}
        assert exposed == {}, exposed
        bound = {(who, port) for (_, port), who in socks.items()}
        for n in state.nodes:
            names = ["node_manager", "object_manager", "dashboard_agent_listen", "dashboard_agent_grpc",
                     "metrics_export", "runtime_env_agent"]
            if n.role == "head":
                names += ["gcs", "dashboard", "client_server", "autoscaler_metrics", "dashboard_metrics"]
            assert {(n.name, n.ports[k]) for k in names} <= bound, (n.name, sorted(bound))

        # Kill worker 1: its processes are gone at once, the GCS marks it dead within the health
        # check window (1 s x 5 failures here), and work pinned to worker 2 still runs.
        killed = cli("kill-worker", "1", "--dir", str(state_dir), timeout=60)
        assert killed.returncode == 0, killed.stderr
        assert not running(state.nodes[1].pid) and running(state.nodes[2].pid)
        t = time.monotonic()
        after = drive(state, "after")
        timings["dead_seen"] = after["waited_s"]
        timings["driver_after"] = time.monotonic() - t
        alive = [n for n in after["nodes"] if n["alive"]]
        assert len(alive) == 2, after
        assert {n["id"] for n in alive} == {head["id"], w2["id"]}
        assert [n["alive"] for n in after["nodes"] if n["id"] == w1["id"]] == [False]
        assert after["waited_s"] < 60 and after["task_node"] == w2["id"]

        status = cli("status", "--dir", str(state_dir), "--json", timeout=60)
        assert status.returncode == 1, status.stdout + status.stderr  # 1: some node is dead
        rows = {n["name"]: n for n in json.loads(status.stdout)["nodes"]}
        assert [rows[f"node_{i}"]["alive"] for i in range(3)] == [True, False, True]
        assert rows["node_1"]["ray"] == "DEAD" and rows["node_2"]["ray"] == "ALIVE"
    finally:
        t = time.monotonic()
        stopped = cli("stop", "--dir", str(state_dir), timeout=120)
        if stopped.returncode != 0:  # still clean up, then fail
            devcluster.stop(state_dir)
        timings["stop"] = time.monotonic() - t
        print("\nlocal cluster timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
              + f", total {time.monotonic() - t0:.1f}")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(running(n.pid) for n in state.nodes), [(n.name, n.pid) for n in state.nodes if running(n.pid)]
    assert marked(state.cluster_id) == []
    assert not (state_dir / "cluster.json").exists() and not Path(state.temp_root).exists()
    again = cli("stop", "--dir", str(state_dir), timeout=60)
    assert again.returncode == 0 and "no cluster recorded" in again.stderr
    assert cli("status", "--dir", str(state_dir), timeout=60).returncode == 3
