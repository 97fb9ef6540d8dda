"""start, stop, kill_worker and status: each takes the state folder's lock."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.devcluster.node import gcs_view, launch, ray_nodes, wait_registered, write_token
from cluster.devcluster.ports import cluster_ports, node_ports
from cluster.devcluster.procs import node_alive, node_processes, reap, signal_node, terminate
from cluster.devcluster.state import (DEFAULT_DIR, HOST, STATE_FILE, TEMP_MARKER, TOKEN_FILE, ClusterError,
                                      ClusterState, NodeState, load_state, locked, save_state)


def start(workers: int = 2, cpus_per_node: int = 1, head_cpus: int = 0, state_dir: str | os.PathLike = DEFAULT_DIR,
          *, port: int | None = None, dashboard_port: int | None = None, dashboard: bool = True,
          object_store_mb: int = 512, worker_ports: int = 50, health_check_period_ms: int = 1000,
          health_check_timeout_ms: int = 5000, health_check_failure_threshold: int = 5,
          timeout: float = 120.0, log: Callable[[str], None] = lambda s: None) -> ClusterState:
    """Start a head and `workers` worker nodes and wait until the GCS has every one registered.

    On any failure (a node exits, the timeout passes, Ctrl-C) everything started is stopped and
    ClusterError (or the interrupt) is raised.
    """
    if workers < 0 or cpus_per_node < 0 or head_cpus < 0:
        raise ClusterError("--workers, --cpus-per-node and --head-cpus must be >= 0")
    if worker_ports < 4:
        raise ClusterError("--worker-ports must be at least 4")
    state_dir = str(Path(state_dir).resolve())
    with locked(state_dir):
        old = load_state(state_dir)
        if old is not None:
            if any(node_processes(old, n) for n in old.nodes):
                raise ClusterError(f"a cluster is already running from {state_dir} (GCS {old.gcs_address}); "
                                   f"stop it first (python -m cluster.devcluster stop --dir {shlex.quote(state_dir)})")
            _stop_locked(old, grace=1.0, log=log)  # stale record: clean up its files

        head_ports, pool = cluster_ports(workers, worker_ports, port, dashboard_port)

        cluster_id = uuid.uuid4().hex
        temp_root = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # /tmp/ray-XXXXXXXX: sockets stay < 108 bytes
        (Path(temp_root) / TEMP_MARKER).write_text(cluster_id + "\n")
        token_file = Path(state_dir) / TOKEN_FILE
        write_token(token_file)
        logs = Path(state_dir) / "logs"
        logs.mkdir(exist_ok=True)
        state = ClusterState(
            state_dir=state_dir, cluster_id=cluster_id, gcs_address=f"{HOST}:{head_ports['gcs']}",
            dashboard_url=f"http://{HOST}:{head_ports['dashboard']}" if dashboard else None,
            token_file=str(token_file), temp_root=temp_root, created=time.time(),
            health_check={"period_ms": health_check_period_ms, "timeout_ms": health_check_timeout_ms,
                          "failure_threshold": health_check_failure_threshold},
            nodes=[])
        token = state.token()

        def node(i: int, role: str, cpus: int, ports: dict[str, int]) -> NodeState:
            (logs / f"node_{i}.log").write_bytes(b"")
            return NodeState(index=i, role=role, pid=0, pgid=0, start_time=0, cpus=cpus, resources={f"node_{i}": 1},
                             ports=ports, temp_dir=f"{temp_root}/n{i}", log=str(logs / f"node_{i}.log"))

        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        try:
            launch(state, node(0, "head", head_cpus, head_ports), token, object_store_mb, dashboard)
            log(f"head started (pid {state.head.pid}), waiting for the GCS at {state.gcs_address}")
            wait_registered(state, [0], deadline, log)
            log(f"head up after {time.monotonic() - t0:.1f} s; starting {workers} worker(s)")
            for i in range(1, workers + 1):
                launch(state, node(i, "worker", cpus_per_node, node_ports(pool, worker_ports)), token,
                        object_store_mb, dashboard)
            wait_registered(state, list(range(workers + 1)), deadline, log)
            log(f"all {workers + 1} nodes registered after {time.monotonic() - t0:.1f} s")
        except BaseException:
            with contextlib.suppress(Exception):
                _stop_locked(state, grace=5.0, log=log)
            raise
        return state


def _remove_temp_root(state: ClusterState) -> None:
    root = Path(state.temp_root)
    try:
        ours = (root / TEMP_MARKER).read_text().strip() == state.cluster_id
    except OSError:
        return
    if ours and root.parent == Path("/tmp") and root.name.startswith("ray-"):
        shutil.rmtree(root, ignore_errors=True)


def _stop_locked(state: ClusterState, grace: float, log: Callable[[str], None]) -> list[int]:
    # Workers first (the head still up sees them leave), then the head.
    pids = terminate(state, state.workers, grace) if state.workers else []
    pids += terminate(state, [state.head], grace) if state.nodes and state.nodes[0].role == "head" else []
    reap()
    _remove_temp_root(state)
    for name in (STATE_FILE, TOKEN_FILE):
        with contextlib.suppress(FileNotFoundError):
            (Path(state.state_dir) / name).unlink()
    log(f"stopped {len(state.nodes)} node(s) ({len(pids)} processes signalled)")
    return pids


def stop(state_dir: str | os.PathLike = DEFAULT_DIR, grace: float = 15.0,
         log: Callable[[str], None] = lambda s: None) -> bool:
    """Stop every recorded node (TERM its process group and session, wait `grace` s, KILL), remove
    the state file and token. Returns False when no cluster was recorded (stop is idempotent)."""
    with locked(state_dir):
        state = load_state(state_dir)
        if state is None:
            log(f"no cluster recorded in {state_dir}")
            return False
        _stop_locked(state, grace, log)
        return True


def kill_worker(state_dir: str | os.PathLike = DEFAULT_DIR, n: int = 1) -> list[int]:
    """SIGKILL worker node `n` (its process group, and its core workers in their own groups): a
    node crash. The GCS marks it DEAD after its health checks fail. Returns the PIDs killed."""
    with locked(state_dir):
        state = load_state(state_dir)
        if state is None:
            raise ClusterError(f"no cluster recorded in {state_dir}")
        workers = {w.index: w for w in state.workers}
        if n not in workers:
            raise ClusterError(f"no worker node {n}: the workers are {sorted(workers) or 'none'}")
        node = workers[n]
        pids = set(signal_node(state, node, signal.SIGKILL))
        deadline = time.monotonic() + 10
        while (left := node_processes(state, node)) and time.monotonic() < deadline:
            pids.update(signal_node(state, node, signal.SIGKILL))
            time.sleep(0.1)
        reap()
        if left:
            raise ClusterError(f"processes of {node.name} survived SIGKILL: {left}")
        node.killed_at = time.time()
        save_state(state)
        return sorted(pids)


def status(state_dir: str | os.PathLike = DEFAULT_DIR, ray_view: bool = True) -> dict[str, Any] | None:
    """Each node's process state (and, when the head is up, the GCS's view), or None if none recorded."""
    state = load_state(state_dir)
    if state is None:
        return None
    view: dict[int, dict[str, Any]] = {}
    ray_error = None
    if ray_view and node_alive(state.head):
        try:
            view = gcs_view(state, ray_nodes(state, timeout=15))
        except ClusterError as e:
            ray_error = str(e)
    nodes = []
    for n in state.nodes:
        entry = view.get(n.index)
        nodes.append({"index": n.index, "name": n.name, "role": n.role, "pid": n.pid, "pgid": n.pgid,
                      "cpus": n.cpus, "alive": node_alive(n), "processes": len(node_processes(state, n)),
                      "ray": None if entry is None else ("ALIVE" if entry["alive"] else "DEAD"),
                      "ray_node_id": None if entry is None else entry["node_id"], "killed_at": n.killed_at})
    return {"state": state, "nodes": nodes, "ray_error": ray_error}

