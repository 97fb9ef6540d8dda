"""The training npz: features, pyramid, noise amplitudes, z* and the skeleton to write BVH back.

One file holds everything a run needs, so that a run folder with its copy of the npz is
self-contained: training, generation and BVH export read nothing else.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bvh import BVHError
from .errors import UserError
from .features import FeatureLayout, Motion, contact_labels, decode, encode, load_motion
from .pyramid import COARSEST_RATIO, MIN_LEVEL_FRAMES, build_pyramid, noise_amplitudes, pyramid_lengths, scaled_lengths
from .skeleton import Rig, Skeleton

FORMAT_VERSION = 2  # 2: the original's channel layout (6-wide contact and root nodes, 6D rows)

# key -> (dtype kind, number of dimensions); checked on load so that a foreign npz fails clearly
SCHEMA = {
    "format_version": ("i", 0),
    "features": ("f", 2),
    "begin_xz": ("f", 1),
    "level_lengths": ("i", 1),
    "noise_amplitudes": ("f", 1),
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
    "source": ("U", 0),
}


class DatasetError(UserError, ValueError):
    """A malformed or foreign npz; the message names the file and the key."""


@dataclass
class MotionDataset:
    skeleton: Skeleton
    motion: Motion  # the clip at training frame rate, float64
    features: torch.Tensor  # (channels, T) float32
    begin_xz: torch.Tensor  # (2,)
    contacts: torch.Tensor  # (T, C)
    level_lengths: list[int]
    noise_amplitudes: torch.Tensor  # (levels,)
    z_star: torch.Tensor  # (channels, level_lengths[0]): fixed noise that reconstructs the clip
    source: str = ""
    coarsest_ratio: float = COARSEST_RATIO  # the pyramid's rule, for generating other lengths

    @property
    def layout(self) -> FeatureLayout:
        return FeatureLayout(self.skeleton.num_joints, len(self.skeleton.contacts))

    @property
    def num_levels(self) -> int:
        return len(self.level_lengths)

    def levels(self) -> list[torch.Tensor]:
        return build_pyramid(self.features, self.level_lengths)

    def decode(self, features: torch.Tensor) -> tuple[Motion, torch.Tensor]:
        return decode(features, self.layout, self.begin_xz)

    @classmethod
    def from_bvh(cls, path, rig: Rig | None = None, seed: int = 0,
                 ratio: float = COARSEST_RATIO) -> "MotionDataset":
        """`ratio`: the coarsest level's share of the clip (1/30 gives the sparse coarsest level
        that key-frame editing needs, and about 14 levels)."""
        skeleton, motion = load_motion(path, rig)
        try:  # before anything else reads the frames: 0 or 1 of them break contacts and velocities
            lengths = pyramid_lengths(motion.rotations.shape[0], ratio)
        except ValueError as e:
            raise BVHError(path, None, f"{e} (counted at the training rate, {motion.fps:.3g} fps)") from None
        contacts = contact_labels(motion, skeleton)
        features, begin_xz = encode(motion, skeleton, contacts)
        features = features.float()
        if not torch.isfinite(features).all():
            raise BVHError(path, None, "its positions or offsets are too large: the features overflow float32")
        amps = noise_amplitudes(build_pyramid(features, lengths))
        z_star = torch.randn(features.shape[0], lengths[0], generator=torch.Generator().manual_seed(seed))
        return cls(skeleton, motion, features, begin_xz.float(), contacts.float(), lengths, amps, z_star,
                   source=Path(path).name, coarsest_ratio=ratio)

    def generation_lengths(self, length: int) -> list[int]:
        """Level lengths for motion of `length` frames: the original's rule (the pyramid of that
        length, its coarsest levels dropped down to this clip's level count). A length too short
        for that many levels gets the training pyramid scaled instead."""
        try:
            lengths = pyramid_lengths(length, self.coarsest_ratio)
        except ValueError:
            lengths = []
        if len(lengths) < self.num_levels:
            return scaled_lengths(self.level_lengths, length)
        return lengths[len(lengths) - self.num_levels:]

    def save(self, path) -> None:
        s = self.skeleton
        arrays = {
            "format_version": np.int64(FORMAT_VERSION),
            "features": self.features.numpy(),
            "begin_xz": self.begin_xz.numpy(),
            "level_lengths": np.array(self.level_lengths, dtype=np.int64),
            "noise_amplitudes": self.noise_amplitudes.numpy(),
            "z_star": self.z_star.numpy(),
            "contacts": self.contacts.numpy(),
            "rotations": self.motion.rotations.numpy(),
            "root_positions": self.motion.root_positions.numpy(),
            "fps": np.float64(self.motion.fps),
            "joint_names": np.array(s.names),
            "parents": np.array(s.parents, dtype=np.int64),
            "offsets": s.offsets,
            "end_sites": s.end_sites,
            "rotation_orders": np.array(s.rotation_orders),
            "contact_joints": np.array(s.contacts, dtype=np.int64),
            "contact_threshold": np.float64(s.contact_threshold),
            "scale": np.float64(s.scale),
            "rig": np.array(s.rig),
            "source": np.array(self.source),
            "coarsest_ratio": np.float64(self.coarsest_ratio),
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "MotionDataset":
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"{path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{path}: not a readable npz ({e})") from None
        _check(path, data)
        _check_consistency(path, data)
        skeleton = Skeleton(
            names=data["joint_names"].tolist(),
            parents=data["parents"].tolist(),
            offsets=data["offsets"],
            end_sites=data["end_sites"],
            rotation_orders=data["rotation_orders"].tolist(),
            contacts=data["contact_joints"].tolist(),
            contact_threshold=float(data["contact_threshold"]),
            scale=float(data["scale"]),
            rig=str(data["rig"]),
        )
        t = torch.from_numpy
        motion = Motion(t(data["rotations"]), t(data["root_positions"]), float(data["fps"]))
        return cls(skeleton, motion, t(data["features"]).float(), t(data["begin_xz"]).float(),
                   t(data["contacts"]).float(), data["level_lengths"].tolist(),
                   t(data["noise_amplitudes"]).float(), t(data["z_star"]).float(), str(data["source"]),
                   float(data["coarsest_ratio"]))


def _check_consistency(path, data: dict) -> None:
    J, C = len(data["joint_names"]), len(data["contact_joints"])
    channels, T = FeatureLayout(J, C).channels, data["features"].shape[1]
    levels = data["level_lengths"]
    if len(levels) == 0 or (levels < 1).any() or (np.diff(levels) <= 0).any() or levels[-1] != T:
        raise DatasetError(f"{path}: key 'level_lengths' {levels.tolist()} must increase up to the {T} frames")
    expected = {
        "features": (channels, T), "begin_xz": (2,), "contacts": (T, C), "rotations": (T, J, 3, 3),
        "root_positions": (T, 3), "parents": (J,), "offsets": (J, 3), "end_sites": (J, 3),
        "rotation_orders": (J,), "noise_amplitudes": (len(levels),),
        "z_star": (channels, levels[0]),
    }
    for key, shape in expected.items():
        if data[key].shape != shape:
            raise DatasetError(f"{path}: key {key!r} has shape {data[key].shape}, expected {shape} "
                               f"for {J} joints, {C} contacts and {T} frames")
    if levels[0] < MIN_LEVEL_FRAMES:
        raise DatasetError(f"{path}: key 'level_lengths' starts at {levels[0]} frames; the networks need {MIN_LEVEL_FRAMES}")
    positive = {k: float(data[k]) for k in ("fps", "scale", "contact_threshold")}
    for key, value in positive.items():
        if not value > 0:
            raise DatasetError(f"{path}: key {key!r} must be positive, got {value:g}")
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
                           f"version {FORMAT_VERSION}: run ganimator-preprocess on the BVH again")
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
