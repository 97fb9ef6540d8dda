"""Editing with a trained run: motion whose coarsest level is given, and the levels above it the
run's (the original's key-frame editing and style transfer), and the trajectories a conditional
run follows."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .dataset import MotionDataset
from .features import RAW, RootUnits, convert, decode, encode, retime
from .generate import GenerationError, TrainedRun, load_run
from .motion import Motion
from .pyramid import build_pyramid, resample


def from_coarse(run: TrainedRun, coarse: torch.Tensor, lengths: list[int], samples: int = 1, seed: int = 0,
                detail_noise: float = 0.0) -> torch.Tensor:
    """(samples, channels, lengths[-1]) motion whose coarsest level is `coarse`, (channels,
    lengths[0]): the levels above add the run's detail to it, with noise scaled by detail_noise
    (0, the original's: one result)."""
    if run.pyramid.condition:
        raise GenerationError(f"{run.run_dir} is a conditional run: edit with the run it was trained on")
    run.level_lengths(lengths[-1], samples)  # refuses what would not fit
    rng = torch.Generator().manual_seed(seed)
    prev = coarse[None].expand(samples, -1, -1)
    with torch.no_grad():
        return run.pyramid.sample(lengths, samples, rng, range(1, len(lengths)), prev, detail_noise=detail_noise)


class KeyFrames:
    """Key-frame editing of one training clip: its coarsest level as motion in real time, one
    frame per key frame, to edit and read back. A run that mixes clips must say which one
    (`clip`); a single-clip run edits its clip."""

    def __init__(self, run: TrainedRun, clip: int | None = None):
        clips = run.dataset.clips
        if clip is None and len(clips) > 1:
            raise GenerationError(f"{run.run_dir} mixes {len(clips)} clips ({run.dataset.source}): say whose key "
                                  f"frames to edit (--clip 0 to {len(clips) - 1})")
        clip = 0 if clip is None else clip
        if not 0 <= clip < len(clips):
            raise GenerationError(f"clip {clip}: {run.run_dir} has clips 0 to {len(clips) - 1}")
        self.run, self.index, self.clip = run, clip, clips[clip]

    @property
    def spacing(self) -> float:
        """Training frames between two frames of the clip's coarsest level."""
        return self.clip.num_frames / self.clip.level_lengths[0]

    def frame(self, k: int) -> int:
        """The frame of the clip-length motion where key frame k stands: linear resampling puts
        each coarse frame at the centre of the training frames it stands for."""
        return round((k + 0.5) * self.spacing - 0.5)

    def motion(self) -> Motion:
        """The clip's coarsest level as motion in real time: the file to edit."""
        clip, spacing = self.clip, self.spacing
        coarsest = retime(clip.levels()[0], clip.layout, spacing)
        motion, _ = decode(coarsest, clip.layout, clip.begin_xz, clip.motion.fps / spacing)
        return motion

    def read(self, path) -> torch.Tensor:
        """A key-frame BVH as the coarsest level's features, (channels, key frames)."""
        run, clip, spacing = self.run, self.clip, self.spacing
        run.check_input(path, fps=None)
        motion = run.dataset.read_like(path, fps=None)  # every frame: one per key frame, whatever its frame time
        if motion.num_frames != clip.level_lengths[0]:
            raise GenerationError(f"{path}: {motion.num_frames} key frames, and {run.run_dir}'s coarsest level has "
                                  f"{clip.level_lengths[0]} (write them with ganimator-generate RUN --write-keyframes)")
        # Contacts at key-frame spacing: a foot may move `spacing` times as far between two key frames.
        skeleton = replace(run.dataset.skeleton, contact_threshold=run.dataset.skeleton.contact_threshold * spacing)
        features, _ = encode(motion, skeleton, units=clip.root_units)
        return retime(features.float(), clip.layout, 1 / spacing)

    def edit(self, path, samples: int = 1, seed: int = 0, detail_noise: float = 0.0) -> torch.Tensor:
        """Motion of the clip's length from edited key frames (a BVH as `motion` writes it)."""
        return from_coarse(self.run, self.read(path), self.clip.level_lengths, samples, seed, detail_noise)


def read_clip(run: TrainedRun, path) -> tuple[torch.Tensor, torch.Tensor]:
    """A BVH of the run's skeleton as features (channels, T), and its root's first x/z position:
    the content of style transfer, or the trajectory a conditional run follows."""
    run.check_input(path)
    features, begin_xz = encode(run.dataset.read_like(path), run.dataset.skeleton, units=run.dataset.layout.root_units)
    frames = features.shape[-1]
    coarsest = run.dataset.generation_lengths(frames)[0]
    if coarsest <= run.cfg.model.kernel_size // 2:
        raise GenerationError(f"{path}: {frames} frames are too few for {run.run_dir}'s pyramid (its coarsest "
                              f"level would have {coarsest})")
    return features.float(), begin_xz.float()


def transfer_style(run: TrainedRun, content: torch.Tensor, samples: int = 1, seed: int = 0,
                   detail_noise: float = 0.0) -> torch.Tensor:
    """A content clip ((channels, T) features of the run's skeleton, `read_clip`'s) in the style
    the run learnt: the content's coarsest level, the run's levels above it."""
    lengths = run.dataset.generation_lengths(content.shape[-1])
    return from_coarse(run, resample(content[None], lengths[0])[0], lengths, samples, seed, detail_noise)


class TrajectorySource:
    """The trajectories a conditional run learns and, by default, follows: random motion of a
    trained unconditional run of the same clips, noise at every level as the original draws them,
    given at every level of the pyramid, in the conditional run's root units."""

    def __init__(self, run: TrainedRun, units: RootUnits = RAW):
        self.run, self.units = run, units

    @classmethod
    def load(cls, path, dataset: MotionDataset, device) -> "TrajectorySource":
        if not str(path) or not Path(path).is_dir():
            raise GenerationError(f"trajectory_run {str(path)!r} is not a run folder: it names the trained run whose "
                                  "random motion gives a conditional run its trajectories")
        run = load_run(path)
        if run.pyramid.condition:
            raise GenerationError(f"trajectory_run {path} is itself conditional: name an unconditional run")
        theirs, ours = run.dataset.clips, dataset.clips
        if len(theirs) != len(ours) or any(
                a.level_lengths != b.level_lengths
                or not torch.allclose(convert(a.features, a.layout, b.root_units), b.features, rtol=1e-5, atol=1e-6)
                for a, b in zip(theirs, ours)):
            raise GenerationError(f"trajectory_run {path} was trained on {run.dataset.source}, not on this "
                                  f"{dataset.source}: train the conditional run on its clip")
        run.pyramid.to(device)
        return cls(run, dataset.layout.root_units)

    def __call__(self, lengths: list[int], batch: int, rng: torch.Generator) -> list[torch.Tensor]:
        with torch.no_grad():
            motion = convert(self.run.pyramid.sample(lengths, batch, rng), self.run.dataset.layout, self.units)
            return build_pyramid(motion, lengths)
