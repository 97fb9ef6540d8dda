import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ["Salsa-Dancing-6.bvh", "Walk-In-Circle.bvh", "Crab-dance-long.bvh", "proud.bvh", "normal.bvh"]


def data_dir() -> Path:
    return Path(os.environ.get("GANIMATOR_TEST_DATA", ROOT.parent / "shared" / "data" / "bvh"))


@pytest.fixture(scope="session")
def clip():
    """Path of a real clip; a missing clip fails the test (never a skip)."""

    def get(name: str) -> Path:
        path = data_dir() / name
        if not path.is_file():
            pytest.fail(f"test clip {path} is missing: set GANIMATOR_TEST_DATA to the folder of the shipped BVH clips")
        return path

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
