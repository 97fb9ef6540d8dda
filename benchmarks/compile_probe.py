"""Would torch.compile pay? The finest level's generator and critic, forward and backward, eager
against compiled, in fp32 and under bf16 autocast, timed in this run on the same tensors.

    python benchmarks/compile_probe.py [clip.bvh] [--threads 2] [--iters 20]

Only the generator's and the critic's plain passes are compiled: the critic's gradient penalty
needs a double backward, which torch.compile does not support, so a training iteration could
compile at most these parts of it.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from ganimator.config import load_config
from ganimator.dataset import MotionDataset
from ganimator.trainer import Trainer


def ms_per_call(f, iters: int) -> float:
    f()
    start = time.perf_counter()
    for _ in range(iters):
        f()
    return (time.perf_counter() - start) / iters * 1000


def main() -> None:
    default = Path(os.environ.get("GANIMATOR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared/data/bvh"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", default=default / "Salsa-Dancing-6.bvh")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        MotionDataset.from_bvh(args.clip).save(Path(tmp) / "clip.npz")
        tr = Trainer(load_config([f"npz_filename={tmp}/clip.npz", f"run_dir={tmp}/run", "progress=false", "clearml=off"]))
    top = len(tr.member.critics) - 1
    generator, critic = tr.member.pyramid.generators[top], tr.member.critics[top]
    real = tr.member.clips[0].reals[top].repeat(2, 1, 1)  # two chains, as the critic steps draw them
    noise = torch.randn_like(real)

    def passes(g, c):
        return lambda: c(g(real, noise)).mean().backward()

    eager, compiled = passes(generator, critic), passes(torch.compile(generator), torch.compile(critic))
    start = time.perf_counter()
    compiled()
    print(f"{Path(args.clip).name}, level {top}, {args.threads} threads: compiling took {time.perf_counter() - start:.0f} s")
    for precision in ("fp32", "bf16"):
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            e, c = ms_per_call(eager, args.iters), ms_per_call(compiled, args.iters)
        print(f"{precision}: eager {e:.1f} ms, compiled {c:.1f} ms: compiled is {e / c:.2f}x eager's speed")


if __name__ == "__main__":
    main()
