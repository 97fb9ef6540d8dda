"""Every port of a cluster picked free from one block, outside Ray's default worker ports and the
kernel's ephemeral range, so that a second Ray on the machine does not collide."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

from cluster.devcluster.state import HOST, ClusterError

PORT_RANGE = (20000, 32000)  # below the ephemeral range (32768+), above Ray's default worker ports (10002-19999)


def port_free(port: int) -> bool:
    # Free on every interface, not only loopback: another program's wildcard socket would clash too
    # (bind only, no listen).
    for host in ("0.0.0.0", HOST):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def allocate_ports(count: int, avoid: set[int], tries: int = 200) -> list[int]:
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
        if len(ports) == count and all(port_free(p) for p in ports):
            return ports
    raise ClusterError(f"no block of {count} free ports found in {lo}-{hi - 1}")


def node_ports(pool: Iterator[int], worker_ports: int) -> dict[str, int]:
    ports = {name: next(pool) for name in ("node_manager", "object_manager", "dashboard_agent_listen",
                                           "dashboard_agent_grpc", "metrics_export", "runtime_env_agent")}
    ports["min_worker"] = next(pool)
    for _ in range(worker_ports - 2):
        next(pool)
    ports["max_worker"] = next(pool)
    return ports



def cluster_ports(workers: int, worker_ports: int, port: int | None,
                  dashboard_port: int | None) -> tuple[dict[str, int], Iterator[int]]:
    """The head's ports (`port` and `dashboard_port` where given) and a pool holding every worker's."""
    fixed = {p for p in (port, dashboard_port) if p}
    for p in fixed:
        if not port_free(p):
            raise ClusterError(f"port {p} is in use")
    pool = iter(allocate_ports(5 + (workers + 1) * (6 + worker_ports), avoid=fixed))
    head = {"gcs": port or next(pool), "dashboard": dashboard_port or next(pool), "client_server": next(pool),
            "autoscaler_metrics": next(pool), "dashboard_metrics": next(pool)}
    return {**head, **node_ports(pool, worker_ports)}, pool
