"""The cluster's record: `<dir>/cluster.json` (each node's role, PID, PGID, start time, ports, log),
`<dir>/auth_token`, and the lock that lets one start/stop/kill-worker run at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ganimator.files import atomic_write_text

DEFAULT_DIR = "/tmp/gs-cluster"
STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
LOCK_FILE = ".lock"
MARKER_ENV = "GS_LOCAL_CLUSTER"  # value: "<cluster id>:<node index>", inherited by every node process
TEMP_MARKER = ".gs-local-cluster"  # file in the temp root holding the cluster id (checked before rmtree)
HOST = "127.0.0.1"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps a loopback address as it is


class ClusterError(RuntimeError):
    """A cluster could not be started, inspected or stopped; the message says why."""



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


def state_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: str | os.PathLike = DEFAULT_DIR) -> ClusterState | None:
    """The recorded cluster in `state_dir`, or None when none is recorded."""
    path = state_path(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ClusterError(f"{path} is unreadable ({e}); remove it once no node from it is running") from e
    return ClusterState.from_json(data)


def save_state(state: ClusterState) -> None:
    atomic_write_text(state_path(state.state_dir), json.dumps(state.to_json(), indent=2) + "\n")


@contextlib.contextmanager
def locked(state_dir: str | os.PathLike) -> Iterator[None]:
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

