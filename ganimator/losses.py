"""Losses: WGAN-GP for the critics; adversarial, reconstruction and contact consistency for G."""
from __future__ import annotations

import torch
import torch.nn as nn

from .features import FeatureLayout, decode
from .skeleton import Skeleton


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, fresh_fake: torch.Tensor,
                alpha: torch.Tensor, lambda_gp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, wasserstein term, gradient penalty). `fake` may come from the history pool; the
    penalty interpolates towards the fresh one, as the original does."""
    n = real.shape[0]
    scores = critic(torch.cat([real, fake]))  # one call for both; the penalty gets its own, since
    wasserstein = 0.5 * (scores[n:].mean() - scores[:n].mean())  # its double backward costs per sample
    interp = (alpha * real + (1 - alpha) * fresh_fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(interp).sum(), interp, create_graph=True)
    penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
    return wasserstein + lambda_gp * penalty, wasserstein, penalty


def generator_adversarial_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    return -critic(fake).mean()


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return (fake - real).abs().mean()


class ContactConsistency(nn.Module):
    """Penalises contact joints that move while the generated contact label says they are planted."""

    def __init__(self, skeleton: Skeleton, layout: FeatureLayout):
        super().__init__()
        self.skeleton, self.layout = skeleton, layout
        self.register_buffer("begin_xz", torch.zeros(2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.layout.num_contacts == 0:
            return features.new_zeros(())
        motion, contact = decode(features, self.layout, self.begin_xz)
        positions = motion.joint_positions(self.skeleton)[..., self.skeleton.contacts, :]
        speed = (positions[..., 1:, :, :] - positions[..., :-1, :, :]).norm(dim=-1)
        speed = torch.cat([torch.zeros_like(speed[..., :1, :]), speed], dim=-2)
        return (speed * torch.sigmoid((contact - 0.5) * 12)).mean()
