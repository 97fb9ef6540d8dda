"""Iterations per second per stage: this trainer against the original GANimator.

Two baselines, both timed in this invocation on the same clip and thread count:
- the original's work pattern, on our networks: for every one of the 5 + 1 + 1 sub-steps it draws
  a new chain through all levels (frozen ones included) with autograd, scores real and fake with
  separate critic calls and two backward passes, and backpropagates generator losses through the
  whole chain;
- with `--original PATH` (a checkout of PeizhuoLi/ganimator that you supply), the original code
  itself, stage by stage (benchmarks/original_code.py). Its networks are the same as ours: the
  skeleton-aware convolutions on the same widths (tests/test_fidelity.py checks it).

A third column times our iteration under `util.precision=bf16` (autocast: convolutions and
matrix products in bfloat16), the same work in another arithmetic, against ours in fp32.

A second table counts each iteration's arithmetic (roofline.py) and sets it against the fp32
peak measured here: how busy the cores are, and the fastest any code doing the same
arithmetic could go.

    python benchmarks/train_speed.py [clip.bvh] [--iters 10] [--original ~/ganimator]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import original_code
import torch
from roofline import count_flops, peak_flops

from ganimator.config import load_config
from ganimator.dataset import MotionDataset
from ganimator.losses import generator_adversarial_loss, reconstruction_loss
from ganimator.step import train_iteration
from ganimator.trainer import Trainer, precision_autocast

def original_iteration(tr: Trainer, levels: list[int]) -> None:
    o, pyr, hi = tr.cfg.optim, tr.member.pyramid, levels[-1]
    pyr.requires_grad_(True)  # the original never turned gradients off for frozen stages
    for sub in range(o.critic_steps + 2):
        rec = sub == o.critic_steps + 1
        noises = [pyr.z_star[None] if l == 0 else 0.0 for l in range(hi + 1)] if rec else \
            [pyr.noise(l, 1, tr.member.clips[0].lengths[l], tr.member.rng) for l in range(hi + 1)]
        outs = pyr.run(range(hi + 1), tr.member.clips[0].lengths, None, noises)  # a new chain for every sub-step
        if sub < o.critic_steps:
            for l in levels:
                critic, fake = tr.member.critics[l], outs[l].detach()
                tr.member.opt_d[l].zero_grad()
                (0.5 * (critic(fake).mean() - critic(tr.member.clips[0].reals[l]).mean())).backward()
                alpha = torch.rand(1)
                interp = (alpha * tr.member.clips[0].reals[l] + (1 - alpha) * fake).requires_grad_(True)
                (grad,) = torch.autograd.grad(critic(interp).sum(), interp, create_graph=True)
                (o.lambda_gp * ((grad.norm(dim=1) - 1) ** 2).mean()).backward()
                tr.member.opt_d[l].step()
            continue
        # Generator losses of the group in one backward through the whole chain: a little less
        # work than the original's backward per level, so the measured ratio is conservative.
        tr.member.critics.requires_grad_(False)
        if rec:
            loss = sum(o.lambda_rec * reconstruction_loss(outs[l], tr.member.clips[0].reals[l]) for l in levels)
        else:
            loss = sum(generator_adversarial_loss(tr.member.critics[l], outs[l])
                       + o.lambda_consistency * tr.member.consistency(outs[l])[0] for l in levels)  # [1]: our floor loss
        for l in levels:
            tr.member.opt_g[l].zero_grad()
        loss.sum().backward()  # the losses hold one value per population member: here one
        for l in levels:
            tr.member.opt_g[l].step()
        tr.member.critics.requires_grad_(True)


def bf16_iteration(tr: Trainer, levels: list[int]) -> None:
    with precision_autocast(tr.device, "bf16"):  # as the trainer runs util.precision=bf16
        train_iteration([tr.member], levels)


def rate(step, iters: int) -> float:
    step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return iters / (time.perf_counter() - start)


def main() -> None:
    default = Path(os.environ.get("GANIMATOR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared/data/bvh"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", default=default / "Salsa-Dancing-6.bvh")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--original", help="a checkout of PeizhuoLi/ganimator, timed stage by stage in this run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        MotionDataset.from_bvh(args.clip).save(Path(tmp) / "clip.npz")
        cfg = load_config([f"npz_filename={tmp}/clip.npz", f"run_dir={tmp}/run", "progress=false"])
        tr = Trainer(cfg)
        print(f"{Path(args.clip).name}: levels {tr.member.clips[0].lengths}, {torch.get_num_threads()} threads, "
              f"{args.iters} iterations")
        rows = []
        for k in range(len(tr.stages)):
            tr.stage = k
            levels = tr.begin_stage()  # freezes the stages below, as training does
            ours = rate(lambda: train_iteration([tr.member], levels), args.iters)
            bf16 = rate(lambda: bf16_iteration(tr, levels), args.iters)
            work = count_flops(lambda: train_iteration([tr.member], levels))
            base = rate(lambda: original_iteration(tr, levels), max(2, args.iters // 2))
            base_work = count_flops(lambda: original_iteration(tr, levels))
            rows.append((levels, ours, base, work, base_work, bf16))
        original = (original_code.time_stages(args.original, args.clip, args.iters, torch.get_num_threads())
                    if args.original else [float("nan")] * len(rows))
        peak = peak_flops()

    print(f"{'stage':>5} {'levels':>8} {'ours it/s':>10} {'original-pattern it/s':>22} {'ratio':>6} "
          f"{'original code it/s':>19} {'ratio':>6} {'ours bf16 it/s':>15} {'vs fp32':>8}")
    for k, ((levels, ours, base, _, _, bf16), theirs) in enumerate(zip(rows, original)):
        print(f"{k + 1:>5} {str(levels):>8} {ours:>10.2f} {base:>22.2f} {ours / base:>5.2f}x "
              f"{theirs:>19.2f} {ours / theirs:>5.2f}x {bf16:>15.2f} {bf16 / ours:>7.2f}x")
    print(f"\nfp32 peak here (2048^2 matrix product): {peak / 1e9:.0f} GFLOP/s")
    print(f"{'stage':>5} {'GFLOP/it':>9} {'original pattern':>17} {'ours GFLOP/s':>13} {'of peak':>8} "
          f"{'ceiling it/s':>13} {'ceiling vs original code':>25}")
    for k, ((levels, ours, _, work, base_work, _), theirs) in enumerate(zip(rows, original)):
        print(f"{k + 1:>5} {work / 1e9:>9.1f} {base_work / 1e9:>17.1f} {ours * work / 1e9:>13.0f} "
              f"{ours * work / peak:>7.0%} {peak / work:>13.2f} {peak / work / theirs:>24.2f}x")


if __name__ == "__main__":
    main()
