"""Loading a trained run, generating motion of any length, evaluating it, and writing it as BVH
and npz. Editing with a run (key frames, style transfer, trajectories): edit.py."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
import torch
from omegaconf import DictConfig

from .bvh import TARGET_FPS, frame_header, motion_to_bvh, write_bvh
from .config import load_config, stage_levels
from .contact_fix import ContactFix, fix_samples
from .dataset import MotionDataset
from .errors import UserError
from .features import RAW, convert, decode
from .metrics import Quality, Scorer
from .networks import GeneratorPyramid, build_models, clip_pyramids
from .progress import progress_bar
from .pyramid import build_pyramid
from .rundir import CheckpointError, RunDir, checkpoint_fits, load_checkpoint_file, new_or_empty

if TYPE_CHECKING:
    from .edit import TrajectorySource


# Peak memory of reading and encoding a BVH, per byte of the file: 5.3 measured on proud at
# 120 fps tiled to 53 MB (text, its lines, the array, rotations, features); a 30 fps file keeps
# four times as many of its frames, hence the margin.
READ_BYTES_PER_BYTE = 8


class GenerationError(UserError, ValueError):
    """A generation request the trained run cannot serve."""


def _check_memory(need: int, what: str, advice: str) -> None:
    """A GenerationError, before allocating, when `need` bytes would not fit in the memory free now."""
    free = psutil.virtual_memory().available
    if need > 0.8 * free:
        raise GenerationError(f"{what} about {need / 2**30:.1f} GiB, and {free / 2**30:.1f} GiB are free: {advice}")


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: DictConfig
    dataset: MotionDataset
    pyramid: GeneratorPyramid

    def generate(self, *args, **kwargs) -> torch.Tensor:
        """(samples, channels, length) new motion features (`generate_levels`' finest)."""
        return self.generate_levels(*args, **kwargs)[-1]

    def generate_levels(self, length: int, samples: int = 1, seed: int = 0, detail_noise: float = 0.0,
                        noise_scale: float = 1.0, trajectory: torch.Tensor | None = None) -> list[torch.Tensor]:
        """New motion features at every level of the pyramid, (samples, channels, frames) each, the
        finest `length` frames long. As the original evaluates, only the coarsest level gets noise
        by default; detail_noise > 0 adds scaled noise above it, and noise_scale multiplies all of
        it. A conditional run follows `trajectory` ((channels, length) features, e.g.
        `edit.read_clip`'s), or else one sampled from its trajectory run."""
        if trajectory is not None:
            if not self.pyramid.condition:
                raise GenerationError(f"{self.run_dir} is not a conditional run (trained with trajectory_run=...): "
                                      "it cannot follow a trajectory")
            length = trajectory.shape[-1]
        lengths = self.level_lengths(length, samples)
        rng = torch.Generator().manual_seed(seed)
        conds = None
        if trajectory is not None:
            conds = build_pyramid(trajectory[None].expand(samples, -1, -1), lengths)
        elif self.pyramid.condition:
            conds = self.trajectory_source(lengths, samples, rng)
        with torch.no_grad():
            return self.pyramid.sample_levels(lengths, samples, rng, detail_noise=detail_noise, noise_scale=noise_scale,
                                              conds=conds)

    def level_lengths(self, length: int, samples: int) -> list[int]:
        """The pyramid's level lengths for `samples` motions of `length` frames, if they fit."""
        if samples < 1:
            raise GenerationError(f"samples must be at least 1, got {samples}")
        lengths = self.dataset.generation_lengths(length) if length > 0 else [0]
        if lengths[0] <= self.cfg.model.kernel_size // 2:  # reflect padding needs a few frames
            raise GenerationError(f"length {length} is too short: its coarsest level would have {lengths[0]} frames")
        _check_memory(samples * length * self.bytes_per_frame(), f"{samples} samples of {length} frames need",
                      "ask for fewer or shorter samples")
        return lengths

    def check_input(self, path, fps: float | None = TARGET_FPS) -> None:
        """Refuse a BVH input (content, trajectory, key frames) too large to read and generate
        from in the memory free now, before any of it is read."""
        header = frame_header(path)
        if header is None:  # read_like says what is wrong with it
            return
        frames, frame_time = header
        kept = frames if fps is None else frames // max(1, round(1.0 / (fps * frame_time)))
        size = Path(path).stat().st_size
        _check_memory(READ_BYTES_PER_BYTE * size + kept * self.bytes_per_frame(),
                      f"{path}: reading its {frames} frames ({size / 2**30:.1f} GiB) and generating from them need",
                      "use a shorter clip")

    @cached_property
    def trajectory_source(self) -> "TrajectorySource":
        """A conditional run's trajectory run, which samples the trajectories it follows by default:
        the copy in its folder (RunDir.trajectory_run), or else the one its config names."""
        from .edit import TrajectorySource  # here: edit.py builds on this module

        own = RunDir(self.run_dir).trajectory_run
        return TrajectorySource.load(own if own.is_dir() else self.cfg.model.trajectory_run, self.dataset, "cpu")

    def bytes_per_frame(self) -> int:
        """Peak memory of one generated frame: measured on Salsa (widest layer 261) at 10-14 KB,
        about 13 activations of the widest layer alive at once; 16 leaves a margin."""
        widest = max(m.out_channels for m in self.pyramid.modules() if isinstance(m, torch.nn.Conv1d))
        return 16 * 4 * widest

    def reconstruct(self, clip: int) -> torch.Tensor:
        """(1, channels, T): the chain run on a clip's z*, which should reproduce that clip (a
        conditional run given the clip's own trajectory)."""
        return self.reconstruct_levels(clip)[-1]

    def reconstruct_levels(self, clip: int) -> list[torch.Tensor]:
        """`reconstruct` at every level of the pyramid, (1, channels, frames) each."""
        pyramid, data = clip_pyramids(self.cfg, self.dataset, self.pyramid)[clip], self.dataset.clips[clip]
        conds = [level[None] for level in data.levels()] if self.pyramid.condition else None
        with torch.no_grad():
            return pyramid.reconstruct(data.level_lengths, conds=conds)

    def evaluate(self, samples: int = 200, length_factor: float = 2.0, seed: int = 0, batch: int = 8,
                 progress: bool = False, noise_scale: float = 1.0) -> Quality:
        """The original's evaluation: mean coverage, global and local diversity of `samples` motions
        of `length_factor` times the clip's length, the reconstruction error from z*, and the
        samples' jitter and foot skating relative to the clip's (naturalness.py). A multi-clip
        run's samples are `length_factor` times all clips long, and scored against each clip (the
        means pool them), its reconstruction error the clips' mean."""
        finest = self.dataset.num_levels - 1
        return self.evaluate_levels(samples, length_factor, seed, batch, progress, noise_scale, [finest])[finest]

    def evaluate_levels(self, samples: int = 200, length_factor: float = 2.0, seed: int = 0, batch: int = 8,
                        progress: bool = False, noise_scale: float = 1.0,
                        levels: list[int] | None = None) -> dict[int, Quality]:
        """`evaluate` at each of `levels` (default: all) of the same samples, each level's motion
        against the clip at that level: where in the pyramid quality is won or lost. The finest
        level's is `evaluate`'s."""
        if samples < 1 or batch < 1 or not length_factor > 0 or not noise_scale >= 0:
            raise GenerationError(f"samples and batch must be at least 1, the length factor positive and the noise "
                                  f"scale not negative, got {samples}, {batch}, {length_factor} and {noise_scale}")
        levels = range(self.dataset.num_levels) if levels is None else levels
        length, scorers = self.evaluation_length(length_factor), {l: Scorer(self.dataset, l) for l in levels}
        scores = {l: {} for l in levels}
        bar = progress_bar(math.ceil(samples / batch), f"evaluating {samples} samples", enabled=progress, unit="batch")
        for start in range(0, samples, batch):
            count = min(batch, samples - start)
            generated = self.generate_levels(length, count, seed=seed * 1_000_003 + start, noise_scale=noise_scale)
            for l in levels:
                for name, values in scorers[l](generated[l]).items():
                    scores[l].setdefault(name, []).append(values)
            bar.update()
        bar.close()
        clips = range(len(self.dataset.clips))
        pairs = [(self.reconstruct_levels(k), self.dataset.clips[k].levels()) for k in clips]  # (rec, real) per clip
        quality = {}
        for l in levels:
            metrics = {k: torch.cat(v).mean().item() for k, v in scores[l].items()}
            metrics["rec_error"] = sum((rec[l][0] - real[l]).abs().mean().item() for rec, real in pairs) / len(clips)
            quality[l] = Quality.from_dict(metrics)
        return quality

    def evaluation_length(self, length_factor: float = 2.0) -> int:
        return round(self.dataset.num_frames * length_factor)

    def sampling(self, samples: int = 200, length_factor: float = 2.0, seed: int = 0,
                 noise_scale: float = 1.0) -> dict:
        """How `evaluate` sampled, for the records beside its Quality (an evaluation line, an export's
        metrics): samples, length, sample_seed (not the seed the run was trained with, which an
        export records as `seed`), and noise_scale when not 1."""
        sampled = {"samples": samples, "length": self.evaluation_length(length_factor), "sample_seed": seed}
        if noise_scale != 1.0:
            sampled["noise_scale"] = noise_scale
        return sampled

    def write(self, features: torch.Tensor, out_dir, prefix: str = "sample",
              begin_xz: torch.Tensor | None = None) -> list[Path]:
        """Each (channels, T) sample as <prefix>-NNN.bvh, plus all of them in <prefix>.npz. The
        root starts at `begin_xz` (default: where the first clip starts)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        d, paths = self.dataset, []
        start = d.clips[0].begin_xz if begin_xz is None else begin_xz
        for k, sample in enumerate(features):
            motion, _ = decode(sample, d.layout, start, d.fps)
            path = out_dir / f"{prefix}-{k:03d}.bvh"
            write_bvh(path, motion_to_bvh(motion, d.skeleton))
            paths.append(path)
        # In the original's units, whatever data.root_scale the run trained with: the file means one thing.
        np.savez_compressed(out_dir / f"{prefix}.npz", features=convert(features, d.layout, RAW).numpy(), fps=d.fps)
        return paths

    def write_fixed(self, features: torch.Tensor, out_dir, prefix: str = "sample",
                    begin_xz: torch.Tensor | None = None, progress: bool = False) -> tuple[list[Path], ContactFix]:
        """Each (channels, T) sample with its feet pinned during their predicted contacts (the
        original's fix_contact.py) as <prefix>-NNN-fixed.bvh, and the foot skating before and after."""
        fix, paths = fix_samples(self.dataset, features, begin_xz=begin_xz, progress=progress), []
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for k, motion in enumerate(fix.motions):
            paths.append(Path(out_dir) / f"{prefix}-{k:03d}-fixed.bvh")
            write_bvh(paths[-1], motion_to_bvh(motion, self.dataset.skeleton))
        return paths, fix


def free_path(path: Path) -> Path:
    """`path` if it does not exist or is an empty folder, else the first free `path-2`, `path-3`...:
    a new output goes beside the earlier ones, never over them."""
    candidates = (path.with_name(f"{path.name}-{k}") if k > 1 else path for k in itertools.count(1))
    return next(p for p in candidates if new_or_empty(p))


def load_run(run_dir) -> TrainedRun:
    """A run folder (or an exported one): config.yaml, data.npz and checkpoint.pt."""
    run = RunDir(run_dir)
    run_dir = run.path
    for path in (run.config, run.data, run.checkpoint):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: is {run_dir} a ganimator run folder?")
    cfg = load_config([f"config={run.config}"])
    dataset = MotionDataset.load(run.data)
    pyramid, _ = build_models(cfg, dataset)
    state = load_checkpoint_file(run.checkpoint)
    with checkpoint_fits(run.checkpoint):
        pyramid.load_state_dict(state["pyramid"])
    pyramid.eval()
    stages = len(stage_levels(cfg.model, dataset.num_levels, str(run.data)))
    if state["stage"] < stages:
        raise CheckpointError(f"{run_dir} has trained {state['stage']} of {stages} stages; "
                           "continue it with ganimator-train ... resume=true")
    return TrainedRun(run_dir, cfg, dataset, pyramid)
