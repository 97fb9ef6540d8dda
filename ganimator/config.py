"""Typed configuration: OmegaConf structured configs, so a typo or a wrong type is an error.

Sections follow the seed's split (data, model, optim, scheduling, util), plus tracking (ClearML, Rerun). On the command line a
key may be given by its bare name when it is unique (`lambda_rec=20`), or in full
(`optim.lambda_rec=20`); a YAML file passed as `config=run.yaml` uses the sections.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError


CLEARML_MODES = ("auto", "on", "offline", "off")
PRECISIONS = ("fp32", "bf16", "auto")


class ConfigError(UserError, ValueError):
    """A bad configuration key or value; the message names it."""


@dataclass
class DataConfig:
    npz_filename: str = MISSING  # written by ganimator-preprocess
    # The root block's units (MotionDataset.with_root_scale): 0, the original's raw height and
    # velocities; S, the height centred on the clip's mean and both in 1/S of the root's height
    # above the body's lowest joint. A measured deviation (README, "How long until published quality?").
    root_scale: float = 0.0


@dataclass
class ModelConfig:
    hidden_channels: list[int] = field(default_factory=lambda: [128, 256, 256])
    kernel_size: int = 5
    padding_mode: str = "reflect"
    # The original's default: convolutions masked to nearby nodes of the skeleton graph (joints,
    # contact labels, root); hidden widths are rounded up to a multiple of the node count.
    skeleton_aware: bool = True
    neighbour_distance: int = 2  # output nodes read input nodes within this many bones
    # The original trains its critics' masks (an nn.Parameter of the weight's shape, in its
    # critics' Adam): inside the neighbourhood pattern a critic weight is weight * mask, both
    # trained, one mask factor per kernel tap. false: fixed 0/1 masks. Generators' masks are fixed.
    train_critic_masks: bool = True
    group_size: int = 2  # levels trained together in a stage: 7 levels -> [[0,1],[2,3],[4,5],[6]]
    stages: list[list[int]] = field(default_factory=list)  # explicit stages; empty: groups of group_size
    noise_amp_scale: float = 1.0  # multiplies every level's noise amplitude
    # One value per stage; stages past the list use 1. Values past the clip's last stage must be 1.
    stage_noise_amp_scale: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    full_noise: bool = False  # independent noise per channel; the original shares it across channels
    # A trained run folder: this run's generators are given the root's trajectory (rotation and
    # position, the original's conditional generator) and trained on that run's random samples'
    # trajectories. Empty: the unconditional generator.
    trajectory_run: str = ""
    trajectory_levels: int = 7  # levels given the trajectory, coarsest first (the original's num_conditional_generator)


@dataclass
class OptimConfig:
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    lambda_rec: float = 50.0
    lambda_gp: float = 1.0
    lambda_consistency: float = 5.0
    # How far contact joints stand off the clip's floor, in body heights (losses.ContactConsistency:
    # below it, or above their band of rest while labelled planted), weighed into the generators'
    # adversarial step; 0: none, the original (which has no such term).
    lambda_floor: float = 0.0
    # How much more the joints jerk than the clip's own at that level (losses.ContactConsistency.jerk:
    # the excess ratio, 0 at or below the clip's), weighed into the generators' adversarial step;
    # 0: none, the original. A critic held to slope 1 barely sees a wobble of small amplitude that
    # jerk, a third difference, multiplies (README, "Motion that trembles").
    lambda_jerk: float = 0.0
    # The same excess of the reconstruction from z* (noise-free above the coarsest level, as samples
    # are evaluated), weighed into the generators' reconstruction step; 0: none, the original.
    lambda_jerk_rec: float = 0.0
    critic_steps: int = 5  # critic updates per iteration
    fake_pool_size: int = 50  # history of fakes the critic also sees (0: none)
    # Each stage's learning rates (ganimator/schedule.py): a linear warm-up over this share of the
    # stage, then a cosine down to lr_final times their value at its end. 0 and 1: constant, the original.
    lr_warmup: float = 0.0
    lr_final: float = 1.0
    # Validation, stage ends and exports use a running average of the generators' weights with
    # this decay per iteration (ganimator/member.py, Member.average); 0: the weights as trained, the original.
    ema: float = 0.0


@dataclass
class SchedulingConfig:
    train_data_iter: int = 15000  # iterations per stage (without a budget)
    # A run's whole cost, at most one of the two (0: none): total iterations, or minutes of training
    # time (validation left out). stage_weights split it, or train_data_iter x stages without a
    # budget, coarsest stage first; a list of another length is stretched over the stages
    # (ganimator/schedule.py). One budget given on the command line replaces a preset's other one.
    budget_iters: int = 0
    budget_minutes: float = 0.0
    stage_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    validate_every: int = 1000
    checkpoint_every: int = 1000
    # Validation samples the way the final evaluation draws them (the original's protocol: noise
    # at the coarsest level only, twice the clip's length), fewer of them: a sweep's trials are
    # scored by them. validation_length is in clips, validation_detail_noise scales the noise
    # above the coarsest level (1: every level's, as in training).
    validation_samples: int = 8
    validation_length: float = 2.0
    validation_detail_noise: float = 0.0


@dataclass
class UtilConfig:
    seed: int = 0
    device: str = "auto"  # auto: CUDA where torch sees it, else the CPU (resolve_device)
    run_dir: str = ""  # empty: runs/<npz name>-<date>-<time>
    experiment_name: str = ""  # defaults to the run folder's name
    resume: bool = False
    progress: bool = True
    num_threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    # Training arithmetic: fp32 (the original) or bf16 (autocast: matrix products and convolutions
    # in bfloat16, weights, optimiser state and losses in float32). Sampling and evaluation stay fp32.
    # auto: bf16 where the device computes it natively, else fp32 (resolve_precision).
    precision: str = "fp32"


@dataclass
class TrackingConfig:
    # ClearML: 'auto' is on when ClearML is configured (clearml.conf, CLEARML_CONFIG_FILE or CLEARML_API_HOST)
    # and off otherwise; 'offline' records a session to upload later; 'on' insists on a server.
    clearml: str = "auto"
    project: str = "GANimator"
    tags: list[str] = field(default_factory=list)  # added to the task's own (train, trial, retrain, ...)
    parent_task: str = ""  # the ClearML task id this run is a child of; sweeps set it
    artifact_samples: int = 3  # samples a finished run writes (samples/, review.rrd), attached to its ClearML task
    rerun: bool = False  # also record every validation's samples as skeletons in run_dir/validation*.rrd


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)
    util: UtilConfig = field(default_factory=UtilConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def section_keys() -> dict[str, str]:
    """bare key -> 'section.key' for every leaf of TrainConfig."""
    out = {}
    for section in fields(TrainConfig):
        for f in fields(section.default_factory):
            out[f.name] = f"{section.name}.{f.name}"
    return out


def text_keys() -> set[str]:
    """'section.key' of every str field."""
    return {f"{section.name}.{f.name}" for section in fields(TrainConfig)
            for f in fields(section.default_factory) if f.type == "str"}


def qualify(key: str) -> str:
    """'lambda_rec' -> 'optim.lambda_rec'; an unknown key is an error naming the nearest ones."""
    keys = section_keys()
    head = key.split(".")[0]
    if head in keys:
        return keys[head] + key[len(head):]
    if head in {f.name for f in fields(TrainConfig)} and key.split(".")[1:2] and key.split(".")[1] in keys:
        return key
    close = difflib.get_close_matches(head, list(keys) + list(keys.values()), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ConfigError(f"unknown config key {key!r}{hint}")


PRESETS = Path(__file__).with_name("presets")  # named deviations from the original's defaults, each saying what it reached


def preset_path(name: str) -> Path:
    """`preset=NAME`: ganimator/presets/NAME.yaml, a config file shipped with the package."""
    known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    if name not in known:
        raise ConfigError(f"unknown preset {name!r}; the presets are {', '.join(known)}")
    return PRESETS / f"{name}.yaml"


def load_config(overrides: list[str] = ()) -> DictConfig:
    """Defaults <- each `config=FILE.yaml` or `preset=NAME` <- `key=value` overrides, in that order."""
    cfg = OmegaConf.structured(TrainConfig)
    try:
        assignments = []
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} is not key=value")
            if key == "config":
                cfg = OmegaConf.merge(cfg, _load_yaml(value))
            elif key == "preset":
                cfg = OmegaConf.merge(cfg, _load_yaml(str(preset_path(value))))
            else:
                key = qualify(key)
                # Text keys take the text as typed: YAML would read `clearml=off` as False.
                # An interpolation stays text, to be resolved (or refused) with the whole config.
                parsed = value if key in text_keys() or "${" in value else OmegaConf.from_dotlist([f"_={value}"])["_"]
                assignments.append((key, parsed))
        # One by one, after every YAML: `update` also reaches list items (`stage_noise_amp_scale.1=2`).
        for key, value in assignments:
            OmegaConf.update(cfg, key, value, merge=False)
        _one_budget(cfg, {key for key, _ in assignments})
        refuse_resolvers(cfg)
        OmegaConf.resolve(cfg)  # plain ${key} interpolations; a broken or circular one fails here
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e)) from None
    validate(cfg)
    return cfg


BUDGETS = ("scheduling.budget_iters", "scheduling.budget_minutes")


def _one_budget(cfg: DictConfig, assigned: set[str]) -> None:
    """A budget given as key=value replaces the other kind that a preset or config file set
    (`preset=fast budget_iters=3000`); both given as key=value stays an error (validate)."""
    for given, other in (BUDGETS, BUDGETS[::-1]):
        if given in assigned and other not in assigned and OmegaConf.select(cfg, given):
            OmegaConf.update(cfg, other, 0, merge=False)


def npz_filename(cfg: DictConfig) -> str:
    if OmegaConf.is_missing(cfg.data, "npz_filename"):
        raise ConfigError("config key 'data.npz_filename' is required (the output of ganimator-preprocess)")
    return cfg.data.npz_filename


def _load_yaml(path: str) -> DictConfig:
    if not Path(path).is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {e.start})") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path!r} holds a {type(loaded).__name__.removesuffix('Config').lower()}, "
                          "not a mapping of keys")
    return loaded


# `${name:...}`: a resolver call (oc.env, oc.decode, ...), as opposed to a plain ${key} interpolation.
RESOLVER = re.compile(r"\$\{\s*[\w.\-]+\s*:")


def refuse_resolvers(cfg: DictConfig, what: str = "config key") -> None:
    """Resolved values are written to config.yaml and ClearML: ${oc.env:TOKEN} would publish the
    secret. So no resolver is accepted; the value itself is, and a plain ${key} reference."""
    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}.{i}")
        elif isinstance(node, str) and RESOLVER.search(node):
            raise ConfigError(f"{what} {path!r}: {node!r} calls a resolver; resolvers are refused because their "
                              "values (environment variables, for one) would be written to config.yaml and ClearML")
    walk(OmegaConf.to_container(cfg, resolve=False), "")


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    first = str(e).splitlines()[0]
    return f"config key {key!r}: {first}" if key else first


def validate(cfg: DictConfig) -> None:
    """Checks across fields that types alone cannot express."""
    m, o, s = cfg.model, cfg.optim, cfg.scheduling
    flat = [lvl for stage in m.stages for lvl in stage]
    if m.stages and (not all(m.stages) or flat != list(range(len(flat)))):
        raise ConfigError(f"config key 'model.stages': {list(map(list, m.stages))} must cover levels 0..N-1 in order")
    if m.stages:
        stage_noise_scales(m, len(m.stages))
    if s.budget_iters and s.budget_minutes:
        raise ConfigError("config keys 'scheduling.budget_iters' and 'scheduling.budget_minutes' are both set; "
                          "a run's budget is iterations or minutes, not both")
    if not 0 <= o.ema < 1:
        raise ConfigError(f"config key 'optim.ema' is a decay per iteration, 0 (none) to below 1; got {o.ema}")
    if not 0 <= o.lr_warmup <= 1:
        raise ConfigError(f"config key 'optim.lr_warmup' is a share of each stage, 0 to 1; got {o.lr_warmup}")
    positive = {"model.group_size": m.group_size, "optim.lr_g": o.lr_g, "optim.lr_d": o.lr_d, "model.kernel_size": m.kernel_size,
                "scheduling.validate_every": s.validate_every, "scheduling.checkpoint_every": s.checkpoint_every,
                "scheduling.validation_length": s.validation_length}
    nonneg = {"optim.lambda_rec": o.lambda_rec, "optim.lambda_gp": o.lambda_gp, "optim.critic_steps": o.critic_steps,
              "optim.lambda_consistency": o.lambda_consistency, "optim.fake_pool_size": o.fake_pool_size,
              "optim.lambda_floor": o.lambda_floor, "optim.lambda_jerk": o.lambda_jerk,
              "optim.lambda_jerk_rec": o.lambda_jerk_rec,
              "model.noise_amp_scale": m.noise_amp_scale, "scheduling.train_data_iter": s.train_data_iter,
              "scheduling.validation_samples": s.validation_samples, "scheduling.budget_iters": s.budget_iters,
              "scheduling.budget_minutes": s.budget_minutes, "optim.lr_final": o.lr_final,
              "scheduling.validation_detail_noise": s.validation_detail_noise, "data.root_scale": cfg.data.root_scale}
    for i, v in enumerate(m.hidden_channels):
        positive[f"model.hidden_channels.{i}"] = v
    nonneg["model.neighbour_distance"] = m.neighbour_distance
    nonneg["model.trajectory_levels"] = m.trajectory_levels
    for i, v in enumerate(m.stage_noise_amp_scale):
        nonneg[f"model.stage_noise_amp_scale.{i}"] = v
    for i, v in enumerate(s.stage_weights):
        positive[f"scheduling.stage_weights.{i}"] = v
    for key, v in positive.items():
        if not v > 0:
            raise ConfigError(f"config key {key!r} must be positive, got {v}")
    for key, v in nonneg.items():
        if not v >= 0:
            raise ConfigError(f"config key {key!r} must not be negative, got {v}")
    if m.kernel_size % 2 == 0:
        raise ConfigError(f"config key 'model.kernel_size' must be odd, got {m.kernel_size}")
    if cfg.tracking.clearml not in CLEARML_MODES:
        raise ConfigError(f"config key 'tracking.clearml' must be one of {', '.join(CLEARML_MODES)}, "
                          f"got {cfg.tracking.clearml!r}")
    if cfg.tracking.artifact_samples < 0:
        raise ConfigError(f"config key 'tracking.artifact_samples' must not be negative, got {cfg.tracking.artifact_samples}")
    if cfg.util.precision not in PRECISIONS:
        raise ConfigError(f"config key 'util.precision' must be one of {', '.join(PRECISIONS)}, got {cfg.util.precision!r}")
    if m.padding_mode not in ("reflect", "replicate", "zeros", "circular"):
        raise ConfigError(f"config key 'model.padding_mode': unknown mode {m.padding_mode!r}")
    if not 0 <= cfg.util.seed < 2**63:
        raise ConfigError(f"config key 'util.seed' must lie in [0, 2**63), got {cfg.util.seed}")
    try:
        device = torch.device(resolve_device(cfg.util.device))
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"config key 'util.device': {cfg.util.device!r} is not auto, cpu, cuda, cuda:N or mps")


def resolve_device(device: str) -> str:
    """`auto` is CUDA where this process sees a CUDA device, else the CPU; any other name as given.
    Resolved where the work runs (config.yaml keeps `auto`): a Ray trial given no GPU sees none."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 where `device` computes it natively (a CUDA GPU that supports it, a CPU with
    avx512_bf16 or AMX), else fp32 (elsewhere torch converts bfloat16 in software). Any other
    name as given. Resolved where the work runs, as the device is."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":  # torch's own probes of the CPU's instruction sets (private: absent, they say no)
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return "bf16" if any(getattr(torch.cpu, name, lambda: False)() for name in probes) else "fp32"
    return "fp32"


def check_device(device: str) -> None:
    """Where the work runs (a sweep's driver may have no GPU that its trials have)."""
    kind = torch.device(device)
    if kind.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'util.device' is {device!r}, but this torch sees no CUDA device")
    if kind.type == "cuda" and (kind.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"config key 'util.device' is {device!r}, but there are {torch.cuda.device_count()} CUDA devices")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"config key 'util.device' is {device!r}, but MPS is not available here")


def stage_levels(model: DictConfig, num_levels: int, source: str = "the data") -> list[list[int]]:
    """The levels of each stage: `model.stages` as given, or groups of `model.group_size` levels
    (the original's rule), for a pyramid of `num_levels`."""
    if model.stages:
        covered = sum(map(len, model.stages))
        if covered != num_levels:
            raise ConfigError(f"config key 'model.stages' covers {covered} levels but {source} has {num_levels}")
        return [list(s) for s in model.stages]
    size = model.group_size
    return [list(range(i, min(i + size, num_levels))) for i in range(0, num_levels, size)]


def stage_noise_scales(model: DictConfig, num_stages: int) -> list[float]:
    """`model.stage_noise_amp_scale` for `num_stages` stages: 1 past the end of the list; a value
    other than 1 for a stage the pyramid does not have is an error."""
    scales = list(model.stage_noise_amp_scale)
    if any(v != 1.0 for v in scales[num_stages:]):
        raise ConfigError(f"config key 'model.stage_noise_amp_scale' has {len(scales)} values "
                          f"for {num_stages} stages")
    return (scales + [1.0] * num_stages)[:num_stages]


def stage_weights(scheduling: DictConfig, num_stages: int) -> list[float]:
    """`scheduling.stage_weights` stretched over `num_stages` stages, coarsest to finest: the list
    is a curve from the first stage to the last, read by linear interpolation, so a split written
    for the usual 4 stages keeps its shape on a clip of 3 or 6 (a single weight: an even split)."""
    weights = list(scheduling.stage_weights)
    return np.interp(np.linspace(0, len(weights) - 1, num_stages), range(len(weights)), weights).tolist()


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
