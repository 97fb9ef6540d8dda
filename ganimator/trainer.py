"""Training: all stages of the pyramid in one process, each frozen once trained.

One iteration of a stage (its levels: groups of `model.group_size`, or `model.stages`) is, as
in the original: `critic_steps` critic updates with WGAN-GP, one adversarial generator update
(with the contact consistency loss) and one reconstruction update. Every random sub-step sees a
fresh output of the frozen stages below, as in the original; they are drawn for all sub-steps of
an iteration in one batched call without autograd, and their (deterministic) reconstruction once
per stage. The original recomputed both, with autograd, for each of the seven sub-steps.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .bvh import atomic_write_text
from .config import ConfigError, check_device, npz_filename, stage_levels, stage_noise_scales, to_yaml
from .dataset import MotionDataset
from .losses import ContactConsistency, critic_loss, generator_adversarial_loss, reconstruction_loss
from .metrics import quality, pose_frames
from .networks import Critic, FusedPyramid, FusedStack, Generator, GeneratorPyramid, build_stacks

CHECKPOINT_VERSION = 3  # 3: the original's channel layout and skeleton-aware networks
CHECKPOINT, CONFIG, DATA, HISTORY = "checkpoint.pt", "config.yaml", "data.npz", "history.jsonl"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainEvent:
    """What callbacks receive after each validation ('validation') and finished stage ('stage_end')."""

    kind: str
    stage: int  # 0-based index into model.stages
    levels: list[int]
    iteration: int  # iterations done in this stage
    step: int  # iterations done in all stages
    metrics: dict[str, float]
    checkpoint: Path | None  # a checkpoint holding exactly this state, when one was written
    samples: torch.Tensor | None = field(default=None, repr=False)  # validation motions (N, C, T) at levels[-1]


Callback = Callable[[TrainEvent], "bool | None"]  # a truthy return stops training


@dataclass
class TrainResult:
    run_dir: Path
    finished: bool  # all stages trained (False: a callback stopped the run)
    events: list[TrainEvent] = field(default_factory=list)


class FakePool:
    """The original's history of generated motions: half the time the critic sees an older fake."""

    def __init__(self, size: int):
        self.size, self.items = size, []

    def query(self, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return fake
        if len(self.items) < self.size:
            self.items.append(fake.detach().clone())
            return fake
        if torch.rand((), generator=rng, device=fake.device) > 0.5:
            k = int(torch.randint(self.size, (), generator=rng, device=fake.device))
            older, self.items[k] = self.items[k], fake.detach().clone()
            return older
        return fake


class Trainer:
    def __init__(self, cfg: DictConfig, dataset: MotionDataset | None = None, callbacks: Sequence[Callback] = ()):
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.run_dir = Path(cfg.util.run_dir)
        if dataset is None:  # a resumed run trains on its own copy of the data
            own = self.run_dir / DATA
            dataset = MotionDataset.load(own if cfg.util.resume and own.exists() else npz_filename(cfg))
        self.dataset = dataset
        check_device(cfg.util.device)
        self.device = torch.device(cfg.util.device)
        self.stages = stage_levels(cfg.model, self.dataset.num_levels, npz_filename(cfg))
        self.lengths = self.dataset.level_lengths
        self.reals = [lvl[None].to(self.device) for lvl in self.dataset.levels()]

        self.pyramid, self.critics = build_models(cfg, self.dataset)
        self.pyramid.to(self.device)
        self.critics.to(self.device)
        o = cfg.optim
        # One fused kernel per optimiser step: 14 steps an iteration, each over a few small tensors.
        self.opt_g = [torch.optim.Adam(g.parameters(), lr=o.lr_g, fused=True) for g in self.pyramid.generators]
        self.opt_d = [torch.optim.Adam(c.parameters(), lr=o.lr_d, fused=True) for c in self.critics]
        self.pools = [FakePool(o.fake_pool_size) for _ in self.critics]
        self.consistency = ContactConsistency(self.dataset.skeleton, self.dataset.layout).to(self.device)
        self.rng = torch.Generator(self.device).manual_seed(cfg.util.seed)
        self.stage, self.iteration, self.step = 0, 0, 0

    # ---- the stage loop ------------------------------------------------------------------

    def fit(self) -> TrainResult:
        self.begin()
        while self.stage < len(self.stages):
            levels = self.begin_stage()
            while self.iteration < self.cfg.scheduling.train_data_iter:
                if self.after_iteration(train_iteration([self], levels)[0]):
                    return self.result
            if self.end_stage():
                return self.result
        self.result.finished = True
        return self.result

    # A population (population.py) drives several trainers through these same steps.

    def begin(self) -> None:
        if self.cfg.util.num_threads > 0:
            torch.set_num_threads(self.cfg.util.num_threads)
        self._prepare_run_dir()
        self.result = TrainResult(self.run_dir, finished=False)

    def begin_stage(self) -> list[int]:
        levels = self.stages[self.stage]
        self._freeze_below(levels[0])
        with torch.no_grad():
            self.frozen_rec = self.pyramid.reconstruct(self.lengths, range(levels[0]))[-1] if levels[0] else None
        self._bar = tqdm(total=self.cfg.scheduling.train_data_iter, initial=self.iteration,
                         disable=not self.cfg.util.progress, dynamic_ncols=True,
                         desc=f"stage {self.stage + 1}/{len(self.stages)} levels {levels}")
        self._running: dict[str, list[float]] = {}
        return levels

    def after_iteration(self, losses: dict[str, float]) -> bool:
        """Count an iteration of the current stage, validate and checkpoint when due. True when a
        callback stopped the run (its state is saved)."""
        sched, levels = self.cfg.scheduling, self.stages[self.stage]
        try:
            self._check_finite(losses)
        except TrainingDiverged:
            self._bar.close()
            raise
        self.iteration += 1
        self.step += 1
        for k, v in losses.items():
            self._running.setdefault(k, []).append(v)
        self._bar.update()
        self._bar.set_postfix({k.split("/")[1][:3] + k.split("/")[0]: f"{v:.3g}" for k, v in losses.items()
                               if not k.endswith(("gp", "contact"))}, refresh=False)
        last = self.iteration == sched.train_data_iter
        checkpoint = self.iteration % sched.checkpoint_every == 0 and not last
        if self.iteration % sched.validate_every == 0 and not last:
            metrics, samples = self.validate(levels)
            path = self.save_checkpoint() if checkpoint else None
            if self._emit("validation", levels, self._averages(metrics), samples, path):
                self.save_checkpoint()  # stopping keeps everything done so far
                self._bar.close()
                return True
        elif checkpoint:
            self.save_checkpoint()
        return False

    def end_stage(self) -> bool:
        """Validate and checkpoint the finished stage; True when a callback stopped the run."""
        self._bar.close()
        levels = self.stages[self.stage]
        metrics, samples = self.validate(levels)
        metrics, stage_done = self._averages(metrics), self.stage
        self.stage, self.iteration = self.stage + 1, 0
        path = self.save_checkpoint(stage_file=f"stage-{stage_done + 1}.pt")
        return self._emit("stage_end", levels, metrics, samples, path, stage_done,
                          self.cfg.scheduling.train_data_iter)

    def _averages(self, metrics: dict[str, float]) -> dict[str, float]:
        """The losses averaged since the last report, then the validation metrics."""
        out = {**{k: sum(v) / len(v) for k, v in self._running.items()}, **metrics}
        self._running = {}
        return out

    def _emit(self, kind: str, levels: list[int], metrics: dict, samples, path,
              stage: int | None = None, iteration: int | None = None) -> bool:
        event = TrainEvent(kind, self.stage if stage is None else stage, levels,
                           self.iteration if iteration is None else iteration, self.step, metrics, path, samples)
        self.result.events.append(replace(event, samples=None))  # a long run would keep every sample otherwise
        with open(self.run_dir / HISTORY, "a") as f:
            record = {k: v for k, v in asdict(self.result.events[-1]).items() if k != "samples"}
            f.write(json.dumps({**record, "checkpoint": str(path) if path else None}) + "\n")
        stop = False
        for callback in self.callbacks:
            stop = bool(callback(event)) or stop
        return stop

    def _freeze_below(self, level: int) -> None:
        for l, g in enumerate(self.pyramid.generators):
            g.train(l >= level)
            g.requires_grad_(l >= level)

    def _check_finite(self, losses: dict[str, float]) -> None:
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"loss {bad[0]!r} is {losses[bad[0]]} at stage {self.stage + 1}, iteration {self.iteration + 1}; "
                f"the last good checkpoint in {self.run_dir} is kept (lower the learning rates or lambda_gp)")

    @torch.no_grad()
    def validate(self, levels: list[int]) -> tuple[dict[str, float], torch.Tensor]:
        """Reconstruction error per level, and random samples at the stage's top level with their metrics."""
        top = levels[-1]
        out = {}
        for l, rec in enumerate(self.pyramid.reconstruct(self.lengths, range(top + 1))):
            if l >= levels[0]:
                out[f"{l}/rec_error"] = reconstruction_loss(rec, self.reals[l]).item()
        # Its own generator, seeded by the step, so validating never shifts the training noise.
        rng = torch.Generator(self.device).manual_seed(self.cfg.util.seed * 1_000_003 + self.step)
        samples = self.pyramid.sample(self.lengths, self.cfg.scheduling.validation_samples, rng, range(top + 1))
        if samples.shape[0]:
            layout = self.dataset.layout
            out.update(quality(pose_frames(samples, layout).cpu(), pose_frames(self.reals[top][0], layout).cpu()))
        return out, samples.cpu()

    # ---- run folder and checkpoints -----------------------------------------------------

    def _prepare_run_dir(self) -> None:
        ckpt = self.run_dir / CHECKPOINT
        if self.cfg.util.resume:
            if not ckpt.exists():
                raise FileNotFoundError(f"resume=true but {ckpt} does not exist")
            path, state = self._newest_readable_state()
            with checkpoint_fits(path):
                self.load_state(state)
            history = self.run_dir / HISTORY  # events after the checkpoint will happen again
            if history.exists():
                kept = [line for line, event in read_history(history) if event["step"] <= self.step]
                atomic_write_text(history, "".join(kept))
            return
        if ckpt.exists():
            raise FileExistsError(f"{self.run_dir} already holds a run; pass resume=true to continue it "
                                  "or choose another run_dir")
        if not new_or_empty(self.run_dir):
            raise FileExistsError(f"run_dir {self.run_dir} exists and is not empty: a new run needs a new or empty folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg = OmegaConf.merge(self.cfg, {"data": {"npz_filename": DATA}, "util": {"resume": False}})
        (self.run_dir / CONFIG).write_text(to_yaml(cfg))
        self.dataset.save(self.run_dir / DATA)

    def _newest_readable_state(self) -> tuple[Path, dict]:
        """checkpoint.pt, or when it is corrupt or truncated the newest readable stage-K.pt."""
        stage_files = sorted(self.run_dir.glob("stage-*.pt"), key=lambda p: int(p.stem.split("-")[1]), reverse=True)
        errors = []
        for path in [self.run_dir / CHECKPOINT, *stage_files]:
            try:
                state = load_checkpoint_file(path)
            except CheckpointError as e:
                errors.append(str(e))
                continue
            if errors:
                print(f"warning: {'; '.join(errors)}; resuming from {path}", file=sys.stderr)
            return path, state
        raise CheckpointError("; ".join(errors) + f" (and no readable stage checkpoint in {self.run_dir})")

    def state_dict(self) -> dict:
        """Everything resuming needs. Frozen levels keep only their generator: their critics,
        optimiser states and fake pools are never used again, and are most of the bytes."""
        live = [l >= self._first_trainable() for l in range(len(self.critics))]
        keep = lambda items: [item if alive else None for item, alive in zip(items, live)]  # noqa: E731
        return {
            "version": CHECKPOINT_VERSION,
            "stage": self.stage, "iteration": self.iteration, "step": self.step,
            "pyramid": self.pyramid.state_dict(),
            "critics": keep([c.state_dict() for c in self.critics]),
            "opt_g": keep([o.state_dict() for o in self.opt_g]), "opt_d": keep([o.state_dict() for o in self.opt_d]),
            "pools": keep([p.items for p in self.pools]), "rng": self.rng.get_state(),
        }

    def _first_trainable(self) -> int:
        return self.stages[self.stage][0] if self.stage < len(self.stages) else len(self.critics)

    def save_checkpoint(self, stage_file: str | None = None) -> Path:
        path = self.run_dir / CHECKPOINT
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        if stage_file:
            stage_path = self.run_dir / stage_file
            shutil.copyfile(path, stage_path.with_name(f".{stage_file}.tmp"))
            os.replace(stage_path.with_name(f".{stage_file}.tmp"), stage_path)
            return stage_path
        return path

    def load_state(self, state: dict) -> None:
        self.pyramid.load_state_dict(state["pyramid"])
        for l, (critic, opt_g, opt_d, pool) in enumerate(zip(self.critics, self.opt_g, self.opt_d, self.pools)):
            if state["critics"][l] is not None:
                critic.load_state_dict(state["critics"][l])
                opt_g.load_state_dict(state["opt_g"][l])
                opt_d.load_state_dict(state["opt_d"][l])
                pool.items = [t.to(self.device) for t in state["pools"][l]]
        for opts, lr in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in (g for opt in opts for g in opt.param_groups):
                group["lr"] = lr  # the config, not the checkpoint, is the truth on resume
        self.rng.set_state(state["rng"])
        self.stage, self.iteration, self.step = state["stage"], state["iteration"], state["step"]


def new_or_empty(folder: Path) -> bool:
    """Whether `folder` may take new output: it does not exist, or is an empty folder."""
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def read_history(path: Path) -> list[tuple[str, dict]]:
    """history.jsonl as (line, event) pairs. A torn last line is what a crash leaves: it is dropped
    with a warning. Anything else unreadable is a one-line error naming the line."""
    try:
        lines = path.read_bytes().decode().splitlines(keepends=True)
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {e.start})") from None
    events = []
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("step"), int):
                raise ValueError("no integer 'step'")
        except ValueError as e:
            if number == len(lines) and not line.endswith("\n"):
                print(f"warning: {path}:{number}: dropped a torn last line (the run was interrupted while writing it)",
                      file=sys.stderr)
                break
            raise CheckpointError(f"{path}:{number}: not a history event ({e}); remove or fix the line") from None
        events.append((line if line.endswith("\n") else line + "\n", event))
    return events


def train_iteration(members: list[Trainer], levels: list[int]) -> list[dict[str, float]]:
    """One iteration of the stage `levels` for each member trainer, fused: every network call runs
    all K members at once, side by side on the channel axis (grouped convolutions).

    Each member draws noise from its own generator in the order a lone run does and steps only
    its own optimisers, so training K members together is training each alone. Members with fewer
    critic steps leave the last critic updates. A lone trainer is a population of one.
    """
    K, lo, first = len(members), levels[0], members[0]
    span, lengths, channels = range(lo, levels[-1] + 1), first.lengths, first.pyramid.channels
    steps = [m.cfg.optim.critic_steps for m in members]
    n = max(steps)
    per_member = lambda key: torch.tensor([m.cfg.optim[key] for m in members], device=first.device)  # noqa: E731
    pyramid = FusedPyramid([m.pyramid for m in members])
    losses: list[dict[str, float]] = [{} for _ in members]

    # Every random sub-step (n critic steps, then the adversarial one) draws a fresh chain, as
    # the original does: the frozen levels run once for all of them, batched, without autograd.
    # Rows of a member with fewer critic steps are zero padding, run but never used.
    def draws(m, n_m, level):
        z = m.pyramid.noise(level, n_m + 1, lengths[level], m.rng)
        return torch.cat([z[:n_m], z.new_zeros(n - n_m, *z.shape[1:]), z[n_m:]])

    noise = [[draws(m, n_m, l) for l in range(levels[-1] + 1)] for m, n_m in zip(members, steps)]
    noise = [torch.cat(level, dim=1) for level in zip(*noise)]  # members side by side
    with torch.no_grad():
        base = pyramid.run(range(lo), lengths, None, noise[:lo])[-1] if lo else None
        fakes = pyramid.run(span, lengths, base[:n] if lo else None, [z[:n] for z in noise[lo:]])

    lambda_gp = per_member("lambda_gp")
    for k in range(n):
        # Members with fewer critic steps leave the fused critic calls once theirs are done.
        active = [i for i, n_m in enumerate(steps) if k < n_m]
        total = 0.0
        for j, l in enumerate(levels):
            fresh = fakes[j][k:k + 1]
            if len(active) < K:
                fresh = torch.cat([fresh[:, i * channels:(i + 1) * channels] for i in active], dim=1)
            alphas = [torch.rand((), generator=members[i].rng, device=first.device) for i in active]
            shown = [members[i].pools[l].query(fresh[:, a * channels:(a + 1) * channels], members[i].rng)
                     for a, i in enumerate(active)]
            critic = FusedStack([members[i].critics[l].net for i in active])
            loss, w, gp = critic_loss(critic, first.reals[l], torch.cat(shown, dim=1), fresh,
                                      torch.stack(alphas), lambda_gp[active], len(active))
            total = total + loss.sum()
            for i, w_i, gp_i in zip(active, w.detach().tolist(), gp.detach().tolist()):
                losses[i][f"{l}/critic"], losses[i][f"{l}/gp"] = w_i, gp_i
        _step([members[i].opt_d[l] for i in active for l in levels], total)

    for m in members:
        m.critics.requires_grad_(False)
    lambda_consistency = per_member("lambda_consistency")
    prev, total = base[n:] if lo else None, 0.0
    for l, z in zip(levels, (z[n:] for z in noise[lo:])):
        fake = pyramid.run(range(l, l + 1), lengths, prev, [z])[0]
        adversarial = generator_adversarial_loss(FusedStack([m.critics[l].net for m in members]), fake, K)
        contact = first.consistency(fake, K)
        total = total + (adversarial + lambda_consistency * contact).sum()
        for i, (a_i, c_i) in enumerate(zip(adversarial.detach().tolist(), contact.detach().tolist())):
            losses[i][f"{l}/adversarial"], losses[i][f"{l}/contact"] = a_i, c_i
        prev = fake.detach()  # each level learns only from its own losses, as in the original
    _step([m.opt_g[l] for m in members for l in levels], total)
    for m in members:
        m.critics.requires_grad_(True)

    lambda_rec = per_member("lambda_rec")
    prev, total = torch.cat([m.frozen_rec for m in members], dim=1) if lo else None, 0.0
    for l in levels:
        rec = pyramid.reconstruct(lengths, range(l, l + 1), prev)[0]
        loss = reconstruction_loss(rec, first.reals[l], K)
        total = total + (lambda_rec * loss).sum()
        for i, r_i in enumerate(loss.detach().tolist()):
            losses[i][f"{l}/reconstruction"] = r_i
        prev = rec.detach()
    _step([m.opt_g[l] for m in members for l in levels], total)
    return losses


def _step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()


def build_models(cfg: DictConfig, dataset: MotionDataset) -> tuple[GeneratorPyramid, torch.nn.ModuleList]:
    """Generators and critics for every level, initialised from the seed without touching the global RNG."""
    m = cfg.model
    stages = stage_levels(m, dataset.num_levels, dataset.source or "the data")
    if m.kernel_size // 2 >= dataset.level_lengths[0]:  # padding reads kernel_size // 2 frames each side
        raise ConfigError(f"config key 'model.kernel_size' is {m.kernel_size}: it needs a coarsest level of more than "
                          f"{m.kernel_size // 2} frames, and {dataset.source or 'the data'}'s has {dataset.level_lengths[0]}")
    scales = torch.tensor([m.noise_amp_scale * scale for stage, scale in zip(stages, stage_noise_scales(m, len(stages)))
                           for _ in stage])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.util.seed)
        gens = [Generator(build_stacks(m, dataset.layout, dataset.skeleton, dataset.layout.channels))
                for _ in range(dataset.num_levels)]
        critics = [Critic(build_stacks(m, dataset.layout, dataset.skeleton, 1)) for _ in range(dataset.num_levels)]
    pyramid = GeneratorPyramid(gens, dataset.noise_amplitudes * scales, dataset.z_star, m.full_noise)
    return pyramid, torch.nn.ModuleList(critics)


@contextlib.contextmanager
def checkpoint_fits(path):
    """A readable checkpoint of another clip, rig or network width is one line, not torch's page."""
    try:
        yield
    except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        detail = lines[1] if len(lines) > 1 else lines[0]  # torch's first line only names the module
        raise CheckpointError(f"{path}: does not fit this run's model and data ({detail})") from None


def load_checkpoint_file(path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable ganimator checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a ganimator checkpoint of version {CHECKPOINT_VERSION}")
    return state
