"""The training npz's format: its keys, versions and checks, read and written as arrays.

dataset.py turns a MotionDataset into these arrays and back; this module says what a valid file
holds, so that a foreign, older or damaged npz fails with one line naming the file and key.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from .errors import UserError
from .features import FeatureLayout
from .files import atomic_write_bytes
from .pyramid import MIN_LEVEL_FRAMES

FORMAT_VERSION = 3  # 3: one or more clips; 2: the original's channel layout, one clip (still read)

# key -> (dtype kind, number of dimensions); checked on load so that a foreign npz fails clearly.
# A file holds K clips of one skeleton: per-frame arrays are the clips' frames one after another
# (`clip_frames` says how many each), z* their coarsest levels one after another.
SCHEMA = {
    "format_version": ("i", 0),
    "clip_frames": ("i", 1),
    "features": ("f", 2),
    "begin_xz": ("f", 2),
    "level_lengths": ("i", 2),
    "noise_amplitudes": ("f", 2),
    "z_star": ("f", 2),
    "contacts": ("f", 2),
    "rotations": ("f", 4),
    "root_positions": ("f", 2),
    "fps": ("f", 0),
    "joint_names": ("U", 1),
    "parents": ("i", 1),
    "offsets": ("f", 2),
    "end_sites": ("f", 2),
    "rotation_orders": ("U", 1),
    "contact_joints": ("i", 1),
    "contact_threshold": ("f", 0),
    "scale": ("f", 0),
    "coarsest_ratio": ("f", 0),
    "rig": ("U", 0),
    "source": ("U", 1),
    "root_units": ("f", 1),  # the root block's (offset, scale): features.RootUnits
}


class DatasetError(UserError, ValueError):
    """A malformed or foreign npz, or clips that cannot train together; the message names the file."""


def write(path, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as a compressed npz, atomically, stamped with this FORMAT_VERSION."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, format_version=np.int64(FORMAT_VERSION), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def read(path) -> dict[str, np.ndarray]:
    """Every key of a ganimator npz, upgraded to this FORMAT_VERSION and checked; a DatasetError
    naming the file and key otherwise."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable npz ({e})") from None
    _check(path, _upgrade(data))
    _check_consistency(path, data)
    return data


def _upgrade(data: dict) -> dict:
    """A version-2 file (one clip) read as version 3, in place: its per-clip keys gain the clip axis."""
    data.setdefault("root_units", np.array([0.0, 1.0]))  # written before it: the original's raw root block
    version = data.get("format_version")
    if version is None or version.shape != () or version != 2:
        return data
    for key in ("begin_xz", "level_lengths", "noise_amplitudes", "source"):
        if key in data:
            data[key] = data[key][None]
    if "features" in data:
        data["clip_frames"] = np.array(data["features"].shape[-1:], dtype=np.int64)
    data["format_version"] = np.int64(FORMAT_VERSION)
    return data


def _check_consistency(path, data: dict) -> None:
    J, C = len(data["joint_names"]), len(data["contact_joints"])
    channels, T = FeatureLayout(J, C).channels, data["features"].shape[1]
    frames, levels = data["clip_frames"], data["level_lengths"]
    K = len(frames)
    if K == 0 or (frames < 1).any() or frames.sum() != T:
        raise DatasetError(f"{path}: key 'clip_frames' {frames.tolist()} must count the {T} frames clip by clip")
    if levels.shape[0] != K or levels.shape[1] == 0 or (levels < 1).any() or (np.diff(levels) <= 0).any() \
            or (levels[:, -1] != frames).any():
        raise DatasetError(f"{path}: key 'level_lengths' {levels.tolist()} must increase up to each clip's "
                           f"frames, {frames.tolist()}")
    expected = {
        "features": (channels, T), "begin_xz": (K, 2), "contacts": (T, C), "rotations": (T, J, 3, 3),
        "root_positions": (T, 3), "parents": (J,), "offsets": (J, 3), "end_sites": (J, 3),
        "rotation_orders": (J,), "noise_amplitudes": levels.shape, "source": (K,),
        "z_star": (channels, levels[:, 0].sum()), "root_units": (2,),
    }
    for key, shape in expected.items():
        if data[key].shape != shape:
            raise DatasetError(f"{path}: key {key!r} has shape {data[key].shape}, expected {shape} "
                               f"for {J} joints, {C} contacts and {T} frames in {K} clip{'s' * (K > 1)}")
    if levels[:, 0].min() < MIN_LEVEL_FRAMES:
        raise DatasetError(f"{path}: key 'level_lengths' starts at {levels[:, 0].min()} frames; the networks need "
                           f"{MIN_LEVEL_FRAMES}")
    positive = {k: float(data[k]) for k in ("fps", "scale", "contact_threshold")}
    for key, value in positive.items():
        if not value > 0:
            raise DatasetError(f"{path}: key {key!r} must be positive, got {value:g}")
    if not data["root_units"][1] > 0:
        raise DatasetError(f"{path}: key 'root_units' must hold an offset and a positive scale, got {data['root_units'].tolist()}")
    if (data["noise_amplitudes"] < 0).any():
        raise DatasetError(f"{path}: key 'noise_amplitudes' holds a negative value")
    orders = [str(o) for o in data["rotation_orders"]]
    if any(sorted(o) != ["X", "Y", "Z"] for o in orders):
        raise DatasetError(f"{path}: key 'rotation_orders' holds {next(o for o in orders if sorted(o) != ['X', 'Y', 'Z'])!r}, "
                           "not an order of X, Y and Z")
    names = [str(n) for n in data["joint_names"]]
    if len(set(names)) != len(names) or not all(names):
        raise DatasetError(f"{path}: key 'joint_names' must hold {J} distinct, non-empty names")
    if len(set(data["contact_joints"].tolist())) != C:
        raise DatasetError(f"{path}: key 'contact_joints' lists a joint twice")
    parents = data["parents"]
    if J == 0 or parents[0] != -1 or any(not -1 < p < j for j, p in enumerate(parents) if j):
        raise DatasetError(f"{path}: key 'parents' must start with -1 and list each parent before its child")
    if not 0 < data["coarsest_ratio"] < 1:
        raise DatasetError(f"{path}: key 'coarsest_ratio' must lie between 0 and 1, got {data['coarsest_ratio']}")
    if ((data["contact_joints"] < 0) | (data["contact_joints"] >= J)).any():
        raise DatasetError(f"{path}: key 'contact_joints' indexes past the {J} joints")


def _check(path, data: dict) -> None:
    # The version first: an older npz lacks newer keys, and the useful message is to re-run.
    version = data.get("format_version")
    if version is not None and version.shape == () and version.dtype.kind == "i" and version != FORMAT_VERSION:
        raise DatasetError(f"{path}: key 'format_version' is {version}; this ganimator reads "
                           f"versions 2 and {FORMAT_VERSION}: run ganimator-preprocess on the BVH again")
    missing = [k for k in SCHEMA if k not in data]
    if missing:
        raise DatasetError(f"{path}: missing key {missing[0]!r} (is this a ganimator-preprocess npz?)")
    for key, (kind, ndim) in SCHEMA.items():
        value = data[key]
        if value.ndim != ndim or (value.dtype.kind != kind and not (kind == "f" and value.dtype.kind == "i")):
            raise DatasetError(f"{path}: key {key!r} has dtype {value.dtype} and {value.ndim} dimensions, "
                               f"expected kind {kind!r} with {ndim}")
        if kind == "f" and not np.isfinite(value).all() and key != "end_sites":
            raise DatasetError(f"{path}: key {key!r} holds NaN or infinite values")
