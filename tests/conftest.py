import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Resume's record of what each sweep wrote (sweeps/trust.py) goes to a folder of this test session,
# shared by every command the tests run, and never to the user's own ~/.local/state.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="ganimator-test-state-")
atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], ignore_errors=True)
CLIPS = ["Salsa-Dancing-6.bvh", "Walk-In-Circle.bvh", "Crab-dance-long.bvh", "proud.bvh", "normal.bvh"]


def data_dir() -> Path:
    return Path(os.environ.get("GANIMATOR_TEST_DATA", ROOT.parent / "shared" / "data" / "bvh"))


@pytest.fixture(scope="session")
def clip():
    """Path of a real clip; a missing clip fails the test (never a skip)."""

    def get(name: str) -> Path:
        # Flat (as in ../shared/data/bvh) or as PeizhuoLi/ganimator's data/ folder lays them out (Joe/Salsa...).
        found = sorted(data_dir().rglob(name)) if data_dir().is_dir() else []
        if not found:
            pytest.fail(f"test clip {name} is not in {data_dir()}: set GANIMATOR_TEST_DATA to the data/ folder of "
                        "PeizhuoLi/ganimator (see the README)")
        return found[0]

    return get


def clean_env(tmp: Path, **extra) -> dict:
    """No ClearML configuration at all: a fresh home, no CLEARML_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    return {**env, "HOME": str(tmp / "home"), "CLEARML_CACHE_DIR": str(tmp / "clearml"), **extra}


def offline_sessions(cache: Path) -> list[dict]:
    """Every offline ClearML session under a cache folder, as {'task', 'scalars', 'plots', 'folder'}."""
    sessions = []
    for folder in sorted(p for p in (cache / "offline").iterdir() if p.is_dir()):
        events = []
        if (folder / "metrics.jsonl").exists():
            for line in (folder / "metrics.jsonl").read_text().splitlines():
                batch = json.loads(line)
                events += batch if isinstance(batch, list) else [batch]
        scalars = {}
        for e in events:
            if e["type"] == "training_stats_scalar":
                scalars.setdefault((e["metric"], e["variant"]), []).append((e["iter"], e["value"]))
        plots = {(e["metric"], e["variant"]): json.loads(e["plot_str"]) for e in events if e["type"] == "plot"}
        sessions.append({"task": json.loads((folder / "task.json").read_text()), "scalars": scalars,
                         "plots": plots, "folder": folder})
    return sessions


def artifacts(task: dict) -> dict[str, Path]:
    return {a["key"]: Path(a["uri"]) for a in task["execution"]["artifacts"]}
