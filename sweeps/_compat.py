"""Every use the sweeps make of Ray's private modules, in one place, for the Ray versions tried.

A local Ray is kept on 127.0.0.1 by Ray's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
the default on macOS and Windows): without it, Ray swaps a loopback node address for the
machine's IP, and its GCS, raylet, workers, agents and metrics ports become reachable from the
network. Ray reads that variable into `ray._private.ray_constants` at import, and its CLI refuses
to join a node in that mode and resolves 127.0.0.1 through `ray._private.services`: these
private names are what the patches below touch. A Ray release may move them; pyproject.toml pins
Ray below the first untried version, and tests/test_compat.py fails, naming this module, on a
version outside TRIED.
"""
from __future__ import annotations

import os
from importlib.metadata import version

TRIED = ("2.60", "2.60")  # the oldest and newest Ray minor versions these patches were run with


def untried_ray() -> str | None:
    """Ray's version when it is outside TRIED, else None."""
    installed = version("ray")
    low, high = (tuple(int(p) for p in v.split(".")) for v in TRIED)
    return None if low <= tuple(int(p) for p in installed.split(".")[:2]) <= high else installed


def keep_local_ray_on_loopback() -> None:
    """Before `ray.init(address="local", _node_ip_address="127.0.0.1")`: every process of the new
    Ray binds loopback. Its processes read the variable; this one read it at import, hence the
    constant too."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


# `python -c JOIN_ON_LOOPBACK start ...` is `ray start` for a worker node in single-machine mode
# (the variable above in its environment, inherited by the node's processes so that they keep
# 127.0.0.1): it lets the CLI join such a node and keeps loopback addresses as given.
JOIN_ON_LOOPBACK = r"""
import sys
from ray._private import ray_constants, services
ray_constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""
