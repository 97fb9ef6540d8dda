"""One training iteration of a stage, fused over members (`member.Member`).

One iteration of a stage (its levels: groups of `model.group_size`, or `model.stages`) is, as in
the original, `critic_steps` critic updates with WGAN-GP, one adversarial generator update (with
the contact consistency loss) and one reconstruction update. Every random sub-step sees a fresh
output of the frozen stages below, as in the original; they are drawn for all sub-steps of an
iteration in one batched call without autograd, and their (deterministic) reconstruction once per
stage (`Member.begin_stage`). The original recomputed both, with autograd, for each of the seven
sub-steps.

Every network call runs all K members at once, side by side on the channel axis (grouped
convolutions): a lone run is a population of one.
"""
from __future__ import annotations

import torch

from .losses import critic_loss, generator_adversarial_loss, jerk_excess, reconstruction_loss
from .member import Member
from .networks import FusedPyramid, FusedStack


def train_iteration(members: list[Member], levels: list[int]) -> list[dict[str, float]]:
    """One iteration of the stage `levels` for each member, fused: every network call runs all K
    members at once, side by side on the channel axis (grouped convolutions).

    Each member draws noise from its own generator in the order a lone run does and steps only
    its own optimisers, so training K members together is training each alone. A lone trainer is
    a population of one. A multi-clip run mixes as the original's joint_train does: each of the
    seven sub-steps runs every clip in turn (critic step 1 on every clip, then step 2, ..., the
    adversarial step on every clip, the reconstruction step on every clip), and the critics
    share one fake pool a level; its losses are the clips' mean. Every clip's chains are drawn
    first: the generators do not change during the critic steps, and the adversarial and
    reconstruction steps recompute the trained levels, so the draws are the ones the original's
    order would see (taken from the generator in another order)."""
    clips = range(len(members[0].clips))
    pyramids = [FusedPyramid([m.clips[k].pyramid for m in members]) for k in clips]
    draws = [_draw(members, k, levels, pyramids[k]) for k in clips]
    clip_losses: list[list[dict[str, float]]] = [[{} for _ in members] for _ in clips]
    for step in range(max(m.optim.critic_steps for m in members)):
        for k in clips:
            _critic_step(members, k, levels, draws[k][1], step, clip_losses[k])
    for k in clips:
        base, _, noise, conds = draws[k]
        _adversarial_phase(members, k, levels, pyramids[k], base, noise, conds, clip_losses[k])
    for k in clips:
        _reconstruction_phase(members, k, levels, pyramids[k], clip_losses[k])
    losses: list[dict[str, float]] = [{} for _ in members]
    for per_clip in clip_losses:
        for total, part in zip(losses, per_clip):
            for key, value in part.items():
                total[key] = total.get(key, 0.0) + value / len(clips)
    return losses


def _per_member(members: list[Member], key: str) -> torch.Tensor:
    return torch.tensor([getattr(m.optim, key) for m in members], device=members[0].device)


def _draw(members: list[Member], clip: int, levels: list[int], pyramid: FusedPyramid):
    """Every random sub-step (n critic steps, then the adversarial one) draws a fresh chain, as the
    original does: the frozen levels run once for all of them, batched, without autograd. Rows of a
    member with fewer critic steps are zero padding, run but never used. Returns the frozen
    levels' output (None at stage 1), the critic steps' fakes at each level of the stage, and the
    noise of every level (members side by side), and a conditional run's conditions of every
    level (None otherwise): trajectories drawn from its trained run, one for each chain."""
    lo, top, lengths = levels[0], levels[-1], members[0].clips[clip].lengths
    steps = [m.optim.critic_steps for m in members]
    n = max(steps)

    def padded(z, n_m):  # rows n_m..n-1 are the padding of a member with fewer critic steps
        return torch.cat([z[:n_m], z.new_zeros(n - n_m, *z.shape[1:]), z[n_m:]])

    noise = [[padded(m.clips[clip].pyramid.noise(l, n_m + 1, lengths[l], m.rng), n_m) for l in range(top + 1)]
             for m, n_m in zip(members, steps)]
    noise = [torch.cat(level, dim=1) for level in zip(*noise)]
    conds = None
    with torch.no_grad():
        if members[0].trajectories is not None:
            conds = [[padded(c, n_m) for c in m.trajectories(lengths, n_m + 1, m.rng)[:top + 1]]
                     for m, n_m in zip(members, steps)]
            conds = [torch.cat(level, dim=1) for level in zip(*conds)]
        base = pyramid.run(range(lo), lengths, None, noise[:lo], conds and conds[:lo])[-1] if lo else None
        fakes = pyramid.run(range(lo, top + 1), lengths, base[:n] if lo else None, [z[:n] for z in noise[lo:]],
                            conds and [c[:n] for c in conds[lo:]])
    return base, fakes, noise, conds


def _critic_step(members: list[Member], clip: int, levels: list[int], fakes: list[torch.Tensor], k: int,
                 losses) -> None:
    """Critic step `k` (0-based) on `clip`: one WGAN-GP update of every level's critic, against
    the k-th drawn fakes; members with fewer critic steps leave the fused calls once theirs are done."""
    K, first = len(members), members[0]
    channels, steps = first.pyramid.channels, [m.optim.critic_steps for m in members]
    lambda_gp = _per_member(members, "lambda_gp")
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
        loss, w, gp = critic_loss(critic, first.clips[clip].reals[l], _side_by_side(shown), fresh,
                                  torch.stack(alphas), lambda_gp[active], len(active))
        total = total + loss.sum()
        for i, w_i, gp_i in zip(active, w.detach().tolist(), gp.detach().tolist()):
            losses[i][f"{l}/critic"], losses[i][f"{l}/gp"] = w_i, gp_i
    _step([members[i].opt_d[l] for i in active for l in levels], total)


def _side_by_side(fakes: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """The members' shown fakes on the channel axis; a list when a shared pool handed some member
    another clip's fake, of another length (critic_loss then scores each member's on its own)."""
    if len({f.shape[-1] for f in fakes}) == 1:
        return torch.cat(fakes, dim=1)
    return fakes


def _adversarial_phase(members: list[Member], clip: int, levels: list[int], pyramid: FusedPyramid, base, noise,
                       conds, losses) -> None:
    """One generator update against the critics, with the contact consistency loss (and the floor
    and jerk losses where weighed); each level learns only from its own losses, as in the original."""
    K, n = len(members), max(m.optim.critic_steps for m in members)
    lo, lengths = levels[0], members[0].clips[clip].lengths
    for m in members:
        m.critics.requires_grad_(False)
    lambda_consistency = _per_member(members, "lambda_consistency")
    lambda_floor, lambda_jerk = _per_member(members, "lambda_floor"), _per_member(members, "lambda_jerk")
    prev, total = base[n:] if lo else None, 0.0
    for l, z in zip(levels, (z[n:] for z in noise[lo:])):
        fake = pyramid.run(range(l, l + 1), lengths, prev, [z], conds and [conds[l][n:]])[0]
        adversarial = generator_adversarial_loss(FusedStack([m.critics[l].net for m in members]), fake, K)
        contact, below = members[0].consistency(fake, K)
        jerk = _jerk_beyond_clip(members, clip, l, fake, lambda_jerk)
        total = total + (adversarial + lambda_consistency * contact + lambda_floor * below + lambda_jerk * jerk).sum()
        terms = zip(*(x.detach().tolist() for x in (adversarial, contact, below, jerk)))
        for i, (a_i, c_i, f_i, j_i) in enumerate(terms):
            losses[i][f"{l}/adversarial"], losses[i][f"{l}/contact"] = a_i, c_i
            if members[i].optim.lambda_floor:
                losses[i][f"{l}/floor"] = f_i
            if members[i].optim.lambda_jerk:
                losses[i][f"{l}/jerk"] = j_i
        prev = fake.detach()
    _step([m.opt_g[l] for m in members for l in levels], total)
    for m in members:
        m.critics.requires_grad_(True)


def _reconstruction_phase(members: list[Member], clip: int, levels: list[int], pyramid: FusedPyramid,
                          losses) -> None:
    """One generator update towards the clip from z*, on top of the frozen levels' reconstruction
    (with the jerk loss where weighed: the path evaluated samples take, noise-free above level 0)."""
    K, first = len(members), members[0].clips[clip]
    lambda_rec, lambda_jerk = _per_member(members, "lambda_rec"), _per_member(members, "lambda_jerk_rec")
    prev, total = torch.cat([m.clips[clip].frozen_rec for m in members], dim=1) if levels[0] else None, 0.0
    for l in levels:
        given = members[0].given([first.reals[l].repeat(1, K, 1)])
        rec = pyramid.reconstruct(first.lengths, range(l, l + 1), prev, given)[0]
        loss = reconstruction_loss(rec, first.reals[l], K)
        jerk = _jerk_beyond_clip(members, clip, l, rec, lambda_jerk)
        total = total + (lambda_rec * loss + lambda_jerk * jerk).sum()
        for i, (r_i, j_i) in enumerate(zip(loss.detach().tolist(), jerk.detach().tolist())):
            losses[i][f"{l}/reconstruction"] = r_i
            if members[i].optim.lambda_jerk_rec:
                losses[i][f"{l}/jerk_rec"] = j_i
        prev = rec.detach()
    _step([m.opt_g[l] for m in members for l in levels], total)


def _jerk_beyond_clip(members: list[Member], clip: int, level: int, motion: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Each member's jerk of `motion` beyond the clip's own at `level` (losses.jerk_excess), (K,):
    zeros, without the forward kinematics it costs, where no member weighs it."""
    if not weights.any():
        return torch.zeros(len(members), device=motion.device)
    return jerk_excess(members[0].consistency.jerk(motion, len(members)), members[0].clips[clip].jerks[level])


def _step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()
