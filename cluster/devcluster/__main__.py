"""`python -m cluster.devcluster start | status | kill-worker N | stop` (see the package's docstring)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import cluster.devcluster as devcluster
from cluster.devcluster.api import kill_worker, start, status, stop
from cluster.devcluster.state import DEFAULT_DIR, ClusterError, state_path


def _print_nodes(info: dict[str, Any]) -> None:
    print(f"{'node':8} {'role':6} {'pid':>8} {'pgid':>8} {'cpus':>4}  {'process':7} {'procs':>5}  ray")
    for n in info["nodes"]:
        print(f"{n['name']:8} {n['role']:6} {n['pid']:>8} {n['pgid']:>8} {n['cpus']:>4}  "
              f"{'alive' if n['alive'] else 'dead':7} {n['processes']:>5}  {n['ray'] or '-'}")
    if info["ray_error"]:
        print(f"(GCS view unavailable: {info['ray_error']})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cluster.devcluster", description=devcluster.__doc__.split("\n\n")[0])
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

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
            print(f"state {state_path(state.state_dir)}, logs {state.state_dir}/logs, Ray logs {state.temp_root}")
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
