"""Per-level generators and critics, and the pyramid that chains the generators."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError, stage_levels, stage_noise_scales
from .features import FeatureLayout
from .pyramid import resample
from .skeleton import Skeleton


class SkeletonConv1d(nn.Conv1d):
    """The original's skeleton-aware convolution (its models/skeleton.py SkeletonConv).

    Every node of the skeleton graph owns an equal block of input and output channels, and
    output node i only reads the input nodes `neighbours[i]`: a dense weight times a block mask.
    The weight stays dense with zeros outside the mask, as in the original, so a checkpoint
    holds the original's tensors; the mask also zeroes their gradients, so they stay zero.

    With `train_mask` the mask is a parameter, as in the original's critics: its SkeletonConv.mask
    is an nn.Parameter, so the critic's Adam (over disc.parameters()) trains it once
    disc_requires_grad_(True) switches its gradient on. The effective weight weight * mask then
    has two free factors per kernel tap inside the pattern; outside it both stay 0 (the mask's
    gradient there is the weight's, 0, and Adam moves a parameter with zero gradients nowhere).
    The original's generators never train theirs: train_mask=False keeps it a fixed buffer.
    """

    def __init__(self, neighbours: list[list[int]], in_channels: int, out_channels: int, train_mask: bool = False,
                 **kwargs):
        nodes = len(neighbours)
        if in_channels % nodes or out_channels % nodes:
            raise ValueError(f"skeleton-aware convolution: {in_channels} -> {out_channels} channels "
                             f"do not split evenly among {nodes} nodes")
        super().__init__(in_channels, out_channels, **kwargs)
        c_in, c_out = in_channels // nodes, out_channels // nodes
        mask = torch.zeros(out_channels, in_channels, 1)
        for i, near in enumerate(neighbours):
            for k in near:
                mask[i * c_out:(i + 1) * c_out, k * c_in:(k + 1) * c_in] = 1
        if train_mask:  # one factor per kernel tap, as the original's mask has the weight's shape
            mask = mask.expand_as(self.weight).clone()
            self.mask = nn.Parameter(mask)
            self.register_buffer("pattern", mask.clone(), persistent=False)  # what the mask starts from
        else:
            self.register_buffer("mask", mask, persistent=False)  # derived from the skeleton, not state
        self.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint written while masks were fixed buffers has no trained mask: it starts from
        # the skeleton's 0/1 pattern, the value the original's masks start from too.
        if isinstance(self.mask, nn.Parameter) and prefix + "mask" not in state_dict:
            state_dict[prefix + "mask"] = self.pattern.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset_parameters(self) -> None:
        if not hasattr(self, "mask"):  # nn.Conv1d.__init__ calls this before the mask exists
            return super().reset_parameters()
        # The original initialises each node's block on its own, kaiming-uniform (a=sqrt(5)) with
        # the block's fan-in: weights and bias uniform in +-1/sqrt(fan_in). A dense init would
        # spread the fan-in over all nodes and start about 2.2x smaller.
        bound = (self.mask[..., :1].sum(dim=(1, 2)) * self.kernel_size[0]).rsqrt()
        with torch.no_grad():  # (a trained mask is all 0/1 here: reset_parameters runs at construction)
            self.weight.uniform_(-1, 1).mul_(bound[:, None, None] * self.mask)
            self.bias.uniform_(-1, 1).mul_(bound)

    @property
    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight, self.bias)


class ConvStack(nn.Sequential):
    """1-D convolutions over time with LeakyReLU(0.2) between them, none after the last.

    With `neighbours` every layer is skeleton-aware, except a last layer of one channel (the
    critic's score), which is plain as in the original; `train_masks` makes their masks parameters.
    """

    def __init__(self, channels: list[int], kernel_size: int, padding_mode: str,
                 neighbours: list[list[int]] | None = None, train_masks: bool = False):
        layers = []
        for k, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            conv_args = dict(kernel_size=kernel_size, padding=kernel_size // 2, padding_mode=padding_mode)
            if neighbours is not None and c_out > 1:
                layers.append(SkeletonConv1d(neighbours, c_in, c_out, train_mask=train_masks, **conv_args))
            else:
                layers.append(nn.Conv1d(c_in, c_out, **conv_args))
            if k < len(channels) - 2:
                layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


class Generator(nn.Module):
    """Refines the upsampled coarser level: output = base + net(base + noise)."""

    def __init__(self, stack: ConvStack):
        super().__init__()
        self.net = stack

    def forward(self, base: torch.Tensor, noise: torch.Tensor | float = 0.0) -> torch.Tensor:
        return base + self.net(base + noise)


class Critic(nn.Module):
    """WGAN critic: one score per frame window (a patch critic over time)."""

    def __init__(self, stack: ConvStack):
        super().__init__()
        self.net = stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def channel_widths(model_cfg, layout: FeatureLayout, out_channels: int) -> list[int]:
    """[features, *hidden, out]. Skeleton-aware widths are rounded up to a multiple of the node
    count, as the original does (Mixamo: 128, 256 -> 145, 261 for 29 nodes)."""
    hidden = list(model_cfg.hidden_channels)
    if model_cfg.skeleton_aware:
        nodes = layout.num_nodes
        hidden = [-(-c // nodes) * nodes for c in hidden]
    return [layout.channels, *hidden, out_channels]


def build_stacks(model_cfg, layout: FeatureLayout, skeleton: Skeleton, out_channels: int,
                 train_masks: bool = False) -> ConvStack:
    channels = channel_widths(model_cfg, layout, out_channels)
    neighbours = skeleton.node_neighbours(model_cfg.neighbour_distance) if model_cfg.skeleton_aware else None
    return ConvStack(channels, model_cfg.kernel_size, model_cfg.padding_mode, neighbours, train_masks)


class FusedStack:
    """K members' ConvStacks run as one grouped convolution per layer over (B, K*C, T).

    Each member's weights stay its own tensors (so its optimiser, checkpoint and export are those
    of a single run); they are concatenated for each call, and gradients flow back to each.
    Groups never mix channels, so members never influence each other.
    """

    def __init__(self, stacks: list[ConvStack]):
        self.stacks = stacks

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.stacks) == 1:
            return self.stacks[0](x)
        for layers in zip(*self.stacks):
            first = layers[0]
            if not isinstance(first, nn.Conv1d):
                x = first(x)
                continue
            weight = torch.cat([getattr(c, "effective_weight", c.weight) for c in layers])
            bias = torch.cat([c.bias for c in layers])
            padding = first.padding
            if first.padding_mode != "zeros":
                x, padding = F.pad(x, first._reversed_padding_repeated_twice, mode=first.padding_mode), 0
            x = F.conv1d(x, weight, bias, first.stride, padding, first.dilation, groups=len(layers))
        return x


class FusedGenerator:
    def __init__(self, generators: list[Generator]):
        self.net = FusedStack([g.net for g in generators])

    def __call__(self, base: torch.Tensor, noise: torch.Tensor | float = 0.0) -> torch.Tensor:
        return base + self.net(base + noise)


class GeneratorPyramid(nn.Module):
    """The chain of generators, coarsest first, with each level's noise amplitude and z*.

    Random mode feeds level 0 scaled noise and each level above its own scaled noise; reconstruction
    mode feeds level 0 the fixed z* and no noise above, and reproduces the training clip.

    A conditional pyramid (the original's conditional generator) is given some channels, the root's
    trajectory, at its first `condition_levels` levels: each of their generators reads the
    condition there in place of its noisy input, and outputs it unchanged, so the motion made
    around them follows the trajectory; the levels above refine it as any level does.
    """

    def __init__(self, generators: list[Generator], amplitudes: torch.Tensor, z_star: torch.Tensor,
                 full_noise: bool = False, condition: list[int] = (), condition_levels: int = 0):
        super().__init__()
        self.generators = nn.ModuleList(generators)
        self.register_buffer("amplitudes", amplitudes.clone())
        self.register_buffer("z_star", z_star.clone())
        self.full_noise = full_noise
        self.condition = list(condition)  # the channels given: derived from the config, not state
        self.condition_levels = condition_levels if self.condition else 0  # the levels given them, coarsest first
        mask = torch.zeros(z_star.shape[0], 1, dtype=torch.bool)
        mask[self.condition] = True
        self.register_buffer("condition_mask", mask, persistent=False)

    @property
    def channels(self) -> int:
        return self.z_star.shape[0]

    def noise(self, level: int, batch: int, length: int, rng: torch.Generator | None = None,
              scale: float = 1.0) -> torch.Tensor:
        # The original shares one noise value across all channels of a frame unless full_noise.
        shape = (batch, self.channels if self.full_noise else 1, length)
        z = torch.randn(shape, generator=rng, device=self.z_star.device, dtype=self.z_star.dtype)
        return (z * (self.amplitudes[level] * scale)).expand(batch, self.channels, length)

    def run(self, levels: range, lengths: list[int], prev: torch.Tensor | None, noises: list,
            conds: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Outputs of `levels` in order; `prev` is the output of the level below (None at level 0);
        a conditional pyramid needs `conds`, each level's condition (B, C, length)."""
        outputs = []
        for k, (level, noise) in enumerate(zip(levels, noises)):
            if prev is None:
                base = torch.zeros(noise.shape[0] if torch.is_tensor(noise) else 1, self.channels, lengths[level],
                                   device=self.z_star.device)
            else:
                base = resample(prev, lengths[level])
            if conds is None or level >= self.condition_levels:
                prev = self.generators[level](base, noise)
            else:  # base + noise is the condition on its channels, and so is the output
                noise = torch.where(self.condition_mask, conds[k] - base, noise)
                prev = torch.where(self.condition_mask, conds[k], self.generators[level](base, noise))
            outputs.append(prev)
        return outputs

    def sample_levels(self, lengths: list[int], batch: int = 1, rng: torch.Generator | None = None,
                      levels: range | None = None, prev: torch.Tensor | None = None,
                      detail_noise: float = 1.0, noise_scale: float = 1.0,
                      conds: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Random motion features at each of `levels`; detail_noise scales noise above level 0,
        noise_scale every level's (above 1: amplified noise, a known-bad case for the metrics)."""
        levels = levels if levels is not None else range(len(lengths))
        noises = [self.noise(l, batch, lengths[l], rng, noise_scale * (1.0 if l == 0 else detail_noise)) for l in levels]
        return self.run(levels, lengths, prev, noises, conds)

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """Random motion features at the last of the levels (`sample_levels`' arguments)."""
        return self.sample_levels(*args, **kwargs)[-1]

    def reconstruct(self, lengths: list[int], levels: range | None = None,
                    prev: torch.Tensor | None = None, conds: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        levels = levels if levels is not None else range(len(lengths))
        noises = [self.z_star[None] if l == 0 else 0.0 for l in levels]
        return self.run(levels, lengths, prev, noises, conds)


class FusedPyramid:
    """K members' pyramids as one over (B, K*C, T): member k owns channels k*C .. (k+1)*C."""

    def __init__(self, pyramids: list[GeneratorPyramid]):
        self.members = pyramids
        self.generators = [FusedGenerator([p.generators[l] for p in pyramids]) for l in range(len(pyramids[0].generators))]
        self.z_star = torch.cat([p.z_star for p in pyramids])
        self.channels = self.z_star.shape[0]
        self.condition_mask = torch.cat([p.condition_mask for p in pyramids])
        self.condition_levels = pyramids[0].condition_levels

    run = GeneratorPyramid.run
    reconstruct = GeneratorPyramid.reconstruct


# Bytes training keeps per network weight: the weight and its skeleton mask (trained in critics,
# model.train_critic_masks), each with its gradient and Adam's two moments.
TRAIN_BYTES_PER_WEIGHT = 8 * 4
# Bytes one iteration's activations take per channel and frame of the networks' layers at the
# longest level: generator and critic, forward, backward and the gradient penalty's double backward.
ACTIVATION_BYTES = 4 * 24


def training_bytes(cfg, dataset) -> int:
    """About how much memory training `cfg`'s networks on `dataset` takes: the weights and their
    optimiser state at every level, and one iteration's activations."""
    longest = max(c.level_lengths[-1] for c in dataset.clips)
    total = 0
    for out in (dataset.layout.channels, 1):  # a generator and a critic at each level
        widths = channel_widths(cfg.model, dataset.layout, out)
        weights = sum(a * b * cfg.model.kernel_size + b for a, b in zip(widths, widths[1:]))
        total += dataset.num_levels * weights * TRAIN_BYTES_PER_WEIGHT + sum(widths) * longest * ACTIVATION_BYTES
    return total


def check_kernel(cfg, dataset) -> None:
    coarsest, k = min(c.level_lengths[0] for c in dataset.clips), cfg.model.kernel_size
    if k // 2 >= coarsest:  # padding reads kernel_size // 2 frames each side
        raise ConfigError(f"config key 'model.kernel_size' is {k}: it needs a coarsest level of more than "
                          f"{k // 2} frames, and {dataset.source or 'the data'}'s has {coarsest}")


def check_fits(cfg, dataset, device: torch.device) -> None:
    """Refuse networks the device cannot hold before allocating them, naming the keys that size them."""
    import psutil

    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = psutil.virtual_memory().available
    need = training_bytes(cfg, dataset)
    if need > 0.8 * free:
        m = cfg.model
        raise ConfigError(f"config keys 'model.hidden_channels' {list(m.hidden_channels)} and 'model.kernel_size' "
                          f"{m.kernel_size}: training these networks on {dataset.source or 'the data'} needs about "
                          f"{need / 2**30:.1f} GiB, and {device.type} has {free / 2**30:.1f} GiB free")


def build_models(cfg, dataset) -> tuple[GeneratorPyramid, nn.ModuleList]:
    """Generators and critics for every level of `dataset`, initialised from `cfg.util.seed`
    without touching the global RNG; each stage's levels get its noise amplitude scale. The
    pyramid carries the first clip's amplitudes and z* (`clip_pyramids` gives every clip's)."""
    check_kernel(cfg, dataset)
    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.util.seed)
        gens = [Generator(build_stacks(m, dataset.layout, dataset.skeleton, dataset.layout.channels))
                for _ in range(dataset.num_levels)]
        critics = [Critic(build_stacks(m, dataset.layout, dataset.skeleton, 1, m.train_critic_masks))
                   for _ in range(dataset.num_levels)]
    condition = dataset.layout.trajectory if m.trajectory_run else ()
    first = dataset.clips[0]
    pyramid = GeneratorPyramid(gens, first.noise_amplitudes * noise_scales(cfg, dataset), first.z_star,
                               m.full_noise, condition, m.trajectory_levels)
    return pyramid, nn.ModuleList(critics)


def noise_scales(cfg, dataset) -> torch.Tensor:
    """Each level's multiplier of the clip's noise amplitude: `noise_amp_scale` times its stage's."""
    m = cfg.model
    stages = stage_levels(m, dataset.num_levels, dataset.source or "the data")
    return torch.tensor([m.noise_amp_scale * scale for stage, scale in zip(stages, stage_noise_scales(m, len(stages)))
                         for _ in stage])


def clip_pyramids(cfg, dataset, pyramid: GeneratorPyramid) -> list[GeneratorPyramid]:
    """`pyramid` for each clip of a multi-clip dataset: the same generators, each clip's own noise
    amplitudes and z* (the first clip's pyramid is `pyramid` itself)."""
    scales = noise_scales(cfg, dataset)
    device = pyramid.z_star.device
    return [pyramid] + [GeneratorPyramid(pyramid.generators, (c.noise_amplitudes * scales).to(device),
                                         c.z_star.to(device), pyramid.full_noise, pyramid.condition,
                                         pyramid.condition_levels).to(device)
                        for c in dataset.clips[1:]]
