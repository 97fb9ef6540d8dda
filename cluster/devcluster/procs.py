"""A node's processes, found through /proc and signalled: only ever ones this package started (its
process group, its session, or the cluster's marker in their environment)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

from cluster.devcluster.state import MARKER_ENV, ClusterError, ClusterState, NodeState


@dataclasses.dataclass
class _Stat:
    state: str
    ppid: int
    pgrp: int
    session: int
    starttime: int


def proc_stat(pid: int) -> _Stat | None:
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
    stat = proc_stat(node.pid)
    return _is_running(stat) and stat.starttime == node.start_time


def _leader_is_ours(node: NodeState) -> bool:
    """False when the recorded PID now belongs to another process (so its group/session id may too)."""
    stat = proc_stat(node.pid)
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
        stat = proc_stat(pid)
        if not _is_running(stat):
            continue
        m = _marker(pid)
        in_group = (ids_ours and node.start_time > 0 and node.pgid in (stat.pgrp, stat.session)
                    and stat.starttime >= node.start_time)
        if m == mark or (m is None and in_group):
            pids.append(pid)
    return pids


_children: dict[int, subprocess.Popen] = {}  # nodes started by this process, reaped once they end



def adopt(proc: subprocess.Popen) -> None:
    """Keep a node this process started, to reap it once it ends."""
    _children[proc.pid] = proc


def reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def signal_node(state: ClusterState, node: NodeState, sig: int) -> list[int]:
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
        reap()
        left = [pid for n in nodes for pid in node_processes(state, n)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def terminate(state: ClusterState, nodes: list[NodeState], grace: float) -> list[int]:
    """TERM the nodes, wait up to `grace` s, KILL what is left. Returns the PIDs signalled."""
    signalled: set[int] = set()
    for n in nodes:
        signalled.update(signal_node(state, n, signal.SIGTERM))
    left = _wait_gone(state, nodes, grace)
    for _ in range(3):
        if not left:
            break
        for n in nodes:
            signalled.update(signal_node(state, n, signal.SIGKILL))
        left = _wait_gone(state, nodes, 5.0)
    if left:
        raise ClusterError(f"processes of the cluster in {state.state_dir} survived SIGKILL: {sorted(left)}")
    return sorted(signalled)

