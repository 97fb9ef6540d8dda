"""Fused population training: K configurations of one clip trained at once, as one computation.

GANimator's networks are small, so one run leaves a GPU mostly idle and spends its time launching
kernels. A population runs K members side by side on the channel axis: every convolution is one
grouped convolution over all of them (`step.train_iteration`). On a CPU a lone run already
keeps the cores about half busy, and fusing gains little (benchmarks/population.py).

Members may differ in what a sweep searches (noise amplitude scales, loss weights, learning rates,
critic steps, seed); everything that shapes the networks, the data or the schedule must be equal.
Each member is a whole `Trainer`: its own run folder, checkpoints and history, so it is exactly
the run it would have been alone. A member that a hook stops, or whose losses diverge, leaves the
population, and the others go on. The stage loop is the trainer's `fit`; this module checks that
the members can be fused and reports what a member costs in memory.

    population = Population([cfg_a, cfg_b, cfg_c])
    outcomes = population.fit(hooks)  # one TrainResult, or the TrainingDiverged error, per member
"""
from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import psutil
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .config import ConfigError, npz_filename
from .dataset import MotionDataset
from .trainer import Hooks, Losses, Outcome, Trainer, fit, training_data

# What members may differ in: the values a sweep searches, and where and how each one reports.
SEARCHABLE_KEYS = ("model.noise_amp_scale", "model.stage_noise_amp_scale", "optim.lr_g", "optim.lr_d",
                   "optim.lambda_rec", "optim.lambda_gp", "optim.lambda_consistency", "optim.critic_steps",
                   "optim.lr_warmup", "optim.lr_final", "optim.ema", "optim.lambda_floor", "optim.lambda_jerk",
                   "optim.lambda_jerk_rec", "util.seed")
MEMBER_KEYS = (*SEARCHABLE_KEYS, "util.run_dir", "util.experiment_name", "util.progress", "tracking")


def check_fusable(cfgs: Sequence[DictConfig]) -> None:
    """Members must share every key outside MEMBER_KEYS; the error names the first that differs."""
    if not cfgs:
        raise ConfigError("a population needs at least one member")
    flat = [_flatten(OmegaConf.to_container(c, resolve=True)) for c in cfgs]
    for key, value in flat[0].items():
        if key.startswith(MEMBER_KEYS):
            continue
        for k, other in enumerate(flat[1:], start=1):
            if other.get(key) != value:
                raise ConfigError(f"population members must share config key {key!r}: "
                                  f"member 0 has {value!r}, member {k} has {other.get(key)!r}")
    run_dirs = [c.util.run_dir for c in cfgs]
    if len(set(run_dirs)) != len(run_dirs):
        raise ConfigError(f"population members need their own util.run_dir, got {run_dirs}")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class MemoryReport:
    """What one member costs, measured on the first iteration of a stage, and how many fit."""

    members: int
    state_mib: float  # weights and optimiser moments of one member
    activations_mib: float  # one member's share of the iteration's peak working memory
    free_mib: float  # what the device had free before the iteration
    device: str

    @property
    def per_member_mib(self) -> float:
        return self.state_mib + self.activations_mib

    @property
    def largest(self) -> int:
        # The members' weights were already allocated when free memory was read.
        return int((self.free_mib + self.members * self.state_mib) // max(self.per_member_mib, 1e-9))

    def __str__(self) -> str:
        return (f"population of {self.members}: {self.per_member_mib:.1f} MiB a member (weights and optimiser "
                f"{self.state_mib:.1f}, working memory {self.activations_mib:.1f}); about {self.largest} members "
                f"fit in the {self.free_mib / 1024:.1f} GiB free on {self.device}")


class Population(Hooks):
    def __init__(self, cfgs: Sequence[DictConfig], dataset: MotionDataset | None = None,
                 trajectories: Callable[[DictConfig, MotionDataset], object] | None = None):
        """`trajectories(cfg, dataset)`: a conditional member's (run_hooks.load_trajectories)."""
        check_fusable(cfgs)
        if dataset is None:
            dataset = MotionDataset.load(npz_filename(cfgs[0]))
        dataset = training_data(cfgs[0], dataset)  # in the members' root units (data.root_scale), once for all
        self.members = [Trainer(cfg, dataset, trajectories and trajectories(cfg, dataset)) for cfg in cfgs]
        self.reports: list[MemoryReport] = []

    def fit(self, hooks: Sequence[Hooks] = ()) -> list[Outcome]:
        """Train every member through all stages; a member's outcome is its TrainResult, or the
        TrainingDiverged error that ended it."""
        return fit(self.members, [self, *hooks])

    def first_iteration(self, active: list[Trainer], iterate: Callable[[], Losses]) -> Losses:
        """A stage's first iteration, measured for the memory report."""
        device = active[0].device
        free, peak_before = _free_mib(device), _start_peak(device)
        losses = iterate()
        member = active[0].member
        weights = sum(t.numel() * t.element_size() for t in [*member.pyramid.parameters(),
                                                              *member.critics.parameters()])
        working = max(_peak_mib(device) - peak_before, 0.0)  # on a CPU: 0 unless the process grew
        report = MemoryReport(len(active), 3 * weights / 2**20, working / len(active), free, str(device))
        self.reports.append(report)  # weights x 3: Adam keeps two moments per weight
        if len(self.members) > 1:
            tqdm.write(str(report), file=sys.stderr)
        return losses


def _free_mib(device: torch.device) -> float:
    """Memory the device has free now."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    return psutil.virtual_memory().available / 2**20


def _start_peak(device: torch.device) -> float:
    """Begin measuring an iteration's peak memory; returns the baseline to subtract. On CUDA the
    allocator's peak counter is reset here, on purpose: it is how one iteration's peak is read.
    (A caller measuring its own peak across a population's training sees it restart at each stage.)"""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return _peak_mib(device)


def _peak_mib(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's, or this process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
