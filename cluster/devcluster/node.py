"""One node: its `ray start --block` command, environment and launch, and the GCS's view of the nodes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.devcluster.procs import adopt, node_alive, proc_stat, reap
from cluster.devcluster.ray_internals import JOIN_ON_LOOPBACK, NODES_SNIPPET
from cluster.devcluster.state import HOST, LOOPBACK_ENV, MARKER_ENV, ClusterError, ClusterState, NodeState, save_state


def ray_cli() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if not found:
        raise ClusterError("the `ray` command was not found beside this Python or on PATH (pip install 'ray[default]')")
    return found


def ray_python() -> str:
    """The interpreter the `ray` CLI runs with (to read the GCS's node table)."""
    ray = ray_cli()
    if Path(ray).parent == Path(sys.executable).parent:
        return sys.executable
    with contextlib.suppress(OSError):
        with open(ray, "rb") as f:
            first = f.readline().decode(errors="replace")
        if first.startswith("#!") and "python" in first:
            parts = first[2:].split()
            if Path(parts[0]).name == "env" and len(parts) > 1:
                return shutil.which(parts[1]) or sys.executable
            return parts[0]
    return sys.executable




def ray_nodes(state: ClusterState, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The GCS's view: one dict a node (node_id, alive, node_manager_port, is_head, resources)."""
    try:
        out = subprocess.run([ray_python(), "-c", NODES_SNIPPET, state.gcs_address], check=False,
                             env=state.client_env(),
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"reading the node table from {state.gcs_address} timed out after {timeout:.0f} s") from None
    lines = out.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ClusterError(f"reading the node table failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}") from None
    if "error" in data:
        raise ClusterError(data["error"])
    return data["nodes"]


def gcs_view(state: ClusterState, nodes: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Our node index -> the GCS's entry for it (matched on the node manager port we gave it)."""
    by_port = {n.ports["node_manager"]: n.index for n in state.nodes}
    view: dict[int, dict[str, Any]] = {}
    for entry in nodes:
        index = by_port.get(entry["node_manager_port"])
        if index is not None and (index not in view or entry["alive"]):
            view[index] = entry
    return view



def write_token(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(secrets.token_hex(32) + "\n")


def tail(path: str, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])



def ray_start_cmd(state: ClusterState, node: NodeState, object_store_mb: int, dashboard: bool) -> list[str]:
    p = node.ports
    ray = [ray_cli()] if node.role == "head" else [ray_python(), "-c", JOIN_ON_LOOPBACK]
    cmd = [*ray, "start", "--block", "--disable-usage-stats", f"--node-ip-address={HOST}",
           f"--num-cpus={node.cpus}", f"--resources={json.dumps(node.resources)}", f"--temp-dir={node.temp_dir}",
           f"--node-manager-port={p['node_manager']}", f"--object-manager-port={p['object_manager']}",
           f"--min-worker-port={p['min_worker']}", f"--max-worker-port={p['max_worker']}",
           f"--dashboard-agent-listen-port={p['dashboard_agent_listen']}",
           f"--dashboard-agent-grpc-port={p['dashboard_agent_grpc']}",
           f"--metrics-export-port={p['metrics_export']}", f"--runtime-env-agent-port={p['runtime_env_agent']}"]
    if object_store_mb > 0:
        cmd.append(f"--object-store-memory={object_store_mb * 1024 * 1024}")
    if node.role == "head":
        cmd += ["--head", f"--port={p['gcs']}", f"--ray-client-server-port={p['client_server']}",
                f"--dashboard-host={HOST}", f"--include-dashboard={'true' if dashboard else 'false'}"]
        if dashboard:
            cmd.append(f"--dashboard-port={p['dashboard']}")
    else:
        cmd.append(f"--address={state.gcs_address}")
    return cmd


def node_env(state: ClusterState, node: NodeState, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    # `python` in a job's entrypoint must be the interpreter the nodes run (the venv's, even if not activated).
    bin_dir = str(Path(ray_cli()).parent)
    env["PATH"] = os.pathsep.join([bin_dir] + [d for d in env.get("PATH", "").split(os.pathsep) if d and d != bin_dir])
    env.update({
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # else SIGTERM waits up to 30 s draining the node
        LOOPBACK_ENV: "0",  # every process of the node keeps 127.0.0.1, so binds loopback (see the docstring)
        MARKER_ENV: f"{state.cluster_id}:{node.index}",
    })
    if node.role == "head":
        env.update({f"RAY_health_check_{k}": str(v) for k, v in state.health_check.items()})
        env["AUTOSCALER_METRIC_PORT"] = str(node.ports["autoscaler_metrics"])
        env["DASHBOARD_METRIC_PORT"] = str(node.ports["dashboard_metrics"])
    return env


def launch(state: ClusterState, node: NodeState, token: str, object_store_mb: int, dashboard: bool) -> None:
    cmd = ray_start_cmd(state, node, object_store_mb, dashboard)
    Path(node.temp_dir).mkdir(parents=True, exist_ok=True)
    with open(node.log, "ab") as log:
        shown = [ray_cli(), *cmd[3:], "# through JOIN_ON_LOOPBACK"] if node.role == "worker" else cmd
        log.write(f"$ {shlex.join(shown)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=node_env(state, node, token), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    adopt(proc)
    stat = proc_stat(proc.pid)
    node.pid, node.pgid = proc.pid, proc.pid  # start_new_session: session id == group id == pid
    node.start_time = stat.starttime if stat else 0
    state.nodes.append(node)
    save_state(state)


def wait_registered(state: ClusterState, indices: list[int], deadline: float, log: Callable[[str], None]) -> None:
    last_error = "no answer yet"
    while True:
        reap()
        for i in indices:
            node = state.nodes[i]
            if not node_alive(node):
                raise ClusterError(f"{node.name} ({node.role}) exited during start; its log {node.log}:\n"
                                   f"{tail(node.log)}")
        try:
            view = gcs_view(state, ray_nodes(state, timeout=15))
            missing = [i for i in indices if not view.get(i, {}).get("alive")]
            if not missing:
                return
            last_error = "not registered yet: " + ", ".join(state.nodes[i].name for i in missing)
        except ClusterError as e:
            last_error = str(e)
        if time.monotonic() >= deadline:
            tails = "\n".join(f"  {state.nodes[i].name}: {state.nodes[i].log}\n{tail(state.nodes[i].log, 10)}"
                              for i in indices)
            raise ClusterError(f"the cluster did not come up in time ({last_error})\n{tails}")
        time.sleep(0.5)

