"""A local multi-node Ray cluster on one machine, for development and fault tests.

    python -m cluster.devcluster start --workers 2 [--cpus-per-node 1] [--head-cpus 0] [--dir /tmp/gs-cluster]
                                   [--port P] [--dashboard-port D] [--no-dashboard] [--timeout 120]
    python -m cluster.devcluster status [--dir ...]          # exit 0: all alive, 1: some dead, 3: none recorded
    python -m cluster.devcluster kill-worker N [--dir ...]   # SIGKILL worker node N (1..workers), for fault tests
    python -m cluster.devcluster stop [--dir ...]            # TERM, wait, KILL every node; idempotent

from the root of a source checkout (dev tooling: not in the installed wheel). Its modules: `state`
(the state file, token and lock), `procs` (a node's processes), `ports`, `node` (a node's launch and
the GCS's view), `api` (start/stop/kill_worker/status), `ray_internals` (its only private Ray
access) and `__main__` (the command line).

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

Ray 2.60 facts this relies on:
- Ray rewrites a loopback address (`--node-ip-address`, `--address`, `RAY_ADDRESS`) to the
  machine's IP unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (its single-machine mode), and then
  its GCS, raylet, object manager, core workers and metrics ports listen on all interfaces. With
  the node address kept at 127.0.0.1 they all bind loopback: the GCS, raylets and workers bind
  127.0.0.1 when the node address is exactly that, and the dashboard agent, runtime env agent and
  the three Prometheus ports (metrics export, autoscaler, dashboard) bind loopback when it is a
  loopback address. So every node and client runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (in
  the nodes' and `client_env()`'s environment). In that mode `ray start --address` refuses to
  join a node, so worker nodes run Ray's CLI through `sweeps._compat.JOIN_ON_LOOPBACK`, which lets it
  join and keeps 127.0.0.1. Nothing of the cluster listens beyond loopback (tests/test_local_cluster.py
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

    from cluster import devcluster
    state = devcluster.start(workers=2, cpus_per_node=1, head_cpus=0, state_dir="/tmp/gs-cluster")
    env = state.client_env()          # RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN for a driver subprocess
    devcluster.kill_worker("/tmp/gs-cluster", 1)
    devcluster.stop("/tmp/gs-cluster")

Only the standard library (and `ganimator.files`) is imported; Ray is used through its CLI (and small `python -c`s in
Ray's interpreter: to read the GCS's node table, and to start worker nodes on loopback).
"""

from cluster.devcluster.api import kill_worker, start, status, stop
from cluster.devcluster.node import ray_cli, ray_nodes
from cluster.devcluster.procs import node_alive, node_processes
from cluster.devcluster.state import DEFAULT_DIR, MARKER_ENV, ClusterError, ClusterState, NodeState, load_state

__all__ = ["DEFAULT_DIR", "MARKER_ENV", "ClusterError", "ClusterState", "NodeState", "kill_worker", "load_state",
           "node_alive", "node_processes", "ray_cli", "ray_nodes", "start", "status", "stop"]
