"""Losses: WGAN-GP for the critics; adversarial, reconstruction, contact consistency and (not in
the original, off by default) floor penetration and jerk beyond the clip's for G.

Each takes the tensors of `members` fused runs side by side on the channel axis, (B, K*C, T),
and returns one value per member, (K,): a population's members never share a loss term.
"""
from __future__ import annotations

import torch

from .features import FeatureLayout, decode
from .naturalness import jerk
from .networks import FusedStack
from .skeleton import Skeleton


def per_member(x: torch.Tensor, members: int) -> torch.Tensor:
    """(B, K*C, T) -> (K,): the mean of each member's block."""
    return x.reshape(x.shape[0], members, -1).mean(dim=(0, 2))


def critic_loss(critic: FusedStack, real: torch.Tensor, fake: torch.Tensor | list[torch.Tensor],
                fresh_fake: torch.Tensor, alpha: torch.Tensor, lambda_gp: torch.Tensor,
                members: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, wasserstein term, gradient penalty), each (K,). `real` is the clip's level, (1, C, T);
    `fake` may come from the history pool; the penalty interpolates towards the fresh one, as the
    original does. `alpha` and `lambda_gp` hold one value per member. A multi-clip run's shared
    pool may hand back another clip's fake, of another length: then `fake` is scored apart from
    `real` (as the original always scores them), or, a list of the members' fakes of different
    lengths, each by its member's critic."""
    real = real.repeat(1, members, 1)
    n = real.shape[0]
    if torch.is_tensor(fake) and fake.shape[-1] == real.shape[-1]:
        # one call for both; the penalty gets its own, since its double backward costs per sample
        scores = critic(torch.cat([real, fake]))
        real_scores, fake_scores = per_member(scores[:n], members), per_member(scores[n:], members)
    else:
        real_scores = per_member(critic(real), members)
        fake_scores = per_member(critic(fake), members) if torch.is_tensor(fake) else \
            torch.cat([per_member(FusedStack([stack])(f), 1) for stack, f in zip(critic.stacks, fake)])
    wasserstein = 0.5 * (fake_scores - real_scores)
    a = alpha.repeat_interleave(real.shape[1] // members)[None, :, None]
    interp = (a * real + (1 - a) * fresh_fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(interp).sum(), interp, create_graph=True)
    norms = grad.reshape(grad.shape[0], members, -1, grad.shape[-1]).norm(dim=2)  # per member and frame
    penalty = ((norms - 1) ** 2).mean(dim=(0, 2))
    return wasserstein + lambda_gp * penalty, wasserstein, penalty


def generator_adversarial_loss(critic, fake: torch.Tensor, members: int = 1) -> torch.Tensor:
    return -per_member(critic(fake), members)


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor, members: int = 1) -> torch.Tensor:
    return per_member((fake - real.repeat(1, members, 1)).abs(), members)


class ContactConsistency(torch.nn.Module):
    """Penalises contact joints that move while the generated contact label says they are planted
    (the original's loss) and, second, that stand off the clip's floor (not in the original:
    `optim.lambda_floor` weighs it, 0 by default): how deep they go below it, and how far above
    their contact band of rest they are while labelled planted, in units of the body's height.
    Both sides, because a loss on depth alone is met by feet that hover (ground contact 0.28 of
    the clip's on proud, README). One forward pass of the skeleton serves both terms.
    `ground` and `body`: the clip's (MotionDataset.ground_and_body)."""

    def __init__(self, skeleton: Skeleton, layout: FeatureLayout, ground, body: float):
        super().__init__()
        self.skeleton, self.layout, self.body = skeleton, layout, body
        self.register_buffer("begin_xz", torch.zeros(2))
        self.register_buffer("floor", torch.as_tensor(ground.floor, dtype=torch.float32))
        # the height each contact joint may stand at while planted: its rest plus its band
        self.register_buffer("stand", (ground.rest + ground.band).float())

    def forward(self, features: torch.Tensor, members: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(contact consistency, floor penetration), each (K,)."""
        if self.layout.num_contacts == 0:
            return features.new_zeros(members), features.new_zeros(members)
        b, _, t = features.shape
        # Speeds per frame: a frame is the time unit (fps 1). Heights are absolute: the root's is a channel.
        motion, contact = decode(features.reshape(b * members, -1, t), self.layout, self.begin_xz, fps=1.0)
        positions = motion.joint_positions(self.skeleton)[..., self.skeleton.contacts, :]
        speed = (positions[..., 1:, :, :] - positions[..., :-1, :, :]).norm(dim=-1)
        speed = torch.cat([torch.zeros_like(speed[..., :1, :]), speed], dim=-2)
        planted = torch.sigmoid((contact - 0.5) * 12)
        consistency = (speed * planted).reshape(b, members, -1).mean(dim=(0, 2))
        height = positions[..., 1] - self.floor  # (B*K, T, contacts)
        off = (-height).clamp(min=0) + planted * (height - self.stand).clamp(min=0)
        return consistency, (off / self.body).reshape(b, members, -1).mean(dim=(0, 2))

    def jerk(self, features: torch.Tensor, members: int = 1) -> torch.Tensor:
        """The joints' mean jerk, (K,): the norm of their positions' third difference, in body
        heights per frame cubed: naturalness.jerk, which jitter divides, at a frame a second. Not in
        bfloat16 under autocast: a third difference of positions good to 3 digits is their rounding."""
        b, _, t = features.shape
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        with torch.autocast(features.device.type, enabled=False):
            motion, _ = decode(features.reshape(b * members, -1, t), self.layout, self.begin_xz, fps=1.0)
            per_sample = jerk(motion.joint_positions(self.skeleton), fps=1.0) / self.body
        return per_sample.reshape(b, members).mean(dim=0)


def jerk_excess(jerk: torch.Tensor, clip_jerk: torch.Tensor) -> torch.Tensor:
    """How much more the samples jerk than the clip, as a share of the clip's jerk: 0 at or below
    it (motion smoother than the clip's is the critic's to judge, not this loss's). A clip held
    still is taken to jerk a millionth of a body height per frame cubed, not 0."""
    return (jerk / clip_jerk.clamp(min=1e-6) - 1).clamp(min=0)
