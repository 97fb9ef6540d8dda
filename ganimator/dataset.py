"""The clips a run trains on: built from BVH files (features, pyramid, noise amplitudes, z* and
the skeleton to write BVH back), saved to and loaded from the training npz (its format: npz.py).

One file holds everything a run needs, so that a run folder with its copy of the npz is
self-contained: training, generation and BVH export read nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import npz
from .bvh import TARGET_FPS, BVHError, load_motion
from .features import RAW, FeatureLayout, RootUnits, convert, decode, encode
from .kinematics import contact_labels
from .motion import Motion
from .npz import DatasetError
from .pyramid import COARSEST_RATIO, build_pyramid, noise_amplitudes, pyramid_lengths, scaled_lengths
from .skeleton import GENERIC, RIGS, Rig, Skeleton


@dataclass
class TrainingClip:
    """One training clip: its frames, features and pyramid."""

    motion: Motion  # the clip at training frame rate, float64
    features: torch.Tensor  # (channels, T) float32
    begin_xz: torch.Tensor  # (2,)
    contacts: torch.Tensor  # (T, C)
    level_lengths: list[int]
    noise_amplitudes: torch.Tensor  # (levels,)
    z_star: torch.Tensor  # (channels, level_lengths[0]): fixed noise that reconstructs the clip
    source: str = ""
    root_units: RootUnits = RAW  # every clip of a dataset has the same

    @property
    def num_frames(self) -> int:
        return self.features.shape[-1]

    @property
    def layout(self) -> FeatureLayout:
        return FeatureLayout(self.motion.rotations.shape[-3], self.contacts.shape[-1], self.root_units)

    def levels(self) -> list[torch.Tensor]:
        return build_pyramid(self.features, self.level_lengths)

    def decode(self, features: torch.Tensor) -> tuple[Motion, torch.Tensor]:
        """Features of this clip's skeleton as motion starting where the clip starts, at its fps."""
        return decode(features, self.layout, self.begin_xz, self.motion.fps)


@dataclass
class MotionDataset:
    """The clips a run trains on, all of one skeleton and frame rate, with pyramids of as many
    levels (the original's motion mixing trims the longer clips' coarsest levels). Most runs have
    one clip; what concerns one clip names it (`clips[k]`): the first is the one whose noise
    amplitudes generation samples with (the original's `base_id` 0)."""

    skeleton: Skeleton
    clips: list[TrainingClip]
    coarsest_ratio: float = COARSEST_RATIO  # the pyramid's rule, for generating other lengths

    @property
    def layout(self) -> FeatureLayout:
        return FeatureLayout(self.skeleton.num_joints, len(self.skeleton.contacts), self.clips[0].root_units)

    @property
    def num_levels(self) -> int:
        return len(self.clips[0].level_lengths)  # every clip's: mixing trims them to one count

    @property
    def fps(self) -> float:
        return self.clips[0].motion.fps  # every clip's: from_bvhs refuses clips of different rates

    @property
    def num_frames(self) -> int:
        """Frames of all clips together: generation and evaluation draw twice this by default."""
        return sum(c.num_frames for c in self.clips)

    @property
    def source(self) -> str:
        return " + ".join(c.source for c in self.clips)

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
            clips.append(TrainingClip(motion, features, begin_xz.float(), contacts.float(), levels, amps, z_star,
                                      source=Path(path).name))
        return cls(skeleton, clips, coarsest_ratio=ratio)

    def with_root_scale(self, scale: float) -> "MotionDataset":
        """This dataset with its root block measured as data.root_scale says: 0, the original's
        raw channels; S > 0, the height centred on the first clip's mean, and height and
        velocities in 1/S of the root's mean height above the body's lowest joint (a unit of the
        body, not of the file: alike in metres, centimetres or a crab's units). Noise amplitudes
        are measured again on the new features, as preprocessing measures them; z* stays."""
        units = RAW if scale == 0 else self._root_units(scale)
        if units == self.layout.root_units:
            return self
        clips = []
        for clip in self.clips:
            features = convert(clip.features, clip.layout, units)
            clips.append(replace(clip, features=features, root_units=units,
                                 noise_amplitudes=noise_amplitudes(build_pyramid(features, clip.level_lengths))))
        return replace(self, clips=clips)

    def body_height(self) -> float:
        """The first clip's root's mean height above the body's lowest joint: a length of the body,
        whatever the file's units (0 for a rig whose root is never above another joint)."""
        heights = self.clips[0].motion.joint_positions(self.skeleton)[..., 1]  # (T, J)
        return float((heights[:, 0] - heights.amin(dim=1)).mean())

    def ground_and_body(self) -> tuple:
        """Where the first clip's contact joints stand (naturalness.Ground: its floor, their rest
        heights and contact bands) and the body's height: what the floor loss measures from and in."""
        from .naturalness import Ground  # naturalness measures datasets: imported here, not at the top

        positions = self.clips[0].motion.joint_positions(self.skeleton)
        return Ground(positions, self.skeleton.contacts, self.skeleton.contact_threshold), max(self.body_height(), 1e-6)

    def _root_units(self, scale: float) -> RootUnits:
        body = self.body_height()
        if not body > 0:
            raise DatasetError(f"{self.source}: the root is never above another joint, so data.root_scale has no "
                               "unit to measure it in; use data.root_scale=0")
        return RootUnits(offset=float(self.clips[0].motion.root_positions[:, 1].mean()), scale=scale / body)

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
            _check_fps(path, motion, self.source, self.fps)
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
        if len(lengths) < self.num_levels:  # the first clip's pyramid, as generation samples with its amplitudes
            return scaled_lengths(self.clips[0].level_lengths, length)
        return lengths[len(lengths) - self.num_levels:]

    def save(self, path) -> None:
        s, clips = self.skeleton, self.clips
        cat = lambda name, dim=0: torch.cat([getattr(c, name) for c in clips], dim=dim).numpy()  # noqa: E731
        npz.write(path, {
            "clip_frames": np.array([c.num_frames for c in clips], dtype=np.int64),
            "features": cat("features", 1),
            "begin_xz": torch.stack([c.begin_xz for c in clips]).numpy(),
            "level_lengths": np.array([c.level_lengths for c in clips], dtype=np.int64),
            "noise_amplitudes": torch.stack([c.noise_amplitudes for c in clips]).numpy(),
            "z_star": cat("z_star", 1),
            "contacts": cat("contacts"),
            "rotations": torch.cat([c.motion.rotations for c in clips]).numpy(),
            "root_positions": torch.cat([c.motion.root_positions for c in clips]).numpy(),
            "fps": np.float64(self.fps),
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
            "root_units": np.array([self.layout.root_units.offset, self.layout.root_units.scale]),
        })

    @classmethod
    def load(cls, path) -> "MotionDataset":
        data = npz.read(path)
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
        units = RootUnits(*map(float, data["root_units"]))
        frames = np.cumsum([0, *data["clip_frames"]])
        starts = np.cumsum([0, *data["level_lengths"][:, 0]])
        clips = []
        for k, (a, b) in enumerate(zip(frames, frames[1:])):
            motion = Motion(torch.from_numpy(data["rotations"][a:b]), torch.from_numpy(data["root_positions"][a:b]),
                            float(data["fps"]))
            clips.append(TrainingClip(motion, t(data["features"][:, a:b]), t(data["begin_xz"][k]),
                                      t(data["contacts"][a:b]), data["level_lengths"][k].tolist(),
                                      t(data["noise_amplitudes"][k]), t(data["z_star"][:, starts[k]:starts[k + 1]]),
                                      str(data["source"][k]), units))
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
