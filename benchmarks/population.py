"""Fused population training against separate processes: trial-iterations per second.

For each K, the same K trial configurations (different seeds, loss weights, learning rates and
noise scales) train one stage for `--iters` iterations: fused, in one process with all threads,
and as K concurrent processes with the threads shared out among them (at least one each), which
is how Ray Tune runs K trials on one machine. Both run in fresh processes started the same way,
are timed from when every process has built its trainers and done one warm-up iteration until
the last one finishes, and keep the best of `--repeats` tries. So K=1 is the same work twice, and its ratio
shows what the harness itself adds. Prints trial-iterations per second for both and their
ratio, then the arithmetic of a trial-iteration (roofline.py) against the device's fp32 peak:
the ceiling is the most that fusing, or any code doing the same arithmetic, could gain over the
separate processes.

    python benchmarks/population.py [clip.bvh] [--ks 1,2,4,8,16] [--stage 1] [--iters 3] [--repeats 3]
                                    [--device cpu] [--no-separate]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from roofline import count_flops, peak_flops, sync

from ganimator.config import load_config
from ganimator.population import Population
from ganimator.step import train_iteration

CORES = len(os.sched_getaffinity(0))


def member_overrides(k: int) -> list[str]:
    """Member k's searched values: spread like a sweep's first trials."""
    return [f"seed={k}", f"lambda_rec={50 * 1.3 ** (k % 5)}", f"lr_g={1e-4 * 1.2 ** (k % 4)}",
            f"lr_d={1e-4 * 1.2 ** (k % 3)}", f"noise_amp_scale={1 + 0.1 * (k % 6)}"]


def configs(npz: str, root: str, ks: range, device: str) -> list:
    return [load_config([f"npz_filename={npz}", f"run_dir={root}/m{k}", "progress=false", f"device={device}",
                         *member_overrides(k)]) for k in ks]


def start_stage(trainers: list, stage: int) -> list[int]:
    for m in trainers:  # progress=false: no bars to close
        m.stage = stage
        m.begin_stage()
    return trainers[0].stages[stage]


def trial_flops(npz: str, stage: int, device: str) -> int:
    """The arithmetic of one trial-iteration, counted on a lone trainer: a fused member does the
    same, and torch's formulas count a grouped convolution's weight gradient as ungrouped."""
    with tempfile.TemporaryDirectory() as root:
        trainers = Population(configs(npz, root, range(1), device)).members
        levels = start_stage(trainers, stage)
        return count_flops(lambda: train_iteration([t.member for t in trainers], levels))


def _worker(npz: str, members: range, stage: int, iters: int, threads: int, device: str, barrier, done) -> None:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as root:
        trainers = Population(configs(npz, root, members, device)).members
        levels = start_stage(trainers, stage)
        members = [t.member for t in trainers]
        train_iteration(members, levels)  # warm-up: first allocations and kernel choices
        sync(trainers[0].device)
        barrier.wait()  # every process built and warmed up: the clock runs on training alone
        for _ in range(iters):
            train_iteration(members, levels)
        sync(trainers[0].device)
        done.put(None)


def trial_rate(npz: str, groups: list[range], stage: int, iters: int, device: str) -> float:
    """Trial-iterations per second of one process per group of members, all at once."""
    ctx = mp.get_context("spawn")
    barrier, done = ctx.Barrier(len(groups) + 1), ctx.Queue()
    threads = max(1, CORES // len(groups))
    procs = [ctx.Process(target=_worker, args=(npz, g, stage, iters, threads, device, barrier, done))
             for g in groups]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    for _ in procs:
        done.get()
    seconds = time.perf_counter() - start
    for p in procs:
        p.join()
    return sum(map(len, groups)) * iters / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", help="BVH clip (default: the procedural demo clip)")
    p.add_argument("--ks", default="1,2,4,8,16")
    p.add_argument("--stage", type=int, default=1, help="the stage timed, 1-based")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="tries of each measurement; the best is kept")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-separate", action="store_true", help="fused only (e.g. a GPU without room for K processes)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(args.clip).resolve() if args.clip else Path(tmp) / "demo.bvh"
        if not args.clip:
            subprocess.run(["ganimator-procedural", str(clip)], check=True, stdout=subprocess.DEVNULL)
        npz = f"{tmp}/clip.npz"
        subprocess.run(["ganimator-preprocess", str(clip), npz], check=True, stdout=subprocess.DEVNULL)
        print(f"{clip.name}, stage {args.stage}, {args.iters} iterations, {CORES} cores, {args.device}")
        peak, work = peak_flops(args.device), trial_flops(npz, args.stage - 1, args.device)
        print(f"fp32 peak here (2048^2 matrix product): {peak / 1e9:.0f} GFLOP/s")
        print(f"{'K':>3} {'fused trial-it/s':>17} {'separate trial-it/s':>20} {'ratio':>6} {'fused vs K=1':>13} "
              f"{'GFLOP/trial-it':>15} {'separate of peak':>17} {'ceiling':>8}")
        best = lambda groups: max(trial_rate(npz, groups, args.stage - 1, args.iters, args.device)  # noqa: E731
                                  for _ in range(args.repeats))
        one = None
        for k in map(int, args.ks.split(",")):
            f = best([range(k)])
            one = one or f
            s = None if args.no_separate else best([range(i, i + 1) for i in range(k)])
            nan = float("nan")
            print(f"{k:>3} {f:>17.2f} {s if s else nan:>20.2f} {f / s if s else nan:>5.2f}x {f / one:>12.2f}x "
                  f"{work / 1e9:>15.2f} {s * work / peak if s else nan:>17.0%} "
                  f"{peak / (s * work) if s else nan:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
