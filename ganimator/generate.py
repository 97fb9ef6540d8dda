"""Loading a trained run, generating motion of any length, and writing it as BVH and npz."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from .bvh import write_bvh
from .config import load_config, stage_levels
from .dataset import MotionDataset
from .errors import UserError
from .features import motion_to_bvh
from .metrics import Quality, pose_frames, pose_scores
from .naturalness import Naturalness
from .networks import GeneratorPyramid, build_models
from .rundir import CheckpointError, RunDir, checkpoint_fits, load_checkpoint_file, new_or_empty


class GenerationError(UserError, ValueError):
    """A generation request the trained run cannot serve."""


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: DictConfig
    dataset: MotionDataset
    pyramid: GeneratorPyramid

    def generate(self, length: int, samples: int = 1, seed: int = 0, detail_noise: float = 0.0,
                 noise_scale: float = 1.0) -> torch.Tensor:
        """(samples, channels, length) new motion features. As the original evaluates, only the
        coarsest level gets noise by default; detail_noise > 0 adds scaled noise above it, and
        noise_scale multiplies all of it."""
        if samples < 1:
            raise GenerationError(f"samples must be at least 1, got {samples}")
        lengths = self.dataset.generation_lengths(length) if length > 0 else [0]
        if lengths[0] <= self.cfg.model.kernel_size // 2:  # reflect padding needs a few frames
            raise GenerationError(f"length {length} is too short: its coarsest level would have {lengths[0]} frames")
        need, free = samples * length * self.bytes_per_frame(), psutil.virtual_memory().available
        if need > 0.8 * free:
            raise GenerationError(f"{samples} samples of {length} frames need about {need / 2**30:.1f} GiB, and "
                                  f"{free / 2**30:.1f} GiB are free: ask for fewer or shorter samples")
        rng = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return self.pyramid.sample(lengths, samples, rng, detail_noise=detail_noise, noise_scale=noise_scale)

    def bytes_per_frame(self) -> int:
        """Peak memory of one generated frame: measured on Salsa (widest layer 261) at 10-14 KB,
        about 13 activations of the widest layer alive at once; 16 leaves a margin."""
        widest = max(m.out_channels for m in self.pyramid.modules() if isinstance(m, torch.nn.Conv1d))
        return 16 * 4 * widest

    def reconstruct(self) -> torch.Tensor:
        """(1, channels, T): the chain run on z*, which should reproduce the training clip."""
        with torch.no_grad():
            return self.pyramid.reconstruct(self.dataset.level_lengths)[-1]

    def evaluate(self, samples: int = 200, length_factor: float = 2.0, seed: int = 0, batch: int = 8,
                 progress: bool = False, noise_scale: float = 1.0) -> dict:
        """The original's evaluation: mean coverage, global and local diversity of `samples` motions
        of `length_factor` times the clip's length, the reconstruction error from z*, and the
        samples' jitter and foot skating relative to the clip's (naturalness.py): a `Quality`'s
        fields. Then how it was sampled (samples, length, sample_seed: not the seed the run was
        trained with, which an export records as `seed`; noise_scale when not 1)."""
        if samples < 1 or batch < 1 or not length_factor > 0 or not noise_scale >= 0:
            raise GenerationError(f"samples and batch must be at least 1, the length factor positive and the noise "
                                  f"scale not negative, got {samples}, {batch}, {length_factor} and {noise_scale}")
        layout, real = self.dataset.layout, self.dataset.features
        length = round(real.shape[-1] * length_factor)
        real_frames, natural = pose_frames(real, layout), Naturalness(self.dataset)
        scores = {}
        for start in tqdm(range(0, samples, batch), desc=f"{samples} samples", unit="batch", disable=not progress):
            count = min(batch, samples - start)
            generated = self.generate(length, count, seed=seed * 1_000_003 + start, noise_scale=noise_scale)
            frames = pose_frames(generated, layout)
            for name, values in {**pose_scores(frames, real_frames), **natural(generated)}.items():
                scores.setdefault(name, []).append(values)
        metrics = {k: torch.cat(v).mean().item() for k, v in scores.items()}
        metrics["rec_error"] = (self.reconstruct()[0] - real).abs().mean().item()
        sampled = {"samples": samples, "length": length, "sample_seed": seed}
        if noise_scale != 1.0:
            sampled["noise_scale"] = noise_scale
        return {**Quality.from_dict(metrics).as_dict(), **sampled}

    def write(self, features: torch.Tensor, out_dir, prefix: str = "sample") -> list[Path]:
        """Each (channels, T) sample as <prefix>-NNN.bvh, plus all of them in <prefix>.npz."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, sample in enumerate(features):
            motion, contacts = self.dataset.decode(sample)
            motion.fps = self.dataset.motion.fps
            path = out_dir / f"{prefix}-{k:03d}.bvh"
            write_bvh(path, motion_to_bvh(motion, self.dataset.skeleton))
            paths.append(path)
        np.savez_compressed(out_dir / f"{prefix}.npz", features=features.numpy(), fps=self.dataset.motion.fps)
        return paths


def free_path(path: Path) -> Path:
    """`path` if it does not exist or is an empty folder, else the first free `path-2`, `path-3`...:
    a new output goes beside the earlier ones, never over them."""
    candidates = (path.with_name(f"{path.name}-{k}") if k > 1 else path for k in itertools.count(1))
    return next(p for p in candidates if new_or_empty(p))


def load_run(run_dir, allow_partial: bool = False) -> TrainedRun:
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
    if state["stage"] < stages and not allow_partial:
        raise CheckpointError(f"{run_dir} has trained {state['stage']} of {stages} stages; "
                           "continue it with ganimator-train ... resume=true")
    return TrainedRun(run_dir, cfg, dataset, pyramid)
