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
