"""Fused population training against separate processes: trial-iterations per second.

For each K, the same K trial configurations (different seeds, loss weights, learning rates and
noise scales) train one stage for `--iters` iterations, first fused in one process (all threads),
then as K concurrent processes (the threads shared out among them, at least one each), which is
how Ray Tune runs K trials on one machine. Both are timed from the first iteration after a
warm-up, so process start and network construction are left out. Prints trial-iterations per
second for both and their ratio.

    python benchmarks/population.py [clip.bvh] [--ks 1,2,4,8,16] [--stage 1] [--iters 3] [--device cpu]
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

from ganimator.config import load_config
from ganimator.population import Population
from ganimator.trainer import train_iteration

CORES = len(os.sched_getaffinity(0))


def member_overrides(k: int) -> list[str]:
    """Member k's searched values: spread like a sweep's first trials."""
    return [f"seed={k}", f"lambda_rec={50 * 1.3 ** (k % 5)}", f"lr_g={1e-4 * 1.2 ** (k % 4)}",
            f"lr_d={1e-4 * 1.2 ** (k % 3)}", f"noise_amp_scale={1 + 0.1 * (k % 6)}"]


def configs(npz: str, root: str, ks: range, device: str) -> list:
    return [load_config([f"npz_filename={npz}", f"run_dir={root}/m{k}", "progress=false", f"device={device}",
                         *member_overrides(k)]) for k in ks]


def time_stage(population: Population, stage: int, iters: int) -> float:
    """Seconds for `iters` fused iterations of `stage`, after one warm-up iteration."""
    members = population.members
    for m in members:  # progress=false: no bars to close
        m.stage = stage
        m.begin_stage()
    levels = members[0].stages[stage]
    train_iteration(members, levels)
    sync(members[0].device)
    start = time.perf_counter()
    for _ in range(iters):
        train_iteration(members, levels)
    sync(members[0].device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fused(npz: str, k: int, stage: int, iters: int, device: str) -> float:
    torch.set_num_threads(CORES)
    with tempfile.TemporaryDirectory() as root:
        return k * iters / time_stage(Population(configs(npz, root, range(k), device)), stage, iters)


def _separate_worker(npz: str, k: int, stage: int, iters: int, threads: int, device: str, barrier, out) -> None:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as root:
        population = Population(configs(npz, root, range(k, k + 1), device))
        barrier.wait()  # every process built and ready: time the training alone
        out.put(time_stage(population, stage, iters))


def separate(npz: str, k: int, stage: int, iters: int, device: str) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(k + 1), ctx.Queue()
    threads = max(1, CORES // k)
    procs = [ctx.Process(target=_separate_worker, args=(npz, i, stage, iters, threads, device, barrier, out))
             for i in range(k)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    for _ in procs:
        out.get()
    seconds = time.perf_counter() - start
    for p in procs:
        p.join()
    return k * iters / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", help="BVH clip (default: the procedural demo clip)")
    p.add_argument("--ks", default="1,2,4,8,16")
    p.add_argument("--stage", type=int, default=1, help="the stage timed, 1-based")
    p.add_argument("--iters", type=int, default=3)
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
        print(f"{'K':>3} {'fused trial-it/s':>17} {'separate trial-it/s':>20} {'ratio':>6} {'fused vs K=1':>13}")
        one = None
        for k in map(int, args.ks.split(",")):
            f = fused(npz, k, args.stage - 1, args.iters, args.device)
            one = one or f
            s = None if args.no_separate else separate(npz, k, args.stage - 1, args.iters, args.device)
            print(f"{k:>3} {f:>17.2f} {s if s is not None else float('nan'):>20.2f} "
                  f"{f / s if s else float('nan'):>5.2f}x {f / one:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
