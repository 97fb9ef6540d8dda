"""The training npz: features, pyramid, noise amplitudes, z* and the skeleton to write BVH back.

One file holds everything a run needs, so that a run folder with its copy of the npz is
self-contained: training, generation and BVH export read nothing else.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bvh import BVHError
from .files import atomic_write_bytes
from .errors import UserError
from .features import TARGET_FPS, FeatureLayout, Motion, contact_labels, decode, encode, load_motion
from .pyramid import COARSEST_RATIO, MIN_LEVEL_FRAMES, build_pyramid, noise_amplitudes, pyramid_lengths, scaled_lengths
from .skeleton import GENERIC, RIGS, Rig, Skeleton

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
}


class DatasetError(UserError, ValueError):
    """A malformed or foreign npz, or clips that cannot train together; the message names the file."""


@dataclass
class Clip:
    """One training clip: its frames, features and pyramid."""

    motion: Motion  # the clip at training frame rate, float64
    features: torch.Tensor  # (channels, T) float32
    begin_xz: torch.Tensor  # (2,)
    contacts: torch.Tensor  # (T, C)
    level_lengths: list[int]
    noise_amplitudes: torch.Tensor  # (levels,)
    z_star: torch.Tensor  # (channels, level_lengths[0]): fixed noise that reconstructs the clip
    source: str = ""

    @property
    def num_frames(self) -> int:
        return self.features.shape[-1]

    def levels(self) -> list[torch.Tensor]:
        return build_pyramid(self.features, self.level_lengths)


@dataclass
class MotionDataset:
    """The clips a run trains on, all of one skeleton and frame rate, with pyramids of as many
    levels (the original's motion mixing trims the longer clips' coarsest levels). Most runs have
    one clip; the single-clip fields below are the first clip's, the one whose noise amplitudes
    generation samples with (the original's `base_id` 0)."""

    skeleton: Skeleton
    clips: list[Clip]
    coarsest_ratio: float = COARSEST_RATIO  # the pyramid's rule, for generating other lengths

    @property
    def layout(self) -> FeatureLayout:
        return FeatureLayout(self.skeleton.num_joints, len(self.skeleton.contacts))

    @property
    def num_levels(self) -> int:
        return len(self.level_lengths)

    @property
    def num_frames(self) -> int:
        """Frames of all clips together: generation and evaluation draw twice this by default."""
        return sum(c.num_frames for c in self.clips)

    @property
    def source(self) -> str:
        return " + ".join(c.source for c in self.clips)

    # The first clip's, for what a single-clip run reads (generation, export, review).
    motion = property(lambda self: self.clips[0].motion)
    features = property(lambda self: self.clips[0].features)
    begin_xz = property(lambda self: self.clips[0].begin_xz)
    contacts = property(lambda self: self.clips[0].contacts)
    level_lengths = property(lambda self: self.clips[0].level_lengths)
    noise_amplitudes = property(lambda self: self.clips[0].noise_amplitudes)
    z_star = property(lambda self: self.clips[0].z_star)

    def levels(self) -> list[torch.Tensor]:
        return self.clips[0].levels()

    def decode(self, features: torch.Tensor) -> tuple[Motion, torch.Tensor]:
        return decode(features, self.layout, self.begin_xz)

    @classmethod
    def from_bvh(cls, path, rig: Rig | None = None, seed: int = 0,
                 ratio: float = COARSEST_RATIO) -> "MotionDataset":
        """`ratio`: the coarsest level's share of the clip (1/30 gives the sparse coarsest level
        that key-frame editing needs, and about 14 levels)."""
        return cls.from_bvhs([path], rig, seed, ratio)

    @classmethod
    def from_bvhs(cls, paths, rig: Rig | None = None, seed: int = 0,
                  ratio: float = COARSEST_RATIO) -> "MotionDataset":
        """Clips of one skeleton for motion mixing (the original's --multiple_sequences): each its
        own pyramid, amplitudes and z*, the longer ones' coarsest levels dropped down to the
        shortest pyramid's level count. The first clip's skeleton is the run's."""
        loaded = [(path, *load_motion(path, rig)) for path in paths]
        first_path, skeleton, first = loaded[0]
        lengths = []
        for path, other, motion in loaded:
            _check_same_skeleton(path, other, first_path, skeleton)
            _check_fps(path, motion, first_path, first.fps)
            try:  # before anything else reads the frames: 0 or 1 of them break contacts and velocities
                lengths.append(pyramid_lengths(motion.rotations.shape[0], ratio))
            except ValueError as e:
                raise BVHError(path, None, f"{e} (counted at the training rate, {motion.fps:.3g} fps)") from None
        num_levels = min(map(len, lengths))
        rng = torch.Generator().manual_seed(seed)
        clips = []
        for (path, own, motion), levels in zip(loaded, lengths):
            levels = levels[len(levels) - num_levels:]
            contacts = contact_labels(motion, own)
            features, begin_xz = encode(motion, own, contacts)
            features = features.float()
            if not torch.isfinite(features).all():
                raise BVHError(path, None, "its positions or offsets are too large: the features overflow float32")
            amps = noise_amplitudes(build_pyramid(features, levels))
            z_star = torch.randn(features.shape[0], levels[0], generator=rng)
            clips.append(Clip(motion, features, begin_xz.float(), contacts.float(), levels, amps, z_star,
                              source=Path(path).name))
        return cls(skeleton, clips, coarsest_ratio=ratio)

    def read_like(self, path, fps: float | None = TARGET_FPS) -> Motion:
        """A BVH of this dataset's skeleton (its rig's joints, at `fps` or None: every frame), for
        editing, style transfer or a trajectory; a clip of another skeleton is refused, naming it."""
        rig = next((r for r in RIGS if r.name == self.skeleton.rig), GENERIC)
        try:
            skeleton, motion = load_motion(path, rig, fps)
        except BVHError:  # not of the run's rig: read as what it is, to say which skeleton it has
            skeleton, motion = load_motion(path, None, fps)
        _check_same_skeleton(path, skeleton, self.source, self.skeleton, "the run's networks know only that one")
        if fps is not None:
            _check_fps(path, motion, self.source, self.motion.fps)
        if motion.num_frames < 2:  # a root velocity needs two
            raise DatasetError(f"{path}: {motion.num_frames} frame{'s' * (motion.num_frames != 1)}; "
                               "motion needs at least 2")
        return motion

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
        s, clips = self.skeleton, self.clips
        cat = lambda name, dim=0: torch.cat([getattr(c, name) for c in clips], dim=dim).numpy()  # noqa: E731
        arrays = {
            "format_version": np.int64(FORMAT_VERSION),
            "clip_frames": np.array([c.num_frames for c in clips], dtype=np.int64),
            "features": cat("features", 1),
            "begin_xz": torch.stack([c.begin_xz for c in clips]).numpy(),
            "level_lengths": np.array([c.level_lengths for c in clips], dtype=np.int64),
            "noise_amplitudes": torch.stack([c.noise_amplitudes for c in clips]).numpy(),
            "z_star": cat("z_star", 1),
            "contacts": cat("contacts"),
            "rotations": torch.cat([c.motion.rotations for c in clips]).numpy(),
            "root_positions": torch.cat([c.motion.root_positions for c in clips]).numpy(),
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
            "source": np.array([c.source for c in clips]),
            "coarsest_ratio": np.float64(self.coarsest_ratio),
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())

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
        _check(path, _upgrade(data))
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
        t = lambda a: torch.from_numpy(a).float()  # noqa: E731
        frames = np.cumsum([0, *data["clip_frames"]])
        starts = np.cumsum([0, *data["level_lengths"][:, 0]])
        clips = []
        for k, (a, b) in enumerate(zip(frames, frames[1:])):
            motion = Motion(torch.from_numpy(data["rotations"][a:b]), torch.from_numpy(data["root_positions"][a:b]),
                            float(data["fps"]))
            clips.append(Clip(motion, t(data["features"][:, a:b]), t(data["begin_xz"][k]), t(data["contacts"][a:b]),
                              data["level_lengths"][k].tolist(), t(data["noise_amplitudes"][k]),
                              t(data["z_star"][:, starts[k]:starts[k + 1]]), str(data["source"][k])))
        return cls(skeleton, clips, float(data["coarsest_ratio"]))


BONE_TOLERANCE = 0.01  # bones may differ by 1% of the longest: export rounding, not another body


def _check_same_skeleton(path, skeleton: Skeleton, first_path, first: Skeleton,
                         need: str = "clips trained together must share one") -> None:
    """Clips mixed in one run, and the clips a run edits, share its networks joint by joint and its
    bones (decoding, contacts and the root's height are in its metres): the same joints in the
    same tree, with bones of the same lengths."""
    lengths, first_lengths = (np.linalg.norm(s.offsets, axis=1) for s in (skeleton, first))
    if (skeleton.rig, skeleton.names, skeleton.parents) != (first.rig, first.names, first.parents):
        if skeleton.rig != first.rig:
            why = f"rig {skeleton.rig!r}, not {first.rig!r}"
        elif skeleton.names != first.names:
            k = next((k for k, (a, b) in enumerate(zip(skeleton.names, first.names)) if a != b), None)
            why = (f"{len(skeleton.names)} joints, not {len(first.names)}" if k is None
                   else f"joint {k} is {skeleton.names[k]!r}, not {first.names[k]!r}")
        else:
            why = "its joints hang from other parents"
    elif np.abs(lengths - first_lengths).max() > BONE_TOLERANCE * first_lengths.max():
        k = int(np.abs(lengths - first_lengths).argmax())
        why = f"the bone to {skeleton.names[k]!r} is {lengths[k]:.3g} m long, not {first_lengths[k]:.3g} m"
    else:
        return
    raise DatasetError(f"{path}: another skeleton than {first_path}'s ({why}); {need}")


def _check_fps(path, motion: Motion, source, fps: float) -> None:
    if abs(motion.fps - fps) > 1e-6:
        raise DatasetError(f"{path}: {motion.fps:g} fps at the training rate, and {source} has {fps:g}: "
                           "resample one of them")


def _upgrade(data: dict) -> dict:
    """A version-2 file (one clip) read as version 3, in place: its per-clip keys gain the clip axis."""
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
        "z_star": (channels, levels[:, 0].sum()),
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
