"""A local multi-node Ray cluster on one machine, for development and fault tests.

    ganimator-cluster start --workers 2 [--cpus-per-node 1] [--head-cpus 0] [--dir /tmp/gs-cluster]
                            [--port P] [--dashboard-port D] [--no-dashboard] [--timeout 120]
    ganimator-cluster status [--dir ...]          # exit 0: all nodes alive, 1: some dead, 3: none recorded
    ganimator-cluster kill-worker N [--dir ...]   # SIGKILL worker node N (1..workers), for fault tests
    ganimator-cluster stop [--dir ...]            # TERM, wait, KILL every node; idempotent

(`python -m sweeps.devcluster ...` is the same command.)

Every node is a `ray start --block` in its own session and process group, with its own ports (all
picked free from one block in 20000-31999, outside Ray's default worker ports and the kernel's
ephemeral range), its own `--temp-dir` (/tmp/ray-XXXXXXXX/n<i>, short enough for Unix sockets)
and a custom resource `node_<i>` (head: node_0, workers node_1..node_N) so tests can pin work.
The state file `<dir>/cluster.json` records each node's role, PID, PGID, start time, ports and
log. `<dir>/auth_token` (mode 0600) holds the cluster's token; clients need

    export RAY_ADDRESS=127.0.0.1:<gcs port> RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(cat <dir>/auth_token) \
           RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

(the last keeps 127.0.0.1 as it is: without it Ray turns a loopback address into the machine's
IP, where nothing of this cluster listens).

Only processes this module started are ever signalled: a node's processes are its process group,
its session (Ray's core workers put themselves in their own process group but stay in the
session), and anything carrying the cluster's GS_LOCAL_CLUSTER marker in its environment.

Ray 2.60 facts this relies on (checked on the 2-core dev machine):
- Ray rewrites a loopback address (`--node-ip-address`, `--address`, `RAY_ADDRESS`) to the
  machine's IP unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (its single-machine mode), and then
  its GCS, raylet, object manager, core workers and metrics ports listen on all interfaces. With
  the node address kept at 127.0.0.1 they all bind loopback: the GCS, raylets and workers bind
  127.0.0.1 when the node address is exactly that, and the dashboard agent, runtime env agent and
  the three Prometheus ports (metrics export, autoscaler, dashboard) bind loopback when it is a
  loopback address. So every node and client runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (in
  the nodes' and `client_env()`'s environment). In that mode `ray start --address` refuses to
  join a node, so worker nodes run Ray's CLI through `JOIN_ON_LOOPBACK`, which lets it join and
  keeps 127.0.0.1. Nothing of the cluster listens beyond loopback (tests/test_local_cluster.py
  checks every socket); the metrics ports answer local users without the token.
- On SIGTERM, `ray start --block` first drains the node for up to 30 s
  (RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S); the nodes run with 0 so stop takes ~1-2 s a node.
- The GCS notices a dead node only through health checks (default 3 s period x 5 failures, ~15 s).
  The head runs with env RAY_health_check_period_ms / _timeout_ms / _failure_threshold (defaults
  here 1000 / 5000 / 5: a SIGKILLed node is marked DEAD in ~5 s, while a stalled-but-alive raylet
  still has ~30 s before it is declared dead).
- The autoscaler monitor and dashboard open Prometheus ports 44217 / 44227 by default; they are
  moved into this cluster's port block (AUTOSCALER_METRIC_PORT, DASHBOARD_METRIC_PORT) so that a
  second Ray on the machine does not collide.
- Worker nodes accept their own `--temp-dir` (without it they reuse the head's).

Why not Ray's own `ray.cluster_utils.Cluster`: given node_ip_address=127.0.0.1 and the token in
its process's environment it too binds loopback only and checks the token, but its nodes are
children of the one Python process that made it, known only to that process's objects (and by
default they die with it), so no later `status`, `kill-worker` or `stop` can reach them; it also
writes /tmp/ray/ray_current_cluster, where a plain `ray.init()` anywhere on the machine looks
for a cluster to join, and takes the dashboard's default port 8265.

From Python:

    from sweeps import devcluster
    state = devcluster.start(workers=2, cpus_per_node=1, head_cpus=0, state_dir="/tmp/gs-cluster")
    env = state.client_env()          # RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN for a driver subprocess
    devcluster.kill_worker("/tmp/gs-cluster", 1)
    devcluster.stop("/tmp/gs-cluster")

Only the standard library is imported; Ray is used through its CLI (and small `python -c`s in
Ray's interpreter: to read the GCS's node table, and to start worker nodes on loopback).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ganimator.files import atomic_write_text
from sweeps._compat import JOIN_ON_LOOPBACK

DEFAULT_DIR = "/tmp/gs-cluster"
STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
LOCK_FILE = ".lock"
MARKER_ENV = "GS_LOCAL_CLUSTER"  # value: "<cluster id>:<node index>", inherited by every node process
TEMP_MARKER = ".gs-local-cluster"  # file in the temp root holding the cluster id (checked before rmtree)
PORT_RANGE = (20000, 32000)  # below the ephemeral range (32768+), above Ray's default worker ports (10002-19999)
HOST = "127.0.0.1"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps a loopback address as it is


class ClusterError(RuntimeError):
    """A cluster could not be started, inspected or stopped; the message says why."""


# --------------------------------------------------------------------------------------------
# state


@dataclasses.dataclass
class NodeState:
    index: int
    role: str  # "head" | "worker"
    pid: int
    pgid: int
    start_time: int  # /proc/<pid>/stat starttime (clock ticks since boot): guards against PID reuse
    cpus: int
    resources: dict[str, float]
    ports: dict[str, int]
    temp_dir: str
    log: str
    killed_at: float | None = None

    @property
    def name(self) -> str:
        return f"node_{self.index}"


@dataclasses.dataclass
class ClusterState:
    state_dir: str
    cluster_id: str
    gcs_address: str
    dashboard_url: str | None
    token_file: str
    temp_root: str
    created: float
    health_check: dict[str, int]
    nodes: list[NodeState]

    @property
    def head(self) -> NodeState:
        return self.nodes[0]

    @property
    def workers(self) -> list[NodeState]:
        return [n for n in self.nodes if n.role == "worker"]

    def token(self) -> str:
        return Path(self.token_file).read_text().strip()

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a client (driver, `ray status`, `ray job submit`) of this cluster."""
        env = dict(os.environ if base is None else base)
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.update(RAY_ADDRESS=self.gcs_address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token())
        env[LOOPBACK_ENV] = "0"  # else Ray dials the machine's IP for 127.0.0.1, where the GCS does not listen
        return env

    def export_lines(self) -> list[str]:
        """Shell lines for a client; the token is read from its file, never printed."""
        lines = [f"export RAY_ADDRESS={self.gcs_address} RAY_AUTH_MODE=token "
                 + f"RAY_AUTH_TOKEN=$(cat {shlex.quote(self.token_file)}) {LOOPBACK_ENV}=0"]
        if self.dashboard_url:
            lines.append(f"export RAY_API_SERVER_ADDRESS={self.dashboard_url}   # for `ray job submit`")
        return lines

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        nodes = [NodeState(**n) for n in data.pop("nodes")]
        return cls(nodes=nodes, **data)


def _state_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: str | os.PathLike = DEFAULT_DIR) -> ClusterState | None:
    """The recorded cluster in `state_dir`, or None when none is recorded."""
    path = _state_path(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ClusterError(f"{path} is unreadable ({e}); remove it once no node from it is running") from e
    return ClusterState.from_json(data)


def _save_state(state: ClusterState) -> None:
    atomic_write_text(_state_path(state.state_dir), json.dumps(state.to_json(), indent=2) + "\n")


@contextlib.contextmanager
def _locked(state_dir: str | os.PathLike) -> Iterator[None]:
    """One start/stop/kill-worker at a time per state dir."""
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(Path(state_dir) / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ClusterError(f"another start/stop/kill-worker is running on {state_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# processes (via /proc; only ever ones this module started)


@dataclasses.dataclass
class _Stat:
    state: str
    ppid: int
    pgrp: int
    session: int
    starttime: int


def _stat(pid: int) -> _Stat | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # fields[0] is field 3 (state) of proc(5)
    return _Stat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def _marker(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = MARKER_ENV.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def _is_running(stat: _Stat | None) -> bool:
    return stat is not None and stat.state not in ("Z", "X", "x")


def node_alive(node: NodeState) -> bool:
    """Whether the node's `ray start` process (recorded PID, same start time) is running."""
    stat = _stat(node.pid)
    return _is_running(stat) and stat.starttime == node.start_time


def _leader_is_ours(node: NodeState) -> bool:
    """False when the recorded PID now belongs to another process (so its group/session id may too)."""
    stat = _stat(node.pid)
    return stat is None or stat.starttime == node.start_time


def node_processes(state: ClusterState, node: NodeState) -> list[int]:
    """Running PIDs of a node: its process group and session, and its marked descendants."""
    mark = f"{state.cluster_id}:{node.index}"
    ids_ours = _leader_is_ours(node)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == os.getpid():
            continue
        stat = _stat(pid)
        if not _is_running(stat):
            continue
        m = _marker(pid)
        in_group = (ids_ours and node.start_time > 0 and node.pgid in (stat.pgrp, stat.session)
                    and stat.starttime >= node.start_time)
        if m == mark or (m is None and in_group):
            pids.append(pid)
    return pids


_children: dict[int, subprocess.Popen] = {}  # nodes started by this process, reaped once they end


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def _signal_node(state: ClusterState, node: NodeState, sig: int) -> list[int]:
    pids = node_processes(state, node)
    if node_alive(node):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return pids


def _wait_gone(state: ClusterState, nodes: list[NodeState], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        _reap()
        left = [pid for n in nodes for pid in node_processes(state, n)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _terminate(state: ClusterState, nodes: list[NodeState], grace: float) -> list[int]:
    """TERM the nodes, wait up to `grace` s, KILL what is left. Returns the PIDs signalled."""
    signalled: set[int] = set()
    for n in nodes:
        signalled.update(_signal_node(state, n, signal.SIGTERM))
    left = _wait_gone(state, nodes, grace)
    for _ in range(3):
        if not left:
            break
        for n in nodes:
            signalled.update(_signal_node(state, n, signal.SIGKILL))
        left = _wait_gone(state, nodes, 5.0)
    if left:
        raise ClusterError(f"processes of the cluster in {state.state_dir} survived SIGKILL: {sorted(left)}")
    return sorted(signalled)


# --------------------------------------------------------------------------------------------
# Ray


def _ray_cli() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if not found:
        raise ClusterError("the `ray` command was not found beside this Python or on PATH (pip install 'ray[default]')")
    return found


def _ray_python() -> str:
    """The interpreter the `ray` CLI runs with (to read the GCS's node table)."""
    ray = _ray_cli()
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


# Reads the node table straight from the GCS (no driver, no job): ~0.5 s. Falls back to ray.nodes().
_NODES_SNIPPET = r"""
import json, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=2).close()
except OSError as e:
    print(json.dumps({"error": f"GCS {sys.argv[1]} unreachable: {e}"})); sys.exit(0)
try:
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo
    infos = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)
    nodes = [{"node_id": k.hex(), "alive": v.state == GcsNodeInfo.GcsNodeState.ALIVE,
              "node_manager_port": v.node_manager_port, "is_head": v.is_head_node,
              "resources": dict(v.resources_total)} for k, v in infos.items()]
except (ImportError, AttributeError, TypeError):
    import ray
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    nodes = [{"node_id": n["NodeID"], "alive": n["Alive"], "node_manager_port": n["NodeManagerPort"],
              "is_head": "node:__internal_head__" in n["Resources"], "resources": n["Resources"]}
             for n in ray.nodes()]
print(json.dumps({"nodes": nodes}))
"""


def ray_nodes(state: ClusterState, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The GCS's view: one dict a node (node_id, alive, node_manager_port, is_head, resources)."""
    try:
        out = subprocess.run([_ray_python(), "-c", _NODES_SNIPPET, state.gcs_address], check=False,
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


def _ray_view(state: ClusterState, nodes: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Our node index -> the GCS's entry for it (matched on the node manager port we gave it)."""
    by_port = {n.ports["node_manager"]: n.index for n in state.nodes}
    view: dict[int, dict[str, Any]] = {}
    for entry in nodes:
        index = by_port.get(entry["node_manager_port"])
        if index is not None and (index not in view or entry["alive"]):
            view[index] = entry
    return view


# --------------------------------------------------------------------------------------------
# ports


def _port_free(port: int) -> bool:
    # Free on every interface, not only loopback: another program's wildcard socket would clash too
    # (bind only, no listen).
    for host in ("0.0.0.0", HOST):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _allocate_ports(count: int, avoid: set[int], tries: int = 200) -> list[int]:
    """`count` consecutive free ports in PORT_RANGE (skipping `avoid`)."""
    lo, hi = PORT_RANGE
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(lo, hi - count - len(avoid))
        ports, p = [], base
        while len(ports) < count and p < hi:
            if p not in avoid:
                ports.append(p)
            p += 1
        if len(ports) == count and all(_port_free(p) for p in ports):
            return ports
    raise ClusterError(f"no block of {count} free ports found in {lo}-{hi - 1}")


def _node_ports(pool: Iterator[int], worker_ports: int) -> dict[str, int]:
    ports = {name: next(pool) for name in ("node_manager", "object_manager", "dashboard_agent_listen",
                                           "dashboard_agent_grpc", "metrics_export", "runtime_env_agent")}
    ports["min_worker"] = next(pool)
    for _ in range(worker_ports - 2):
        next(pool)
    ports["max_worker"] = next(pool)
    return ports


# --------------------------------------------------------------------------------------------
# start / stop / kill


def _write_token(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(secrets.token_hex(32) + "\n")


def _tail(path: str, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _ray_start_cmd(state: ClusterState, node: NodeState, object_store_mb: int, dashboard: bool) -> list[str]:
    p = node.ports
    ray = [_ray_cli()] if node.role == "head" else [_ray_python(), "-c", JOIN_ON_LOOPBACK]
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


def _node_env(state: ClusterState, node: NodeState, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    # `python` in a job's entrypoint must be the interpreter the nodes run (the venv's, even if not activated).
    bin_dir = str(Path(_ray_cli()).parent)
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


def _launch(state: ClusterState, node: NodeState, token: str, object_store_mb: int, dashboard: bool) -> None:
    cmd = _ray_start_cmd(state, node, object_store_mb, dashboard)
    Path(node.temp_dir).mkdir(parents=True, exist_ok=True)
    with open(node.log, "ab") as log:
        shown = [_ray_cli(), *cmd[3:], "# through JOIN_ON_LOOPBACK"] if node.role == "worker" else cmd
        log.write(f"$ {shlex.join(shown)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=_node_env(state, node, token), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _children[proc.pid] = proc
    stat = _stat(proc.pid)
    node.pid, node.pgid = proc.pid, proc.pid  # start_new_session: session id == group id == pid
    node.start_time = stat.starttime if stat else 0
    state.nodes.append(node)
    _save_state(state)


def _wait_registered(state: ClusterState, indices: list[int], deadline: float, log: Callable[[str], None]) -> None:
    last_error = "no answer yet"
    while True:
        _reap()
        for i in indices:
            node = state.nodes[i]
            if not node_alive(node):
                raise ClusterError(f"{node.name} ({node.role}) exited during start; its log {node.log}:\n"
                                   f"{_tail(node.log)}")
        try:
            view = _ray_view(state, ray_nodes(state, timeout=15))
            missing = [i for i in indices if not view.get(i, {}).get("alive")]
            if not missing:
                return
            last_error = "not registered yet: " + ", ".join(state.nodes[i].name for i in missing)
        except ClusterError as e:
            last_error = str(e)
        if time.monotonic() >= deadline:
            tails = "\n".join(f"  {state.nodes[i].name}: {state.nodes[i].log}\n{_tail(state.nodes[i].log, 10)}"
                              for i in indices)
            raise ClusterError(f"the cluster did not come up in time ({last_error})\n{tails}")
        time.sleep(0.5)


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
    with _locked(state_dir):
        old = load_state(state_dir)
        if old is not None:
            if any(node_processes(old, n) for n in old.nodes):
                raise ClusterError(f"a cluster is already running from {state_dir} (GCS {old.gcs_address}); "
                                   f"stop it first (ganimator-cluster stop --dir {shlex.quote(state_dir)})")
            _stop_locked(old, grace=1.0, log=log)  # stale record: clean up its files

        fixed = {p for p in (port, dashboard_port) if p}
        for p in fixed:
            if not _port_free(p):
                raise ClusterError(f"port {p} is in use")
        per_node = 6 + worker_ports
        pool = iter(_allocate_ports(5 + (workers + 1) * per_node, avoid=fixed))
        head_ports = {"gcs": port or next(pool), "dashboard": dashboard_port or next(pool),
                      "client_server": next(pool), "autoscaler_metrics": next(pool), "dashboard_metrics": next(pool)}
        head_ports.update(_node_ports(pool, worker_ports))

        cluster_id = uuid.uuid4().hex
        temp_root = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # /tmp/ray-XXXXXXXX: sockets stay < 108 bytes
        (Path(temp_root) / TEMP_MARKER).write_text(cluster_id + "\n")
        token_file = Path(state_dir) / TOKEN_FILE
        _write_token(token_file)
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
            return NodeState(index=i, role=role, pid=0, pgid=0, start_time=0, cpus=cpus,
                             resources={f"node_{i}": 1}, ports=ports, temp_dir=f"{temp_root}/n{i}",
                             log=str(logs / f"node_{i}.log"))

        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        try:
            _launch(state, node(0, "head", head_cpus, head_ports), token, object_store_mb, dashboard)
            log(f"head started (pid {state.head.pid}), waiting for the GCS at {state.gcs_address}")
            _wait_registered(state, [0], deadline, log)
            log(f"head up after {time.monotonic() - t0:.1f} s; starting {workers} worker(s)")
            for i in range(1, workers + 1):
                _launch(state, node(i, "worker", cpus_per_node, _node_ports(pool, worker_ports)), token,
                        object_store_mb, dashboard)
            _wait_registered(state, list(range(workers + 1)), deadline, log)
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
    pids = _terminate(state, state.workers, grace) if state.workers else []
    pids += _terminate(state, [state.head], grace) if state.nodes and state.nodes[0].role == "head" else []
    _reap()
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
    with _locked(state_dir):
        state = load_state(state_dir)
        if state is None:
            log(f"no cluster recorded in {state_dir}")
            return False
        _stop_locked(state, grace, log)
        return True


def kill_worker(state_dir: str | os.PathLike = DEFAULT_DIR, n: int = 1) -> list[int]:
    """SIGKILL worker node `n` (its process group, and its core workers in their own groups): a
    node crash. The GCS marks it DEAD after its health checks fail. Returns the PIDs killed."""
    with _locked(state_dir):
        state = load_state(state_dir)
        if state is None:
            raise ClusterError(f"no cluster recorded in {state_dir}")
        workers = {w.index: w for w in state.workers}
        if n not in workers:
            raise ClusterError(f"no worker node {n}: the workers are {sorted(workers) or 'none'}")
        node = workers[n]
        pids = set(_signal_node(state, node, signal.SIGKILL))
        deadline = time.monotonic() + 10
        while (left := node_processes(state, node)) and time.monotonic() < deadline:
            pids.update(_signal_node(state, node, signal.SIGKILL))
            time.sleep(0.1)
        _reap()
        if left:
            raise ClusterError(f"processes of {node.name} survived SIGKILL: {left}")
        node.killed_at = time.time()
        _save_state(state)
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
            view = _ray_view(state, ray_nodes(state, timeout=15))
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


# --------------------------------------------------------------------------------------------
# CLI


def _print_nodes(info: dict[str, Any]) -> None:
    print(f"{'node':8} {'role':6} {'pid':>8} {'pgid':>8} {'cpus':>4}  {'process':7} {'procs':>5}  ray")
    for n in info["nodes"]:
        print(f"{n['name']:8} {n['role']:6} {n['pid']:>8} {n['pgid']:>8} {n['cpus']:>4}  "
              f"{'alive' if n['alive'] else 'dead':7} {n['processes']:>5}  {n['ray'] or '-'}")
    if info["ray_error"]:
        print(f"(GCS view unavailable: {info['ray_error']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganimator-cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"state folder (default {DEFAULT_DIR})")
        return p

    p = with_dir(sub.add_parser("start", help="start a head and N worker nodes"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=1, help="CPUs of each worker node (default 1)")
    p.add_argument("--head-cpus", type=int, default=0, help="CPUs of the head (default 0: no tasks on the head)")
    p.add_argument("--port", type=int, help="GCS port (default: a free one)")
    p.add_argument("--dashboard-port", type=int, help="dashboard / job server port (default: a free one)")
    p.add_argument("--no-dashboard", action="store_true", help="no dashboard (no `ray job submit`; head starts ~1.5 s faster)")
    p.add_argument("--object-store-mb", type=int, default=512, help="object store per node (0: Ray's default)")
    p.add_argument("--worker-ports", type=int, default=50, help="worker ports per node (default 50)")
    p.add_argument("--health-check-period-ms", type=int, default=1000)
    p.add_argument("--health-check-timeout-ms", type=int, default=5000)
    p.add_argument("--health-check-failure-threshold", type=int, default=5)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for every node to register")
    with_dir(sub.add_parser("stop", help="stop every node of the cluster (idempotent)"))
    p = with_dir(sub.add_parser("status", help="nodes alive/dead (exit 0: all alive, 1: some dead, 3: none)"))
    p.add_argument("--json", action="store_true")
    p = with_dir(sub.add_parser("kill-worker", help="SIGKILL worker node N (for fault tests)"))
    p.add_argument("n", type=int)
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        if args.command == "start":
            state = start(args.workers, args.cpus_per_node, args.head_cpus, args.dir, port=args.port,
                          dashboard_port=args.dashboard_port, dashboard=not args.no_dashboard,
                          object_store_mb=args.object_store_mb, worker_ports=args.worker_ports,
                          health_check_period_ms=args.health_check_period_ms,
                          health_check_timeout_ms=args.health_check_timeout_ms,
                          health_check_failure_threshold=args.health_check_failure_threshold,
                          timeout=args.timeout, log=log)
            info = status(state.state_dir, ray_view=False)
            _print_nodes(info)
            print(f"GCS {state.gcs_address}" + (f", dashboard {state.dashboard_url}" if state.dashboard_url else ""))
            print(f"state {_state_path(state.state_dir)}, logs {state.state_dir}/logs, Ray logs {state.temp_root}")
            print("Client environment:")
            for line in state.export_lines():
                print("  " + line)
            return 0
        if args.command == "stop":
            stop(args.dir, log=log)
            return 0
        if args.command == "kill-worker":
            pids = kill_worker(args.dir, args.n)
            print(f"killed worker node {args.n}: {len(pids)} processes ({', '.join(map(str, pids))})")
            return 0
        info = status(args.dir)
        if info is None:
            print(f"no cluster recorded in {args.dir}")
            return 3
        if args.json:
            print(json.dumps({k: v for k, v in info.items() if k != "state"}, indent=2))
        else:
            state = info["state"]
            print(f"cluster in {state.state_dir}: GCS {state.gcs_address}"
                  + (f", dashboard {state.dashboard_url}" if state.dashboard_url else ""))
            _print_nodes(info)
        return 0 if all(n["alive"] for n in info["nodes"]) else 1
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
