"""Fused population training: K configurations of one clip trained at once, as one computation.

GANimator's networks are small, so one run leaves a GPU mostly idle and spends its time launching
kernels. A population runs K members side by side on the channel axis: every convolution is one
grouped convolution over all of them (`trainer.train_iteration`). On a CPU a lone run already
keeps the cores about half busy, and fusing gains little (benchmarks/population.py).

Members may differ in what a sweep searches (noise amplitude scales, loss weights, learning rates,
critic steps, seed); everything that shapes the networks, the data or the schedule must be equal.
Each member is a whole `Trainer`: its own run folder, checkpoints, history and callbacks, so it
is exactly the run it would have been alone. A member whose callback stops it, or whose losses
diverge, leaves the population, and the others go on.

    population = Population([cfg_a, cfg_b, cfg_c])
    outcomes = population.fit()      # one TrainResult, or the TrainingDiverged error, per member
"""
from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .config import ConfigError, npz_filename
from .dataset import MotionDataset
from .trainer import Callback, Trainer, TrainingDiverged, TrainResult, train_iteration

# What members may differ in: the values a sweep searches, and where and how each one reports.
SEARCHABLE_KEYS = ("model.noise_amp_scale", "model.stage_noise_amp_scale", "optim.lr_g", "optim.lr_d",
                   "optim.lambda_rec", "optim.lambda_gp", "optim.lambda_consistency", "optim.critic_steps",
                   "util.seed")
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


class Population:
    def __init__(self, cfgs: Sequence[DictConfig], dataset: MotionDataset | None = None,
                 callbacks: Sequence[Sequence[Callback]] | None = None,
                 after_stage: Callable[[int, list[Trainer]], None] | None = None,
                 on_leave: Callable[[int, TrainResult | TrainingDiverged], None] | None = None):
        """`callbacks`: each member's own trainer callbacks; `after_stage(stage, active)`: called once
        every member has ended a stage, with the members that go on (a sweep checkpoints them there);
        `on_leave(index, outcome)`: called as a member stops or diverges, while the others train on."""
        check_fusable(cfgs)
        if dataset is None:
            dataset = MotionDataset.load(npz_filename(cfgs[0]))
        callbacks = callbacks or [() for _ in cfgs]
        quiet = [OmegaConf.merge(c, {"util": {"progress": False}}) if len(cfgs) > 1 else c for c in cfgs]
        self.progress = bool(cfgs[0].util.progress)
        self.members = [Trainer(cfg, dataset, cbs) for cfg, cbs in zip(quiet, callbacks)]
        self.outcomes: list[TrainResult | TrainingDiverged | None] = [None] * len(self.members)
        self.reports: list[MemoryReport] = []
        self.after_stage, self.on_leave = after_stage, on_leave

    def fit(self) -> list[TrainResult | TrainingDiverged]:
        """Train every member through all stages; a member's outcome is its TrainResult, or the
        TrainingDiverged error that ended it."""
        for m in self.members:
            m.begin()
        positions = {(m.stage, m.iteration) for m in self.members}
        if len(positions) > 1:
            raise ValueError(f"population members resume from different points (stage, iteration): {positions}")
        active = list(self.members)
        num_stages = len(active[0].stages)
        while active and active[0].stage < num_stages:
            for m in active:
                levels = m.begin_stage()
            first, stage = active[0], active[0].stage  # `first` may leave; its settings are everyone's
            bar = tqdm(total=first.cfg.scheduling.train_data_iter, initial=first.iteration, dynamic_ncols=True,
                       disable=not self.progress or len(self.members) == 1,
                       desc=f"stage {stage + 1}/{num_stages} levels {levels}, {len(active)} members")
            measured = False
            while active and active[0].iteration < active[0].cfg.scheduling.train_data_iter:
                losses = train_iteration(active, levels) if measured else self._measured_iteration(active, levels)
                measured = True
                for m, member_losses in zip(list(active), losses):
                    if self._after_iteration(m, member_losses):
                        active.remove(m)
                bar.update()
                bar.set_description(f"stage {stage + 1}/{num_stages} levels {levels}, {len(active)} members")
            bar.close()
            for m in list(active):
                if m.end_stage():
                    active.remove(m)
                    self._leave(m, m.result)
            if self.after_stage is not None:
                self.after_stage(stage, list(active))
        for m in active:
            m.result.finished = True
            self.outcomes[self.members.index(m)] = m.result
        return self.outcomes

    def _after_iteration(self, member: Trainer, losses: dict[str, float]) -> bool:
        """The member's own bookkeeping; True when it leaves the population (stopped or diverged)."""
        try:
            stopped = member.after_iteration(losses)
        except TrainingDiverged as e:
            tqdm.write(f"member {self.members.index(member)} ({member.run_dir}) leaves the population: {e}", file=sys.stderr)
            self._leave(member, e)
            return True
        if stopped:
            self._leave(member, member.result)
        return stopped

    def _leave(self, member: Trainer, outcome: TrainResult | TrainingDiverged) -> None:
        index = self.members.index(member)
        self.outcomes[index] = outcome
        if self.on_leave is not None:
            self.on_leave(index, outcome)

    def _measured_iteration(self, active: list[Trainer], levels: list[int]) -> list[dict[str, float]]:
        """A stage's first iteration, measured for the memory report."""
        device = active[0].device
        free, peak_before = _free_mib(device), _peak_mib(device)
        losses = train_iteration(active, levels)
        weights = sum(t.numel() * t.element_size() for t in [*active[0].pyramid.parameters(),
                                                              *active[0].critics.parameters()])
        working = max(_peak_mib(device) - peak_before, 0.0)  # on a CPU: 0 unless the process grew
        report = MemoryReport(len(active), 3 * weights / 2**20, working / len(active), free, str(device))
        self.reports.append(report)  # weights x 3: Adam keeps two moments per weight
        if len(self.members) > 1:
            tqdm.write(str(report), file=sys.stderr)
        return losses


def _free_mib(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.mem_get_info(device)[0] / 2**20
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 1024


def _peak_mib(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's, or this process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
